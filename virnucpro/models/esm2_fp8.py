"""ESM-2's four GEMMs per layer in FP8 (e4m3): ``--precision fp8`` (opt-in; docs/benchmarks.md#fp8).

Per layer (esm2_fast.py has the rest of the forward, unchanged):

    QKV, out_proj, fc1, fc2     y[t, f] = sum_c x8[t, c] * w8[f, c] * sx[t] * sw[f] + b[f]
                                x8 [T, C] e4m3, sx [T, 1] fp32: the activation, one scale per token (row)
                                w8 [F, C] e4m3, sw [1, F] fp32: the weight, one scale per output channel
                                fp32 accumulation (torch._scaled_mm), y in ``out_dtype`` (fp16 where
                                the GPU's library offers row-wise scales with an fp16 output, else bf16)

Scales are amax / 448 (e4m3's largest finite value): a weight's at load time (``quantize_weight``), an
activation's in the kernel that already writes it (``esm2_triton``: the LayerNorm before QKV and fc1,
a row pass over the attention output before out_proj, and fc1's output through the exact GELU before
fc2). A separate quantisation pass in plain PyTorch ops (amax, divide, cast: three passes over each
activation) cost more than the FP8 GEMMs save (issue 19: 12.3 vs 5.3 ms per 3B layer on an H100), so
the eager functions here are for CPUs and tests only.

What stays as in fp16: the fp32 residual stream, LayerNorm statistics, rotary, softmax and attention
(in ``out_dtype``), the embedding and the final LayerNorm, DNABERT-S (fp16) and the classifier.
The GELU is always the exact one here (it is computed in the quantising pass, where the erf costs
nothing); the fp16 path's tanh-GELU epilogue does not apply.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0            # e4m3 (fn: finite, no inf) largest magnitude
_TINY = 1e-12              # an all-zero row gets a tiny scale, not a division by zero


class Fp8Weight(NamedTuple):
    """A linear layer's weight as FP8: w [F, C] e4m3 (row-major) and scale [1, F] fp32."""
    w: torch.Tensor
    scale: torch.Tensor


def quantize_weight(w: torch.Tensor) -> Fp8Weight:
    """w [F, C] (any float dtype) -> e4m3 with one scale per output channel (row)."""
    wf = w.float()
    scale = wf.abs().amax(dim=1).clamp(min=_TINY) / FP8_MAX                     # [F]
    return Fp8Weight((wf / scale[:, None]).to(FP8), scale[None, :].contiguous())


def quantize_rows_eager(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] -> e4m3 [T, N] and scale [T, 1] fp32 (f(x) = stored * scale; f = exact GELU or identity)."""
    xf = x.float()
    if gelu:
        xf = F.gelu(xf)
    scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=_TINY) / FP8_MAX        # [T, 1]
    return (xf / scale).to(FP8), scale


def scaled_linear(x8: torch.Tensor, sx: torch.Tensor, w: Fp8Weight, bias: torch.Tensor) -> torch.Tensor:
    """x8 [T, C] e4m3 with sx [T, 1] -> [T, F] in the bias's dtype (the model's ``out_dtype``).
    On a GPU one FP8 GEMM; on a CPU the e4m3 values dequantised and multiplied in fp32 -- the same
    products and fp32 accumulation (up to summation order): torch's CPU _scaled_mm offers row-wise
    scales only in some versions (2.13 yes, 2.11 per-tensor only), and CPUs are for tests and studies."""
    if not x8.is_cuda:
        y = (x8.float() * sx) @ (w.w.float() * w.scale.t()).t() + bias.float()
        return y.to(bias.dtype)
    return torch._scaled_mm(x8, w.w.t(), scale_a=sx, scale_b=w.scale, bias=bias, out_dtype=bias.dtype)


_OUT_DTYPE: dict[str, torch.dtype] = {}


def out_dtype_on(device: torch.device | str) -> torch.dtype:
    """The FP8 GEMMs' output dtype on this device: fp16 (the product's fp16 path computes attention in
    fp16, and bf16 moved 0.8% of frame labels there: docs/benchmarks.md#exp-bf16) where the installed
    torch offers row-wise scaled FP8 GEMMs with an fp16 output and bias, else bf16 (some builds run
    row-wise scales only through a bf16-output kernel). Probed once per device type with a 16x16 GEMM."""
    key = str(torch.device(device))
    if key not in _OUT_DTYPE:
        _OUT_DTYPE[key] = torch.bfloat16
        a = torch.ones(16, 16, device=device).to(FP8)
        s = torch.ones(16, 1, device=device)
        try:
            scaled_linear(a, s, Fp8Weight(a, s.t().contiguous()), torch.zeros(16, dtype=torch.float16, device=device))
            _OUT_DTYPE[key] = torch.float16
        except (RuntimeError, NotImplementedError):
            pass
    return _OUT_DTYPE[key]


def supported(device: torch.device | str) -> str | None:
    """None where FP8 GEMMs run on ``device``, else why not (one line for the user)."""
    device = torch.device(device)
    if device.type != "cuda":
        return "--precision fp8 needs an NVIDIA GPU with FP8 tensor cores (Ada, e.g. RTX 4090, or Hopper: H100/H200)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return (f"--precision fp8 needs FP8 tensor cores (compute capability >= 8.9: RTX 4090, L4, H100, H200); "
                f"{name} is {major}.{minor}: use --precision fp16")
    return None


def refuse_unsupported(device: torch.device | str) -> None:
    """InputError (exit 2) with ``supported``'s line where FP8 GEMMs cannot run on ``device``."""
    if (why := supported(device)) is not None:
        from virnucpro.errors import InputError
        raise InputError(why)


