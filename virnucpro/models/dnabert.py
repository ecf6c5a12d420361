"""DNABERT-2 / DNABERT-S nucleotide encoder, implemented from the architecture's description.

DNABERT-S (HF ``zhihan1996/DNABERT-S``) is a DNABERT-2-117M network: a MosaicBERT-style encoder.
The original ships its model code in the checkpoint and needs ``trust_remote_code`` (and, when Triton
is installed, a Triton attention kernel that fails on current Triton). This module re-implements the
network in plain PyTorch so the same weights load without remote code or network access:

* embeddings: word + token-type (always type 0), LayerNorm; no position embeddings.
* per layer, post-LayerNorm:
  ``x = LN(x + dense(attention(Wqkv(x))))`` then ``x = LN(x + wo(gelu(g[:, :I]) * g[:, I:]))``
  with ``g = gated_layers(x)`` (no bias, 2*I outputs; the FIRST half is passed through GELU and
  multiplies the second half) and exact (erf) GELU.
* attention: fused QKV projection laid out ``(3, heads, head_dim)`` along the output features,
  scores ``q.k / sqrt(head_dim)`` plus the symmetric ALiBi bias ``-slope_h * |i - j|``.
* output: the last layer's hidden states (no final LayerNorm).

Parameter names follow the original checkpoint so its state dict loads as is; a ``bert.`` prefix
(DNABERT-2-117M is saved as ``BertForMaskedLM``) is accepted as well as none (DNABERT-S is saved as
``BertModel``). Pooler and MLM-head weights are not used for embeddings and are ignored.

It also writes synthetic, randomly initialised checkpoints in the same layout (for tests and
benchmarks without the real weights) and computes embeddings with the original's semantics.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from virnucpro.errors import InputError, ModelError
from virnucpro.models.layout import quick_fingerprint
from virnucpro.models.safeload import load_pickled, load_safetensors

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
TOKENIZER_FILE = "tokenizer.json"
SYNTHETIC_KEY = "virnucpro_synthetic"

# Special tokens of the DNABERT-2 BPE vocabulary, in id order ([UNK]=0 ... [MASK]=4).
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
CLS_ID, SEP_ID, PAD_ID = 1, 2, 3
VOCAB_SIZE = 4096


# Hyper-parameters of the synthetic presets. "full" is DNABERT-2-117M / DNABERT-S.
PRESETS: dict[str, dict[str, int]] = {
    "full": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128),
}
_INIT_STD = 0.02


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class DnaBertConfig:
    """The config.json fields the encoder needs (HF ``BertConfig`` names), plus bookkeeping ones.

    ``from_dict`` ignores keys it does not know (``auto_map``, ``_name_or_path``, ...), so the real
    checkpoint's config.json reads as is; ``to_dict`` writes an ``auto_map``-free config.json.
    """

    vocab_size: int = VOCAB_SIZE
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2
    pad_token_id: int = 0
    max_position_embeddings: int = 512
    alibi_starting_size: int = 512
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = _INIT_STD
    model_type: str = "bert"
    architectures: list[str] = field(default_factory=lambda: ["BertModel"])

    _REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DnaBertConfig":
        """Build from a config.json dict; ModelError when a required field is missing or unusable."""
        missing = [k for k in cls._REQUIRED if k not in data]
        if missing:
            raise ModelError(f"DNABERT config.json lacks required field(s): {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            config = cls(**kwargs)
            for name in cls._REQUIRED + ("type_vocab_size",):
                value = getattr(config, name)
                if isinstance(value, bool) or int(value) != value or int(value) <= 0:
                    raise ValueError(f"{name} must be a positive integer, got {value!r}")
                setattr(config, name, int(value))
            config.layer_norm_eps = float(config.layer_norm_eps)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"DNABERT config.json is not usable: {exc}") from None
        if config.hidden_size % config.num_attention_heads:
            raise ModelError(
                f"DNABERT config.json: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config.json content (HF field names, keys sorted as HF writes them)."""
        data = asdict(self)
        data.update(classifier_dropout=None, position_embedding_type="absolute", torch_dtype="float32")
        return dict(sorted(data.items()))


