"""ESM-2 over packed sequences: our own forward over a fair-esm checkpoint's weights.

Sequences are laid end to end in one 1-D token tensor (no padding) described by int32 cu_seqlens:

    tokens      [T]          <cls> seq0 <eos> <cls> seq1 <eos> ...
    cu_seqlens  [N+1]        0, len0+2, len0+2+len1+2, ...     (int32)
    positions   [T]          0..len0+1, 0..len1+1, ...         (rotary restarts at every sequence)

Per layer (pre-LayerNorm, as fair-esm's TransformerLayer; the residual stream x stays fp32, the
matmuls run in the weights' dtype: fp32 here by default, fp16 in the fast engine by default):
    x = x + out_proj(attn(rotary(q), rotary(k), v))     q,k,v = split(qkv(LN(x)))   fused QKV
    x = x + fc2(gelu(fc1(LN(x))))                          exact (erf) GELU, or per instance its
                                                           tanh form in fc1's GEMM epilogue
then emb_layer_norm_after. Rotary tables are built and applied in fp32 (fair-esm builds them in the
weights' dtype). The token-dropout embedding scale is kept: x * 0.88 / (1 - mask share of the
sequence), i.e. x * 0.88 without <mask> tokens. Attention never crosses sequences:
``varlen_attn`` (torch >= 2.10, CUDA, bf16/fp16), flash-attn's ``flash_attn_varlen_func`` when
installed, else a padded SDPA with a key-padding mask (CPU, fp32).

Embedding of a sequence = mean of the final hidden state over its residues (positions 1..len,
at most 1024), exactly as the reference engine (fair-esm's layer-L mean) computes it.

One model in one file (~470 lines, in the manner of fair-esm's esm2.py): the packed network, its
kernel choices per instance, weight fusion and tokenisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.models import esm2_fp8
from virnucpro.models.esm2_triton import add_layernorm, rope_qk   # (triton itself is imported on first use)

TOKEN_DROPOUT_TRAIN_RATIO = 0.15 * 0.8
TRUNCATION = 1024


def _varlen_backend():
    try:
        from flash_attn import flash_attn_varlen_func  # optional extra
        return "flash_attn", flash_attn_varlen_func
    except Exception:
        pass
    try:
        from torch.nn.attention.varlen import varlen_attn
        return "varlen_attn", varlen_attn
    except Exception:
        return None, None


ATTN_BACKEND, _VARLEN_FN = _varlen_backend()


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                     force_padded: bool = False) -> torch.Tensor:
    """Block-diagonal self-attention. q, k, v [T, H, D] -> [T, H, D]; default scale 1/sqrt(D)."""
    fused_ok = q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and not force_padded
    if fused_ok and ATTN_BACKEND == "flash_attn":
        return _VARLEN_FN(q, k, v, cu, cu, max_len, max_len)
    if fused_ok and ATTN_BACKEND == "varlen_attn":
        return _VARLEN_FN(q, k, v, cu, cu, max_len, max_len)
    return padded_attention(q, k, v, cu, max_len)


def padded_attention(q, k, v, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    """Reference path: scatter into [N, H, L, D] padded batches, SDPA with a key mask, gather back."""
    T, H, D = q.shape
    lengths = (cu[1:] - cu[:-1]).long()                                       # [N]
    n = lengths.numel()
    seq = torch.repeat_interleave(torch.arange(n, device=q.device), lengths)   # [T]
    pos = torch.arange(T, device=q.device) - cu[:-1].long()[seq]              # [T]

    def pad(x):
        out = x.new_zeros(n, max_len, H, D)
        out[seq, pos] = x
        return out.transpose(1, 2)                                            # [N, H, L, D]

    key_ok = torch.arange(max_len, device=q.device)[None, :] < lengths[:, None]  # [N, L]
    o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=key_ok[:, None, None, :])
    return o.transpose(1, 2)[seq, pos]                                        # [T, H, D]


class RotaryTable(nn.Module):
    """cos/sin per position in fp32: [P, D/2] each, D = head dim (fair-esm uses cat(freqs, freqs)).
    ``inv_freq`` [D/2]: the checkpoint's own frequencies (fair-esm and HF use the stored buffer, and
    a checkpoint saved in half precision holds them rounded to fp16, up to 2e-4 off the formula;
    the packed forward must rotate by the same angles); None: the formula 10000^(-2i/D)."""

    def __init__(self, head_dim: int, max_positions: int = TRUNCATION + 2, inv_freq: torch.Tensor | None = None):
        super().__init__()
        if inv_freq is None:
            inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        inv_freq = inv_freq.detach().float().to(torch.empty(0).device)   # (the default device: meta while a model is built)
        t = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)                       # [P, D/2]
        self.register_buffer("cos", freqs.cos(), persistent=False)   # [P, D/2]: both halves share it
        self.register_buffer("sin", freqs.sin(), persistent=False)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in fp32 math: x [T, H, D] (any dtype), cos/sin [T, 1, D/2] fp32 -> x.dtype.
    Same as fair-esm's x*cos + rotate_half(x)*sin with cos = cat(c, c), written per half."""
    xf = x.float()
    half = x.shape[-1] // 2
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