# -- one layer's element-wise work around its FP8 GEMMs: the same three functions as esm2_fast's
# KernelSet (pre, post, post_pre), each with an eager (PyTorch ops) and a Triton variant ---------------
#
# The eager variant quantises each GEMM's input right before the GEMM (``_linear``), so that a weight
# left in fp16 (a study of which GEMMs tolerate e4m3: ``PackedESM2.to_fp8(linears=...)``,
# tools/esm_fidelity.py --fp8-gemms) simply runs as an fp16 GEMM; numerically it is the Triton
# variant's arithmetic (the same quantised values from the same fp32 inputs).

def _linear(x, w, b, gelu: bool = False):
    """GEMM of x [T, C] (GELU applied first when ``gelu``) with an Fp8Weight (x quantised per row) or
    a plain weight (x in the weight's dtype)."""
    if isinstance(w, Fp8Weight):
        return scaled_linear(*quantize_rows_eager(x, gelu), w, b)
    xf = F.gelu(x.float()) if gelu else x
    return F.linear(xf.to(w.dtype), w, b)


def _ln(x, ln_w, ln_b):
    return F.layer_norm(x, (x.shape[1],), ln_w.to(x.dtype), ln_b.to(x.dtype), 1e-5)


def _rope_triton(qkv, cos, sin, heads: int):
    from virnucpro.models.esm2_triton import rope_qk
    return rope_qk(qkv, cos, sin, heads)


def _split(qkv, q, k, heads: int):
    T, C = qkv.shape[0], qkv.shape[1] // 3
    return q, k, qkv[:, 2 * C:].view(T, heads, C // heads)


def layer_fns(fused: bool, rope_qk_eager):
    """(pre, post, post_pre) for esm2_fast's KernelSet: Triton kernels (``fused``) or PyTorch ops;
    ``rope_qk_eager(qkv, cos, sin, heads) -> q, k`` is the packed model's own rotary."""
    if fused:
        from virnucpro.models.esm2_triton import add_layernorm_fp8, quantize_rows

        def qkv_of(x, y, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads):   # x += y in place, LN -> e4m3
            qkv = scaled_linear(*add_layernorm_fp8(x, y, ln_w, ln_b), qkv_w, qkv_b)        # [T, 3C]
            return x, _split(qkv, *_rope_triton(qkv, cos, sin, heads), heads)

        def feed_forward(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b):
            T, C = x.shape
            h = add_layernorm_fp8(x, scaled_linear(*quantize_rows(a.reshape(T, C)), out_w, out_b), ln_w, ln_b)
            g = quantize_rows(scaled_linear(*h, fc1_w, fc1_b), gelu=True)                 # [T, 4C] e4m3
            return x, scaled_linear(*g, fc2_w, fc2_b)
    else:
        def qkv_of(x, y, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads):
            x = x if y is None else x + y.to(x.dtype)
            qkv = _linear(_ln(x, ln_w, ln_b), qkv_w, qkv_b)
            return x, _split(qkv, *rope_qk_eager(qkv, cos, sin, heads), heads)

        def feed_forward(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b):
            T, C = x.shape
            x = x + _linear(a.reshape(T, C), out_w, out_b).to(x.dtype)
            return x, _linear(_linear(_ln(x, ln_w, ln_b), fc1_w, fc1_b), fc2_w, fc2_b, gelu=True)

    def pre(x, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads: int):
        """x [T, C] fp32 -> q, k, v [T, H, D] in out_dtype."""
        return qkv_of(x, None, ln_w, ln_b, qkv_w, qkv_b, cos, sin, heads)[1]

    def post(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, gelu_tanh: bool = False):
        x, f = feed_forward(x, a, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b)
        return x + f.to(x.dtype)

    def post_pre(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, ln1_w, ln1_b, qkv_w, qkv_b,
                 cos, sin, heads: int, gelu_tanh: bool = False):
        x, f = feed_forward(x, a, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b)
        x, qkv = qkv_of(x, f, ln1_w, ln1_b, qkv_w, qkv_b, cos, sin, heads)                # x += feed-forward
        return (x, *qkv)

    return pre, post, post_pre
