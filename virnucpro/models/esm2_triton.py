"""ESM-2's element-wise work as two hand-written Triton kernels (the fast engine's default on a GPU).

Between its GEMMs a packed ESM-2 layer does two kinds of memory-bound work (virnucpro/models/esm2_fast.py):

    add_layernorm   x += y (the fp32 residual stream plus a GEMM's fp16 output), h = LN(x) in the
                    weights' dtype: one read of x and y, one write of x and h
    rope_qk         q, k = rotary(q), rotary(k) (fp32 math) read from the fused QKV GEMM's output and
                    written as contiguous [T, H, D] tensors; v stays a strided view of that output

and, for the FP8 path (virnucpro/models/esm2_fp8.py), the same passes writing a GEMM's FP8 input:

    add_layernorm_fp8   as add_layernorm, with h written as e4m3 plus its row's scale (the row is in
                        registers already, so its largest |value| costs no extra pass)
    quantize_rows       a row of a GEMM's output (optionally through the exact GELU first) -> e4m3
                        and its scale: the attention output before out_proj, fc1's output before fc2

torch.compile fuses the same work into the same passes, but every process pays for it at start-up:
importing its compiler and tracing the functions took ~4-5 s of each worker's start, for the same
speed (docs/benchmarks.md#exp-esm-compile), on the critical path of every run. These kernels need `import triton` and a cached compile
(the first run on a machine compiles them, ~1-2 s, into Triton's cache). Rows are independent and each
row is reduced in a fixed order: results do not depend on the batch or the GPU count.

On a CPU the tests run them with TRITON_INTERPRET=1 (Triton's interpreter; tests/conftest.py sets it
before triton is imported, as the interpreter needs).
"""

from __future__ import annotations

import torch

_BUILT: dict = {}


def available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - no Triton (e.g. a CPU-only install)
        return False