# --------------------------------------------------------------------------------------------
# ALiBi
# --------------------------------------------------------------------------------------------


def _alibi_slopes_list(n_heads: int) -> list[float]:
    """ALiBi head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two.

    For other n (DNABERT-2 has 12 heads) the slopes of the largest power of two p < n are taken,
    followed by every other slope of the 2p-head sequence (the odd-numbered ones) until n are
    filled - the rule of the ALiBi reference code that DNABERT-2 uses.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    if n_heads & (n_heads - 1) == 0:
        start = 2.0 ** (-8.0 / n_heads)
        return [start ** (i + 1) for i in range(n_heads)]
    p = 1 << (n_heads.bit_length() - 1)  # largest power of two below n_heads
    return _alibi_slopes_list(p) + _alibi_slopes_list(2 * p)[0::2][: n_heads - p]


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi slopes, one per head: float32 tensor [n_heads]."""
    return torch.tensor(_alibi_slopes_list(n_heads), dtype=torch.float32)


def alibi_bias(n_heads: int, length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Symmetric (bidirectional) ALiBi bias ``-slope_h * |i - j|``: float32 [n_heads, T, T]."""
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).abs()  # [T, T], integer
    slopes = alibi_slopes(n_heads).to(device)  # [nH]
    return slopes[:, None, None] * -distance  # [nH, T, T] float32


def attention_bias(n_heads: int, length: int, dtype: torch.dtype, device, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The attention mask SDPA gets: ALiBi [1, nH, T, T], or with ``keep`` [B, T] (True = real token)
    padded keys set to the dtype's minimum: [B, nH, T, T]."""
    bias = alibi_bias(n_heads, length, device).to(dtype)[None]
    if keep is not None:
        bias = bias.masked_fill(~keep[:, None, None, :], torch.finfo(dtype).min)
    return bias


# --------------------------------------------------------------------------------------------
# Network (module and attribute names mirror the checkpoint's keys)
# --------------------------------------------------------------------------------------------


class _Embeddings(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids [B, T] -> [B, T, H]; token type is always 0 (single-segment input).
        words = self.word_embeddings(input_ids)
        types = self.token_type_embeddings.weight[0]  # [H]
        return self.LayerNorm(words + types)


class _SelfAttention(nn.Module):
    def __init__(self, config: DnaBertConfig, use_sdpa: bool) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.use_sdpa = use_sdpa
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x [B, T, H]; bias [B or 1, nH, T, T] (ALiBi plus key padding) -> [B, T, H]
        batch, length, hidden = x.shape
        qkv = self.Wqkv(x).view(batch, length, 3, self.n_heads, self.head_dim)  # [B, T, 3, nH, d]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, nH, T, d]
        if self.use_sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, nH, T, d]
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [B, nH, T, T]
            probs = torch.softmax(scores + bias, dim=-1)
            ctx = torch.matmul(probs, v)  # [B, nH, T, d]
        return ctx.transpose(1, 2).reshape(batch, length, hidden)


class _SelfOutput(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(attended) + residual)  # post-LN


class _Attention(nn.Module):
    def __init__(self, config: DnaBertConfig, use_sdpa: bool) -> None:
        super().__init__()
        self.self = _SelfAttention(config, use_sdpa)
        self.output = _SelfOutput(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _GatedMLP(nn.Module):
    """GEGLU feed-forward: LN(x + wo(gelu(x W_g) * (x W_v))), W_g/W_v the halves of gated_layers."""

    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.gated_layers(x)  # [B, T, 2I]
        gated, linear = both[..., : self.intermediate_size], both[..., self.intermediate_size :]
        return self.layernorm(self.wo(F.gelu(gated) * linear) + x)  # exact (erf) GELU, post-LN


class _Layer(nn.Module):
    def __init__(self, config: DnaBertConfig, use_sdpa: bool) -> None:
        super().__init__()
        self.attention = _Attention(config, use_sdpa)
        self.mlp = _GatedMLP(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, bias))

    def weights(self) -> tuple[torch.Tensor, ...]:
        """The layer's tensors in ``layer_forward``'s order."""
        a, o, m = self.attention.self, self.attention.output, self.mlp
        return (a.Wqkv.weight, a.Wqkv.bias, o.dense.weight, o.dense.bias, o.LayerNorm.weight, o.LayerNorm.bias,
                m.gated_layers.weight, m.wo.weight, m.wo.bias, m.layernorm.weight, m.layernorm.bias)


def layer_forward(x: torch.Tensor, bias: torch.Tensor, w: tuple, n_heads: int, eps: float) -> torch.Tensor:
    """``_Layer.forward`` (SDPA attention) as one function of its tensors, so that one
    ``torch.compile`` serves all layers (weights are arguments, not guarded module attributes).
    x [B, T, H], bias [B or 1, nH, T, T] -> [B, T, H]; the same operations in the same order."""
    wqkv, bqkv, wd, bd, g1, b1, wg, wo, bo, g2, b2 = w
    batch, length, hidden = x.shape
    qkv = F.linear(x, wqkv, bqkv).view(batch, length, 3, n_heads, hidden // n_heads)   # [B, T, 3, nH, d]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                                  # each [B, nH, T, d]
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(batch, length, hidden)
    x = F.layer_norm(F.linear(ctx, wd, bd) + x, (hidden,), g1, b1, eps)              # post-LN
    both = F.linear(x, wg)                                                            # [B, T, 2I]
    inter = both.shape[-1] // 2
    return F.layer_norm(F.linear(F.gelu(both[..., :inter]) * both[..., inter:], wo, bo) + x, (hidden,), g2, b2, eps)


class _Encoder(nn.Module):
    def __init__(self, config: DnaBertConfig, use_sdpa: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config, use_sdpa) for _ in range(config.num_hidden_layers))


class DnaBert(nn.Module):
    """DNABERT-2 encoder returning the last hidden state.

    ``use_sdpa`` selects torch's fused ``scaled_dot_product_attention`` (with the ALiBi bias as a
    float mask) instead of the explicit matmul-softmax-matmul that the original's PyTorch path
    computes; both give the same result up to float rounding.
    """

    def __init__(self, config: DnaBertConfig, use_sdpa: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config, use_sdpa)
        self.layer_fn = None   # e.g. torch.compile(layer_forward): used instead of the modules (SDPA only)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids [B, T] (long), attention_mask [B, T] (bool, True = real token) -> [B, T, H].

        With a mask, padded keys get no attention weight, so each sequence's real-token outputs are
        those of the sequence run alone; padded positions come back as zeros (as the original's
        unpad/re-pad does).
        """
        x = self.embeddings(input_ids)  # [B, T, H]
        length = input_ids.shape[1]
        keep = attention_mask.to(device=x.device, dtype=torch.bool) if attention_mask is not None else None  # [B, T]
        bias = attention_bias(self.config.num_attention_heads, length, x.dtype, x.device, keep)
        if self.layer_fn is not None:
            heads, eps = self.config.num_attention_heads, self.config.layer_norm_eps
            for layer in self.encoder.layer:
                x = self.layer_fn(x, bias, layer.weights(), heads, eps)
        else:
            for layer in self.encoder.layer:
                x = layer(x, bias)
        if attention_mask is not None:
            x = x * keep[:, :, None].to(x.dtype)
        return x


def sdpa_backends(device: torch.device):
    """The SDPA backends DNABERT-S's attention may use on ``device`` (a context manager). On a GPU,
    cuDNN's attention is left out: it builds an execution plan for every new batch shape (~45 ms on
    an H200, the GPU idle meanwhile: docs/benchmarks.md H200-29), and DNABERT-S's batches come in
    many shapes (rows x width vary by unit). The memory-efficient kernel takes the ALiBi bias as is,
    with no per-shape set-up. On a CPU, torch's own choice."""
    from contextlib import nullcontext
    if torch.device(device).type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def real_token_rows(lengths: np.ndarray, width: int) -> np.ndarray:
    """Positions of the real tokens of a padded [B, width] batch in its flattened [B * width] form,
    row by row (int64 [sum(lengths)]); computed on the host, so that the GPU never has to tell."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.flatnonzero(np.arange(width)[None, :] < lengths[:, None])


def mean_unpadded(model: DnaBert, input_ids: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per sequence, the mean of the last hidden state over its tokens ([CLS]/[SEP] included):
    float32 [B, H] -- what ``model(input_ids, mask)`` gives, masked and averaged -- with every
    row-wise part of the network (embeddings, the four linear layers, both LayerNorms, GEGLU) run on
    the real tokens only; just the attention sees the padded [B, T] layout (its ALiBi bias masks
    padded keys, so the real tokens' outputs do not depend on the padding). ``rows`` =
    ``real_token_rows(lengths, T)`` on the model's device; ``lengths`` [B] on it too. SDPA attention."""
    cfg = model.config
    batch, length = input_ids.shape
    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    x = model.embeddings(input_ids.reshape(-1)[rows])                                                     # [N, H]
    keep = torch.arange(length, device=x.device)[None, :] < lengths[:, None]                                 # [B, T]
    bias = attention_bias(heads, length, x.dtype, x.device, keep)                                          # [B, nH, T, T]
    qkv_pad = x.new_zeros(batch * length, 3 * hidden)   # padded rows stay zero: keys masked, queries dropped
    for layer in model.encoder.layer:
        a, o, m = layer.attention.self, layer.attention.output, layer.mlp
        qkv_pad[rows] = a.Wqkv(x)                                                                   # [N, 3H]
        q, k, v = qkv_pad.view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4).unbind(0)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                               # [B, nH, T, d]
        ctx = ctx.transpose(1, 2).reshape(batch * length, hidden)[rows]                            # [N, H]
        x = m(o(ctx, x))                     # the layer's row-wise modules, on the real tokens
    out = x.new_zeros(batch * length, hidden)
    out[rows] = x
    return out.view(batch, length, hidden).float().sum(1) / lengths[:, None].float()


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def load_state_dict_checked(model: DnaBert, state: Mapping[str, torch.Tensor], assign: bool = False) -> list[str]:
    """Copy checkpoint tensors into ``model``; return the checkpoint keys that were ignored.

    Keys may carry a ``bert.`` prefix or none. Pooler / MLM-head keys and keys the encoder does not
    have are ignored. ModelError (naming the keys) when an encoder weight is missing or has the
    wrong shape.
    """
    renamed = {key: (key[len("bert.") :] if key.startswith("bert.") else key) for key in state}
    stripped = {renamed[key]: tensor for key, tensor in state.items()}
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in stripped)
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ModelError(f"DNABERT weights lack {len(missing)} expected tensor(s): {shown}")
    wrong = [
        f"{k} (expected {tuple(v.shape)}, file has {tuple(stripped[k].shape)})"
        for k, v in expected.items()
        if tuple(stripped[k].shape) != tuple(v.shape)
    ]
    if wrong:
        shown = "; ".join(wrong[:4]) + (f" ... ({len(wrong)} in all)" if len(wrong) > 4 else "")
        raise ModelError(f"DNABERT weights do not fit config.json: {shown}")
    model.load_state_dict({k: stripped[k] for k in expected}, strict=True, assign=assign)
    return sorted(key for key in state if renamed[key] not in expected)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch state dict (weights-only, virnucpro.models.safeload); ModelError
    when unreadable, damaged or holding anything but tensors."""
    if path.name.endswith(".safetensors"):
        state, _ = load_safetensors(path, what="DNABERT weights")
    else:
        state = load_pickled(path, what="DNABERT weights")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"DNABERT weights {path} are not a plain state dict of tensors")
    return dict(state)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelError(f"DNABERT {what} not found: {path}")
    return path


def load_dnabert(
    folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, use_sdpa: bool = False
) -> tuple[DnaBert, Tokenizer, dict[str, Any]]:
    """Load an HF-layout DNABERT-2/S folder: config.json, model.safetensors or pytorch_model.bin,
    tokenizer.json. Returns (model in eval mode, tokenizer, info).

    info: folder, weights_file, weights_format, fingerprint (sha256 prefix of the weights file),
    synthetic (config.json's "virnucpro_synthetic" dict, or None), config (dict), n_parameters,
    ignored_keys.
    """
    root = _require(Path(folder), "model folder")
    if not root.is_dir():
        raise ModelError(f"DNABERT model folder is not a directory: {root}")
    config_path = _require(root / CONFIG_FILE, "config file")
    try:
        raw_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read DNABERT config {config_path}: {exc}") from None
    if not isinstance(raw_config, dict):
        raise ModelError(f"DNABERT config {config_path} is not a JSON object")
    config = DnaBertConfig.from_dict(raw_config)

    weights_path = root / SAFETENSORS_FILE
    if not weights_path.exists():
        weights_path = root / TORCH_FILE
    if not weights_path.exists():
        raise ModelError(f"DNABERT weights not found: {root / SAFETENSORS_FILE} (or {root / TORCH_FILE})")
    tokenizer = load_dna_tokenizer(root)

    with torch.device("meta"):   # no random initialisation (a second on a slow CPU): the file's tensors are used
        model = DnaBert(config, use_sdpa=use_sdpa)
    ignored = load_state_dict_checked(model, _read_weights(weights_path), assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    synthetic = raw_config.get(SYNTHETIC_KEY)
    info = {
        "folder": str(root),
        "weights_file": str(weights_path),
        "weights_format": "safetensors" if weights_path.name == SAFETENSORS_FILE else "bin",
        "fingerprint": quick_fingerprint(weights_path),
        "synthetic": synthetic if isinstance(synthetic, dict) else None,
        "config": config.to_dict(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "ignored_keys": ignored,
    }
    return model, tokenizer, info


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _template_processor(cls_id: int, sep_id: int):
    from tokenizers.processors import TemplateProcessing

    return TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def token_counter(folder: str | Path):
    """A function: nucleotide sequences -> their token counts ([CLS] and [SEP] included) under the
    folder's tokenizer, as the embedding loop will tokenise them (numpy int64)."""
    import numpy as np
    tokenizer = load_dna_tokenizer(folder)

    def count(seqs: list[str]) -> "np.ndarray":
        return np.fromiter((len(e.ids) for e in tokenizer.encode_batch(seqs)), dtype=np.int64, count=len(seqs))
    return count


def load_dna_tokenizer(folder: str | Path) -> Tokenizer:
    """Load ``folder/tokenizer.json`` so that ``encode(dna).ids`` is ``[CLS] ... [SEP]``.

    The template post-processor is added only when the file has none. Truncation and padding are
    switched off (the original tokenises each sequence whole). ModelError when the file is missing,
    unreadable, lacks [CLS]/[SEP], or does not frame a sequence with them.
    """
    path = _require(Path(folder) / TOKENIZER_FILE, "tokenizer file")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read DNABERT tokenizer {path}: {exc}") from None
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ModelError(f"DNABERT tokenizer {path} lacks the [CLS] or [SEP] token")
    if tokenizer.post_processor is None:
        tokenizer.post_processor = _template_processor(cls_id, sep_id)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ids = tokenizer.encode("ACGT").ids
    if len(ids) < 3 or ids[0] != cls_id or ids[-1] != sep_id:
        raise ModelError(f"DNABERT tokenizer {path} does not add [CLS] ... [SEP] (got ids {ids})")
    return tokenizer


def _dna_lines(training_dna: Iterable[str], line_length: int = 1000) -> list[str]:
    """Upper-cased training DNA cut into lines (BPE merges never cross a line)."""
    lines: list[str] = []
    for seq in training_dna:
        seq = "".join(seq.split()).upper()
        lines.extend(seq[i : i + line_length] for i in range(0, len(seq), line_length))
    return lines


def _random_dna(seed: int, length: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(length))


def train_dna_tokenizer(training_dna: Iterable[str], seed: int, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train a DNABERT-2-style BPE tokenizer: [UNK] [CLS] [SEP] [PAD] [MASK] = 0..4, no normalizer,
    Whitespace pre-tokenizer, template ``[CLS] $A [SEP]`` - the recipe DNABERT-2's authors published.

    When the given DNA is too little to reach ``vocab_size`` tokens, seeded random ACGT is added.
    """
    from tokenizers import models, pre_tokenizers, trainers

    lines = _dna_lines(training_dna)
    for attempt in range(4):
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=list("ACGT"),
            show_progress=False,
        )
        tokenizer.train_from_iterator(lines, trainer=trainer)
        if tokenizer.get_vocab_size() >= vocab_size:
            break
        lines += _dna_lines([_random_dna(seed * 1000 + attempt, 20_000 * (attempt + 1))])
    if tokenizer.get_vocab_size() != vocab_size:
        raise InputError(f"could not train a {vocab_size}-token DNA tokenizer (got {tokenizer.get_vocab_size()})")
    tokenizer.post_processor = _template_processor(CLS_ID, SEP_ID)
    return tokenizer


# --------------------------------------------------------------------------------------------
# Synthetic checkpoints
# --------------------------------------------------------------------------------------------


def _random_state_dict(config: DnaBertConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in checkpoint key order: LayerNorm weight 1 / bias 0, every other tensor
    (weights and biases) N(0, 0.02). Includes the pooler (DNABERT-S checkpoints carry one)."""
    generator = torch.Generator().manual_seed(seed)
    template = DnaBert(config).state_dict()
    h = config.hidden_size
    template["pooler.dense.weight"] = torch.empty(h, h)
    template["pooler.dense.bias"] = torch.empty(h)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in template.items():
        if "LayerNorm" in name or "layernorm" in name:
            state[name] = torch.ones(tensor.shape) if name.endswith("weight") else torch.zeros(tensor.shape)
        else:
            state[name] = torch.randn(tensor.shape, generator=generator) * _INIT_STD
    return state


def write_synthetic_dnabert(
    out_dir: str | Path,
    preset: str,
    seed: int,
    training_dna: Iterable[str],
    weights_format: str = "safetensors",
) -> Path:
    """Write a random-weight DNABERT-S look-alike in HF layout; returns the folder.

    config.json: DNABERT-2-117M hyper-parameters ("full") or a small "tiny" net, both with the
    4096-token vocabulary, plus "virnucpro_synthetic": {preset, seed, note}. Weights use DNABERT-S's
    key names (a ``BertModel`` save: no ``bert.`` prefix, pooler included), as model.safetensors
    ("safetensors") or pytorch_model.bin ("bin"). tokenizer.json: BPE trained on ``training_dna``.
    Same seed and DNA give byte-identical weights.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown DNABERT preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if weights_format not in ("safetensors", "bin"):
        raise InputError(f"unknown weights format {weights_format!r}; choose safetensors or bin")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    config = DnaBertConfig(**PRESETS[preset])
    config_dict = config.to_dict()
    config_dict[SYNTHETIC_KEY] = {"preset": preset, "seed": seed, "note": "random weights - not biology"}
    (out / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n")

    state = _random_state_dict(config, seed)
    for stale in (SAFETENSORS_FILE, TORCH_FILE):  # never leave two weight files behind
        (out / stale).unlink(missing_ok=True)
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    else:
        torch.save(state, str(out / TORCH_FILE))

    train_dna_tokenizer(training_dna, seed).save(str(out / TOKENIZER_FILE))
    return out


# --------------------------------------------------------------------------------------------
# Embeddings with the original's semantics
# --------------------------------------------------------------------------------------------


def embed_reference(
    model: DnaBert,
    tokenizer: Tokenizer,
    seqs: Sequence[str],
    device: torch.device | str,
    on_done: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """Nucleotide embeddings as VirNucPro computes them: float32 [N, hidden].

    One sequence per forward, no attention mask, no truncation; the embedding is the mean of the
    last hidden state over ALL tokens, [CLS] and [SEP] included. ``on_done(n)`` is called after
    each sequence with the number done so far. The model should be float32 (the original's dtype).
    """
    hidden = model.config.hidden_size
    out = np.empty((len(seqs), hidden), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for i, seq in enumerate(seqs):
            ids = torch.tensor([tokenizer.encode(seq).ids], dtype=torch.long, device=device)  # [1, T]
            states = model(ids)  # [1, T, H]
            out[i] = torch.mean(states[0], dim=0).float().cpu().numpy()
            if on_done is not None:
                on_done(i + 1)
    return out