# Per layer the element-wise work is grouped as measured fastest (docs/benchmarks.md#h200-esm2):
# v goes to attention as a strided view of the QKV output (no contiguous copy), and the post-attention
# work of layer i runs with the pre-attention work of layer i+1 (``post_pre``), so that the residual add
# after fc2 shares a pass with the next layer's LayerNorm.
#
# GELU: ESM-2's is the exact (erf) GELU. ``tanh-epilogue`` computes fc1 + GELU as one cuBLASLt GEMM
# with its GELU epilogue (one pass over the [T, 4C] activations fewer), which is GELU's tanh
# approximation: a model instance uses it only when its ``gelu`` says so (the fast engine, in
# fp16/bf16 on a GPU: virnucpro.engines.config).
GELU_CHOICES = ("exact", "tanh-epilogue")


@torch.library.custom_op("virnucpro::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x @ w.T + b): x [T, C], w [F, C], b [F] -> [T, F]; on CUDA one cuBLASLt GEMM with
    its GELU epilogue (an opaque op to torch.compile, so it is not split back into GEMM + GELU)."""
    if x.is_cuda:
        return torch._addmm_activation(b, x, w.t(), use_gelu=True)
    return F.gelu(F.linear(x, w, b), approximate="tanh")   # the CPU kernel's GELU would be exact


@linear_gelu_tanh.register_fake
def _(x, w, b):
    return x.new_empty(x.shape[0], w.shape[0])


def _ffn(h, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh: bool):
    """fc2(GELU(fc1(h))): the exact GELU, or fc1 with the tanh-GELU epilogue."""
    g = linear_gelu_tanh(h, fc1_w, fc1_b) if gelu_tanh else F.gelu(F.linear(h, fc1_w, fc1_b))
    return F.linear(g, fc2_w, fc2_b)


def pre_attention(x, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads: int):
    """x [T, C] (fp32 residual stream) -> q, k, v [T, H, D] in the weights' dtype (rotary applied)."""
    T, C = x.shape
    h = F.layer_norm(x, (C,), ln_w.to(x.dtype), ln_b.to(x.dtype), 1e-5).to(qkv_w.dtype)
    q, k, v = F.linear(h, qkv_w, qkv_b).view(T, 3, heads, C // heads).unbind(1)
    return rope(q, cos, sin), rope(k, cos, sin), v


def post_attention(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh: bool = False):
    """Residual add of the attention output, then the GELU feed-forward block (pre-LN)."""
    T, C = x.shape
    x = x + F.linear(a.reshape(T, C), out_w, out_b).to(x.dtype)
    h = F.layer_norm(x, (C,), ln_w.to(x.dtype), ln_b.to(x.dtype), 1e-5).to(fc1_w.dtype)
    return x + _ffn(h, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh).to(x.dtype)


def post_pre(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, ln1_w, ln1_b, qkv_w, qkv_b,
             cos, sin, heads: int, gelu_tanh: bool = False):
    """post_attention of one layer and pre_attention of the next in one function: x, q, k, v."""
    x = post_attention(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh)
    return (x, *pre_attention(x, ln1_w, ln1_b, qkv_w, qkv_b, cos, sin, heads))


# The same three functions over the hand-written Triton kernels (virnucpro/models/esm2_triton.py): the
# residual add and LayerNorm in one pass (x is updated in place), rotary of q and k in one pass; the
# GEMMs are the same cuBLAS calls. Any token count (no padding to a static shape).

def _qkv_rope(h, qkv_w, qkv_b, cos, sin, heads: int):
    qkv = F.linear(h, qkv_w, qkv_b)                                              # [T, 3C]
    T, C = h.shape
    q, k = rope_qk(qkv, cos, sin, heads)
    return q, k, qkv[:, 2 * C:].view(T, heads, C // heads)


def pre_attention_triton(x, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads: int):
    return _qkv_rope(add_layernorm(x, None, ln_w, ln_b, qkv_w.dtype), qkv_w, qkv_b, cos, sin, heads)


def _post_triton(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh: bool):
    T, C = x.shape
    h = add_layernorm(x, F.linear(a.reshape(T, C), out_w, out_b), ln_w, ln_b, fc1_w.dtype)   # x += attention
    return _ffn(h, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh)


def post_attention_triton(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh: bool = False):
    return x + _post_triton(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh).to(x.dtype)


def post_pre_triton(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, ln1_w, ln1_b, qkv_w, qkv_b,
                    cos, sin, heads: int, gelu_tanh: bool = False):
    f = _post_triton(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh)
    h = add_layernorm(x, f, ln1_w, ln1_b, qkv_w.dtype)                                     # x += feed-forward
    return (x, *_qkv_rope(h, qkv_w, qkv_b, cos, sin, heads))


@dataclass(frozen=True)
class KernelSet:
    """The three functions a layer's element-wise work runs through."""
    pre: Callable        # x -> q, k, v
    post: Callable       # x, attention output -> x (the last layer)
    post_pre: Callable   # x, attention output -> x, and the next layer's q, k, v


def _rope_qk_eager(qkv, cos, sin, heads: int):
    T, C = qkv.shape[0], qkv.shape[1] // 3
    return rope(qkv[:, :C].view(T, heads, C // heads), cos, sin), rope(qkv[:, C:2 * C].view(T, heads, C // heads), cos, sin)


EAGER = KernelSet(pre_attention, post_attention, post_pre)                   # plain PyTorch ops
TRITON = KernelSet(pre_attention_triton, post_attention_triton, post_pre_triton)
KERNEL_SETS = {"eager": EAGER, "triton": TRITON}
# the same around FP8 GEMMs (models/esm2_fp8.py): a model instance uses them once ``to_fp8`` ran
FP8_KERNEL_SETS = {"eager": KernelSet(*esm2_fp8.layer_fns(False, _rope_qk_eager)),
                   "triton": KernelSet(*esm2_fp8.layer_fns(True, _rope_qk_eager))}
FP8_LINEARS = ("qkv", "out_proj", "fc1", "fc2")


class PackedLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)                     # fused q_proj, k_proj, v_proj
        self.out_proj = nn.Linear(dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def _w(self, name: str):
        """A linear layer's weight as the layer's kernels take it: the tensor, or after ``to_fp8``
        its Fp8Weight (e4m3 weight and per-output-channel scale)."""
        lin = getattr(self, name)
        return esm2_fp8.Fp8Weight(lin.weight, lin.weight_scale) if hasattr(lin, "weight_scale") else lin.weight

    def pre_args(self):
        ln1 = self.self_attn_layer_norm
        return ln1.weight, ln1.bias, self._w("qkv"), self.qkv.bias

    def post_args(self):
        ln2 = self.final_layer_norm
        return (self._w("out_proj"), self.out_proj.bias, ln2.weight, ln2.bias,
                self._w("fc1"), self.fc1.bias, self._w("fc2"), self.fc2.bias)


class PackedESM2(nn.Module):
    """``kernels`` (eager | triton) and ``gelu`` (exact | tanh-epilogue) are this instance's own:
    two instances in one process may compute with different ones (``set_kernels``)."""

    def __init__(self, num_layers: int, embed_dim: int, attention_heads: int, vocab_size: int = 33,
                 padding_idx: int = 1, mask_idx: int = 32, cls_idx: int = 0, eos_idx: int = 2,
                 kernels: str = "eager", gelu: str = "exact"):
        super().__init__()
        self.num_layers, self.embed_dim, self.attention_heads = num_layers, embed_dim, attention_heads
        self.padding_idx, self.mask_idx, self.cls_idx, self.eos_idx = padding_idx, mask_idx, cls_idx, eos_idx
        self.embed_tokens = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.layers = nn.ModuleList(PackedLayer(embed_dim, attention_heads) for _ in range(num_layers))
        self.emb_layer_norm_after = nn.LayerNorm(embed_dim)
        self.rotary = RotaryTable(embed_dim // attention_heads)
        self.force_padded_attention = False
        # the residual stream stays fp32 whatever the matmul dtype (in the matmul dtype it was 1.4-1.5%
        # faster but moved 0.06% of frame labels: docs/benchmarks.md#exp-esm-residual-half; only
        # tools/precision_study.py --halfres changes it)
        self.residual_dtype = torch.float32
        self.fp8_linears: tuple[str, ...] = ()   # the linear layers ``to_fp8`` quantised
        self.set_kernels(kernels, gelu)

    def set_kernels(self, kernels: str | None = None, gelu: str | None = None) -> "PackedESM2":
        """Choose this instance's element-wise kernels and GELU form (None: keep the current one)."""
        kernels = kernels if kernels is not None else self.kernels
        gelu = gelu if gelu is not None else self.gelu
        if kernels not in KERNEL_SETS:
            raise ValueError(f"kernels {kernels!r}: one of {', '.join(KERNEL_SETS)}")
        if kernels == "triton" and self.fp8 and set(self.fp8_linears) != set(FP8_LINEARS):
            raise ValueError("a model with only some GEMMs in FP8 runs the eager kernels (to_fp8's linears)")
        if gelu not in GELU_CHOICES:
            raise ValueError(f"gelu {gelu!r}: one of {', '.join(GELU_CHOICES)}")
        self.kernels, self.gelu = kernels, gelu
        return self

    @classmethod
    def from_checkpoint(cls, path, device="cpu", dtype=torch.float32, phases: dict | None = None,
                        on_open=None) -> tuple["PackedESM2", object]:
        """Build straight from an ESM-2 of any size -- a fair-esm checkpoint file or a HuggingFace
        folder (``esm2.read_esm2``) -- in ``dtype`` on ``device`` (no fp32 copy of the whole model in
        host memory). Returns (model in eval mode, fair-esm alphabet); with ``phases``, adds the
        seconds spent opening the checkpoint (``esm_open``) to it; ``on_open(embed_dim, heads)`` is
        called before the weights are copied."""
        import re
        import time
        import esm
        from virnucpro.models.esm2 import read_esm2
        t_open = time.perf_counter()
        data, _ = read_esm2(path, mmap=True)   # weights-only whatever the environment says (+ contact regression)
        cfg = data["cfg"]["model"]
        if phases is not None:   # the rest of from_checkpoint is the copy to the device
            phases["esm_open"] = time.perf_counter() - t_open
        if on_open is not None:
            on_open(cfg.encoder_embed_dim, cfg.encoder_attention_heads)
        prefix = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
        sd = {prefix.sub("", k): v for k, v in data["model"].items()}
        alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
        with torch.device("meta"):
            m = cls(cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads, len(alphabet.all_toks),
                    alphabet.padding_idx, alphabet.mask_idx, alphabet.cls_idx, alphabet.eos_idx)
        if torch.device(device).type == "cuda":   # threads and pinned buffers (models/transfer.py: why)
            fused = fuse_state_staged(sd, cfg.encoder_layers, torch.device(device), dtype)
        else:
            fused = fuse_state(sd, cfg.encoder_layers, to=lambda t: t.to(device=device, dtype=dtype))   # QKV cat on the device
        m.load_state_dict(fused, strict=True, assign=True)
        m.rotary = RotaryTable(m.embed_dim // m.attention_heads, inv_freq=stored_inv_freq(sd, cfg.encoder_layers)).to(device)
        m.keep_norms_fp32()
        return m.eval(), alphabet

    @classmethod
    def from_hf_folder(cls, folder, device="cpu", dtype=torch.float32, phases: dict | None = None,
                       on_open=None) -> tuple["PackedESM2", object]:
        """``from_checkpoint`` for a HuggingFace ESM-2 folder (``facebook/esm2_*`` layout, or a
        fine-tuned EsmForSequenceClassification / EsmForMaskedLM): q/k/v fused into one QKV, HF's
        names mapped as ``virnucpro.models.esm2_hf`` says. ModelError for anything but a folder."""
        from pathlib import Path
        from virnucpro.errors import ModelError
        if not Path(folder).is_dir():
            raise ModelError(f"not a HuggingFace ESM-2 folder: {folder}")
        return cls.from_checkpoint(folder, device, dtype, phases, on_open)

    def to_fp8(self, out_dtype: torch.dtype | None = None, linears: tuple[str, ...] = FP8_LINEARS) -> "PackedESM2":
        """Quantise each layer's QKV, out_proj, fc1 and fc2 weights to e4m3 with one scale per output
        channel, in place (the weights in the load dtype are freed layer by layer); their biases and
        the GEMMs' outputs in ``out_dtype`` (default ``esm2_fp8.out_dtype_on`` the model's device).
        From then on the layers run the FP8 kernel set (models/esm2_fp8.py). ``linears``: a subset
        leaves the others in the load dtype -- a precision study's tool (which GEMMs tolerate e4m3),
        eager kernels only."""
        if set(linears) - set(FP8_LINEARS) or not linears:
            raise ValueError(f"linears {linears!r}: a non-empty subset of {', '.join(FP8_LINEARS)}")
        device = self.embed_tokens.weight.device
        out_dtype = out_dtype or esm2_fp8.out_dtype_on(device)
        for layer in self.layers:
            for name in FP8_LINEARS:
                lin = getattr(layer, name)
                if name in linears:
                    q = esm2_fp8.quantize_weight(lin.weight.data)
                    lin.weight = nn.Parameter(q.w, requires_grad=False)
                    lin.register_buffer("weight_scale", q.scale)
                lin.bias = nn.Parameter(lin.bias.data.to(out_dtype), requires_grad=False)
                if name not in linears:
                    lin.weight = nn.Parameter(lin.weight.data.to(out_dtype), requires_grad=False)
        self.out_dtype, self.fp8_linears = out_dtype, tuple(linears)
        if set(linears) != set(FP8_LINEARS):
            self.set_kernels("eager")
        return self

    @property
    def fp8(self) -> bool:
        """Does this instance run the FP8 kernel set (``to_fp8`` ran)?"""
        return bool(self.fp8_linears)

    def keep_norms_fp32(self) -> "PackedESM2":
        """LayerNorm parameters in fp32 (tiny; they act on the fp32 residual stream)."""
        for mod in self.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.float()
        return self

    def forward(self, tokens: torch.Tensor, cu: torch.Tensor, positions: torch.Tensor, max_len: int,
                n_layers: int | None = None) -> torch.Tensor:
        """tokens [T] long, cu [N+1] int32, positions [T] -> final hidden states [T, C]. ``n_layers``:
        only the first n layers (the warm-up: two layers load every kernel, and inference holds
        one layer's activations at a time, so their memory peak is the whole model's)."""
        lengths = (cu[1:] - cu[:-1]).long()                                         # [N]
        seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=tokens.device), lengths,
                                      output_size=tokens.shape[0])                  # [T], no host sync
        x = self.embed_tokens(tokens)                                               # [T, C]
        is_mask = tokens == self.mask_idx
        x = x.masked_fill(is_mask[:, None], 0.0)
        masked_share = torch.zeros(lengths.numel(), device=x.device).index_add_(0, seq, is_mask.float()) / lengths
        scale = (1 - TOKEN_DROPOUT_TRAIN_RATIO) / (1 - masked_share)                # [N]
        x = x.to(self.residual_dtype) * scale[seq][:, None].to(self.residual_dtype)
        cos = self.rotary.cos[positions][:, None, :]                                # [T, 1, D/2] fp32
        sin = self.rotary.sin[positions][:, None, :]
        layers = self.layers if n_layers is None else self.layers[:n_layers]
        ks = (FP8_KERNEL_SETS if self.fp8 else KERNEL_SETS)[self.kernels]
        tanh = self.gelu == "tanh-epilogue" and not self.fp8   # the FP8 set computes the exact GELU
        q, k, v = ks.pre(x, *layers[0].pre_args(), cos, sin, layers[0].heads)
        for i, layer in enumerate(layers):
            a = varlen_attention(q, k, v, cu, max_len, self.force_padded_attention)  # [T, H, D]
            if i + 1 < len(layers):
                x, q, k, v = ks.post_pre(x, a, *layer.post_args(), *layers[i + 1].pre_args(), cos, sin,
                                         layer.heads, gelu_tanh=tanh)
            else:
                x = ks.post(x, a, *layer.post_args(), gelu_tanh=tanh)
        ln = self.emb_layer_norm_after
        return F.layer_norm(x, (x.shape[1],), ln.weight.to(x.dtype), ln.bias.to(x.dtype), 1e-5)

    @staticmethod
    def mean_residues(hidden: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
        """Per-sequence mean over residue positions 1..min(len, 1024) (BOS/EOS excluded): [N, C] fp32."""
        lengths = (cu[1:] - cu[:-1]).long()                                         # tokens incl. BOS/EOS
        n = lengths.numel()
        seq = torch.repeat_interleave(torch.arange(n, device=hidden.device), lengths, output_size=hidden.shape[0])
        pos = torch.arange(hidden.shape[0], device=hidden.device) - cu[:-1].long()[seq]
        residues = (lengths - 2).clamp(min=1)
        used = residues.clamp(max=TRUNCATION)
        keep = (pos >= 1) & (pos <= used[seq])
        w = keep.float() / used[seq].float()                                        # [T]
        # a segmented sum in a fixed order (index_add_ on CUDA adds with atomics: results would
        # differ in the last bits from run to run, and so would the written scores)
        return torch.segment_reduce(hidden.float() * w[:, None], "sum", lengths=lengths, axis=0, unsafe=True)


def stored_inv_freq(sd: dict, num_layers: int) -> torch.Tensor | None:
    """The rotary frequencies a fair-esm state dict (prefixes removed) holds, the same in every layer
    (fair-esm's layers each hold a copy); None when it holds none. ValueError if layers disagree."""
    found = [sd[k] for k in (f"layers.{i}.self_attn.rot_emb.inv_freq" for i in range(num_layers)) if k in sd]
    if not found:
        return None
    if any(not torch.equal(f.float(), found[0].float()) for f in found[1:]):
        raise ValueError("the checkpoint's layers hold different rotary frequencies (inv_freq)")
    return found[0].float()


def fuse_plan(sd: dict, num_layers: int) -> dict[str, list]:
    """fair-esm ESM2 state dict (prefixes removed) -> for each PackedESM2 key, the fair-esm tensors
    that make it (concatenated along dim 0: q, k, v for the fused QKV; one tensor otherwise)."""
    plan = {k: [sd[k]] for k in ("embed_tokens.weight", "emb_layer_norm_after.weight", "emb_layer_norm_after.bias")}
    for i in range(num_layers):
        p = f"layers.{i}."
        for part in ("weight", "bias"):
            plan[p + f"qkv.{part}"] = [sd[p + f"self_attn.{x}_proj.{part}"] for x in "qkv"]
            plan[p + f"out_proj.{part}"] = [sd[p + f"self_attn.out_proj.{part}"]]
            for name in ("self_attn_layer_norm", "final_layer_norm", "fc1", "fc2"):
                plan[p + f"{name}.{part}"] = [sd[p + f"{name}.{part}"]]
    return plan


def fuse_state(sd: dict, num_layers: int, to=lambda t: t) -> dict:
    """fair-esm ESM2 state dict (prefixes removed) -> PackedESM2 state dict (fused QKV). ``to`` is
    applied to each tensor read, before the QKV concatenation (e.g. a copy to the GPU, so that the
    concatenation runs there)."""
    return {k: to(parts[0]) if len(parts) == 1 else torch.cat([to(t) for t in parts], 0)
            for k, parts in fuse_plan(sd, num_layers).items()}


def fuse_state_staged(sd: dict, num_layers: int, device: torch.device, dtype: torch.dtype) -> dict:
    """``fuse_state`` with every tensor copied to the (CUDA) ``device`` in ``dtype`` by
    ``transfer.copy_to_device``: the fused tensors are allocated here and filled in place."""
    from virnucpro.models.transfer import copy_to_device
    new, pairs = {}, []
    for k, parts in fuse_plan(sd, num_layers).items():
        rows = sum(t.shape[0] for t in parts)
        dst = torch.empty((rows, *parts[0].shape[1:]), dtype=dtype, device=device)
        r = 0
        for t in parts:
            pairs.append((t, dst[r:r + t.shape[0]]))
            r += t.shape[0]
        new[k] = dst
    copy_to_device(pairs)
    return new


def flops_per_token(num_layers: int, embed_dim: int) -> float:
    """Matmul FLOPs per token of the forward: 2 x (QKV + out + fc1 + fc2 weights) = 24 L C^2.
    ESM-2 3B: 5.66 GFLOP/token. Attention score FLOPs (~4 L C x seq len, < 1% here) not counted."""
    return 24.0 * num_layers * embed_dim * embed_dim


PAD_SEQ = 256  # padding to the budget is laid out as pseudo-sequences of at most this length


def tokenize(alphabet, proteins: list[str], pad_to: int | None = None):
    """numpy int32 tokens / cu_seqlens / positions for a list of proteins (host side, no torch).

    ``pad_to``: append <pad> pseudo-sequences (each <= PAD_SEQ tokens, attending only among
    themselves) so the batch has exactly this many tokens: every batch then has the same shape.
    The real sequences are the first len(proteins) entries of cu_seqlens."""
    import numpy as np
    table = _token_table(alphabet)
    lens = np.fromiter((len(p) + 2 for p in proteins), dtype=np.int64, count=len(proteins))
    if pad_to is not None and pad_to > lens.sum():
        rest = int(pad_to - lens.sum())
        pads = np.full(-(-rest // PAD_SEQ), PAD_SEQ, dtype=np.int64)
        pads[-1] = rest - PAD_SEQ * (len(pads) - 1)
        tok, cu, pos, mx = tokenize(alphabet, proteins)
        pcu = cu[-1] + np.cumsum(pads)
        ppos = np.concatenate([np.arange(n, dtype=np.int32) for n in pads])
        return (np.concatenate([tok, np.full(rest, alphabet.padding_idx, dtype=np.int32)]),
                np.concatenate([cu, pcu.astype(np.int32)]), np.concatenate([pos, ppos]), max(mx, int(pads.max())))
    cu = np.zeros(len(proteins) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    T = int(cu[-1])
    tokens = np.empty(T, dtype=np.int32)
    body = np.frombuffer("".join(proteins).encode("ascii"), dtype=np.uint8)
    starts = cu[:-1].astype(np.int64)
    is_body = np.ones(T, dtype=bool)
    is_body[starts] = False
    is_body[cu[1:].astype(np.int64) - 1] = False
    tokens[is_body] = table[body]
    tokens[starts] = alphabet.cls_idx
    tokens[cu[1:].astype(np.int64) - 1] = alphabet.eos_idx
    positions = np.arange(T, dtype=np.int32) - np.repeat(cu[:-1], lens)
    return tokens, cu, positions, int(lens.max()) if len(lens) else 0


_TABLES: dict[int, "object"] = {}


def _token_table(alphabet):
    import numpy as np
    key = id(alphabet)
    if key not in _TABLES:
        t = np.full(256, alphabet.unk_idx, dtype=np.int32)
        for tok, idx in alphabet.tok_to_idx.items():
            if len(tok) == 1:
                t[ord(tok)] = idx
        _TABLES[key] = t
    return _TABLES[key]