def _kernels() -> dict:
    """The jitted kernels, built on first use (Triton reads TRITON_INTERPRET when it is imported)."""
    if _BUILT:
        return _BUILT
    import triton
    import triton.language as tl

    @triton.jit
    def add_ln_kernel(X, Y, W, B, H, S, stride_x, stride_y, stride_h, C, eps,
                      HAS_Y: tl.constexpr, QUANT: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < C
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            y = tl.load(Y + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
            x = x + y
            tl.store(X + row * stride_x + cols, x.to(X.dtype.element_ty), mask=mask)
        mean = tl.sum(x, axis=0) / C
        d = tl.where(mask, x - mean, 0.0)
        var = tl.sum(d * d, axis=0) / C
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        h = d * rstd * w + b
        if QUANT:   # e4m3 with the row's scale: h = stored * scale, |stored| <= 448
            scale = tl.maximum(tl.max(tl.where(mask, tl.abs(h), 0.0), axis=0), 1e-12) / 448.0
            tl.store(S + row, scale)
            h = h / scale
        tl.store(H + row * stride_h + cols, h.to(H.dtype.element_ty), mask=mask)

    @triton.jit
    def quant_rows_kernel(X, Q, S, stride_x, stride_q, N, GELU: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if GELU:    # the exact (erf) GELU, as ESM-2's
            x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
        scale = tl.maximum(tl.max(tl.where(mask, tl.abs(x), 0.0), axis=0), 1e-12) / 448.0
        tl.store(S + row, scale)
        tl.store(Q + row * stride_q + cols, (x / scale).to(Q.dtype.element_ty), mask=mask)

    @triton.jit
    def rope_kernel(QKV, COS, SIN, Q, K, stride_qkv, stride_cs, C, NH: tl.constexpr, D: tl.constexpr,
                    HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_J: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)
        j = tl.arange(0, BLOCK_J)                                # BLOCK_J: HALF rounded up to a power of 2
        hh = tl.arange(0, BLOCK_H)
        mj = j < HALF
        m = (hh < NH)[:, None] & mj[None, :]
        c = tl.load(COS + t * stride_cs + j, mask=mj, other=0.0)[None, :]
        s = tl.load(SIN + t * stride_cs + j, mask=mj, other=0.0)[None, :]
        off = hh[:, None] * D + j[None, :]                       # [BLOCK_H, HALF]: first half of each head
        src = QKV + t * stride_qkv
        q1 = tl.load(src + off, mask=m, other=0.0).to(tl.float32)
        q2 = tl.load(src + off + HALF, mask=m, other=0.0).to(tl.float32)
        k1 = tl.load(src + C + off, mask=m, other=0.0).to(tl.float32)
        k2 = tl.load(src + C + off + HALF, mask=m, other=0.0).to(tl.float32)
        dq = Q + t * C
        dk = K + t * C
        tl.store(dq + off, (q1 * c - q2 * s).to(Q.dtype.element_ty), mask=m)
        tl.store(dq + off + HALF, (q2 * c + q1 * s).to(Q.dtype.element_ty), mask=m)
        tl.store(dk + off, (k1 * c - k2 * s).to(K.dtype.element_ty), mask=m)
        tl.store(dk + off + HALF, (k2 * c + k1 * s).to(K.dtype.element_ty), mask=m)

    _BUILT.update(add_ln=add_ln_kernel, rope=rope_kernel, quant=quant_rows_kernel,
                  next_pow2=triton.next_power_of_2)
    return _BUILT


def _add_ln(x, y, w, b, h, scale, eps: float) -> None:
    """Launch the add + LayerNorm kernel into ``h``; with ``scale`` [T, 1] its FP8 variant."""
    T, C = x.shape
    if T == 0:
        return
    block = _kernels()["next_pow2"](C)
    _kernels()["add_ln"][(T,)](x, y if y is not None else x, w, b, h, scale if scale is not None else x,
                               x.stride(0), y.stride(0) if y is not None else 0, h.stride(0), C, eps,
                               HAS_Y=y is not None, QUANT=scale is not None, BLOCK=block, num_warps=_warps(block))


def add_layernorm(x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype,
                  eps: float = 1e-5) -> torch.Tensor:
    """x [T, C] (the residual stream, updated in place: x += y when y is given), y [T, C] or None,
    w/b [C] -> LayerNorm(x) [T, C] in ``out_dtype``."""
    h = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    _add_ln(x, y, w, b, h, None, eps)
    return h


def _warps(block: int) -> int:
    return 16 if block >= 4096 else 8 if block >= 1024 else 4


def add_layernorm_fp8(x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, b: torch.Tensor,
                      eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``add_layernorm`` with its output as FP8: x [T, C] fp32 (x += y in place when y is given) ->
    h8 [T, C] float8_e4m3fn and scale [T, 1] fp32, LayerNorm(x) = h8 * scale row by row."""
    h = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device)
    _add_ln(x, y, w, b, h, s, eps)
    return h, s


def quantize_rows(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] (fp16/bf16/fp32, unit column stride) -> e4m3 [T, N] and scale [T, 1] fp32 with
    f(x) = stored * scale row by row, f = the exact GELU when ``gelu``, else the identity."""
    k = _kernels()
    T, N = x.shape
    q = torch.empty((T, N), dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((T, 1), dtype=torch.float32, device=x.device)
    if T == 0:
        return q, s
    if x.stride(1) != 1:
        raise ValueError("quantize_rows: x must have unit column stride")
    block = k["next_pow2"](N)
    k["quant"][(T,)](x, q, s, x.stride(0), q.stride(0), N, GELU=gelu, BLOCK=block, num_warps=_warps(block))
    return q, s


def rope_qk(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv [T, 3C] (q | k | v, heads of D = C / heads each), cos/sin [T, D/2] fp32 (the rotary table
    at each token's position; [T, 1, D/2] is accepted) -> rotary(q), rotary(k) as [T, H, D]."""
    k = _kernels()
    T, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    cos, sin = cos.reshape(T, D // 2), sin.reshape(T, D // 2)
    q = torch.empty((T, heads, D), dtype=qkv.dtype, device=qkv.device)
    kk = torch.empty_like(q)
    if T == 0:
        return q, kk
    if qkv.stride(1) != 1 or cos.stride(1) != 1 or sin.stride(0) != cos.stride(0):
        raise ValueError("rope_qk: qkv, cos and sin must be row-major with unit column stride")
    k["rope"][(T,)](qkv, cos, sin, q, kk, qkv.stride(0), cos.stride(0), C, NH=heads, D=D, HALF=D // 2,
                    BLOCK_H=k["next_pow2"](heads), BLOCK_J=k["next_pow2"](D // 2), num_warps=4)
    return q, kk


def warm(dim: int, heads: int, dtype: torch.dtype, device: torch.device, fp8: bool = False) -> float:
    """Load (or compile) the kernels (with ``fp8``, the FP8 path's too) for a model of this width on ``device``, on one-row inputs:
    Triton specialises on dtypes, strides and alignment, not on the number of rows, so the loop's
    calls find them ready. Returns the seconds it took (importing triton included)."""
    import time
    t = time.perf_counter()
    x = torch.zeros(1, dim, dtype=torch.float32, device=device)   # the fp32 residual stream
    w = torch.ones(dim, dtype=torch.float32, device=device)
    add_layernorm(x, torch.zeros(1, dim, dtype=dtype, device=device), w, w, dtype)
    add_layernorm(x, None, w, w, dtype)
    d = dim // heads
    rope_qk(torch.zeros(1, 3 * dim, dtype=dtype, device=device), torch.zeros(1, d // 2, device=device),
            torch.zeros(1, d // 2, device=device), heads)
    if fp8:
        add_layernorm_fp8(x, torch.zeros(1, dim, dtype=dtype, device=device), w, w)
        add_layernorm_fp8(x, None, w, w)
        quantize_rows(torch.zeros(1, dim, dtype=dtype, device=device))
        quantize_rows(torch.zeros(1, 4 * dim, dtype=dtype, device=device), gelu=True)
    return time.perf_counter() - t
