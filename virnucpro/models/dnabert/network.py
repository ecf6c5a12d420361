"""The DNABERT-2 / DNABERT-S network in plain PyTorch: config, ALiBi, the layers, one attention.

Every path through the network -- ``DnaBert.forward`` (padded batch, optional key mask), the
functional ``layer_forward`` (what the fast engine may ``torch.compile``) and
``embed.mean_unpadded`` (row-wise parts on the real tokens only) -- runs the same three functions
per layer: ``attend`` (QKV split into heads, scores plus the ``attention_bias``, softmax, values,
heads joined), ``attention_output`` and ``gated_mlp``. The modules only hold the parameters, under
the checkpoint's names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import ModelError

VOCAB_SIZE = 4096   # tokens of the DNABERT-2 BPE vocabulary

# Hyper-parameters of the synthetic presets. "full" is DNABERT-2-117M / DNABERT-S.
PRESETS: dict[str, dict[str, int]] = {
    "full": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128),
}
INIT_STD = 0.02


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
    initializer_range: float = INIT_STD
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
# The layer's arithmetic: one function per part, used by every path
# --------------------------------------------------------------------------------------------


def attend(qkv: torch.Tensor, bias: torch.Tensor, n_heads: int, sdpa: bool = True) -> torch.Tensor:
    """DNABERT-S's attention: qkv [B, T, 3H] (the fused projection's output, features laid out
    ``(3, heads, head_dim)``), bias [B or 1, nH, T, T] (``attention_bias``: ALiBi, padded keys
    masked) -> [B, T, H], the heads joined again; scores ``q.k / sqrt(head_dim) + bias``.

    ``sdpa``: torch's ``scaled_dot_product_attention``, under the backends the caller chose
    (``embed.sdpa_backends`` on a GPU); else the explicit matmul-softmax-matmul that the original's
    PyTorch path computes (the reference engine's, so that its embeddings stay those of that path).
    The two agree to float rounding."""
    batch, length, three_hidden = qkv.shape
    hidden = three_hidden // 3
    q, k, v = qkv.view(batch, length, 3, n_heads, hidden // n_heads).permute(2, 0, 3, 1, 4).unbind(0)  # [B, nH, T, d]
    if sdpa:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                      # [B, nH, T, d]
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hidden // n_heads)        # [B, nH, T, T]
        ctx = torch.matmul(torch.softmax(scores + bias, dim=-1), v)                          # [B, nH, T, d]
    return ctx.transpose(1, 2).reshape(batch, length, hidden)


def attention_output(ctx: torch.Tensor, x: torch.Tensor, w: tuple, eps: float) -> torch.Tensor:
    """``LN(x + dense(ctx))`` (post-LN) with the layer's tensors ``w`` (``_Layer.weights`` order);
    ctx, x [..., H] -> [..., H], any leading shape (padded [B, T] or the real tokens [N])."""
    hidden = x.shape[-1]
    return F.layer_norm(F.linear(ctx, w[2], w[3]) + x, (hidden,), w[4], w[5], eps)


def gated_mlp(x: torch.Tensor, w: tuple, eps: float) -> torch.Tensor:
    """GEGLU feed-forward ``LN(x + wo(gelu(g) * v))``, ``[g | v] = gated_layers(x)`` (no bias; the
    FIRST half through exact erf GELU), post-LN. x [..., H] -> [..., H]."""
    hidden = x.shape[-1]
    both = F.linear(x, w[6])                                                                   # [..., 2I]
    inter = both.shape[-1] // 2
    return F.layer_norm(F.linear(F.gelu(both[..., :inter]) * both[..., inter:], w[7], w[8]) + x,
                        (hidden,), w[9], w[10], eps)


def layer_forward(x: torch.Tensor, bias: torch.Tensor, w: tuple, n_heads: int, eps: float,
                  sdpa: bool = True) -> torch.Tensor:
    """One layer as a function of its tensors ``w`` (``_Layer.weights``), so that one
    ``torch.compile`` serves all layers (weights are arguments, not guarded module attributes).
    x [B, T, H], bias [B or 1, nH, T, T] -> [B, T, H]."""
    ctx = attend(F.linear(x, w[0], w[1]), bias, n_heads, sdpa)                                # [B, T, H]
    return gated_mlp(attention_output(ctx, x, w, eps), w, eps)


# --------------------------------------------------------------------------------------------
# Parameters (module and attribute names mirror the checkpoint's keys)
# --------------------------------------------------------------------------------------------


class _Embeddings(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids [...] -> [..., H]; token type is always 0 (single-segment input).
        words = self.word_embeddings(input_ids)
        types = self.token_type_embeddings.weight[0]  # [H]
        return self.LayerNorm(words + types)


class _SelfAttention(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)


class _SelfOutput(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _SelfOutput(config)


class _GatedMLP(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class _Layer(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.mlp = _GatedMLP(config)

    def weights(self) -> tuple[torch.Tensor, ...]:
        """The layer's tensors in the order ``layer_forward``, ``attention_output`` and ``gated_mlp``
        read them: Wqkv (weight, bias), dense (weight, bias), its LayerNorm (weight, bias),
        gated_layers weight, wo (weight, bias), the MLP's layernorm (weight, bias)."""
        a, o, m = self.attention.self, self.attention.output, self.mlp
        return (a.Wqkv.weight, a.Wqkv.bias, o.dense.weight, o.dense.bias, o.LayerNorm.weight, o.LayerNorm.bias,
                m.gated_layers.weight, m.wo.weight, m.wo.bias, m.layernorm.weight, m.layernorm.bias)


class _Encoder(nn.Module):
    def __init__(self, config: DnaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class DnaBert(nn.Module):
    """DNABERT-2 encoder returning the last hidden state.

    ``use_sdpa`` selects torch's fused ``scaled_dot_product_attention`` (with the ALiBi bias as a
    float mask) instead of the explicit matmul-softmax-matmul that the original's PyTorch path
    computes (see ``attend``).
    """

    def __init__(self, config: DnaBertConfig, use_sdpa: bool = False) -> None:
        super().__init__()
        self.config = config
        self.use_sdpa = use_sdpa
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.layer_fn = None   # e.g. torch.compile(layer_forward): used instead of layer_forward (SDPA only)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids [B, T] (long), attention_mask [B, T] (bool, True = real token) -> [B, T, H].

        With a mask, padded keys get no attention weight, so each sequence's real-token outputs are
        those of the sequence run alone; padded positions come back as zeros (as the original's
        unpad/re-pad does).
        """
        x = self.embeddings(input_ids)  # [B, T, H]
        length = input_ids.shape[1]
        keep = attention_mask.to(device=x.device, dtype=torch.bool) if attention_mask is not None else None  # [B, T]
        heads, eps = self.config.num_attention_heads, self.config.layer_norm_eps
        bias = attention_bias(heads, length, x.dtype, x.device, keep)  # [B or 1, nH, T, T]
        for layer in self.encoder.layer:
            if self.layer_fn is not None:
                x = self.layer_fn(x, bias, layer.weights(), heads, eps)
            else:
                x = layer_forward(x, bias, layer.weights(), heads, eps, self.use_sdpa)
        if attention_mask is not None:
            x = x * keep[:, :, None].to(x.dtype)
        return x
