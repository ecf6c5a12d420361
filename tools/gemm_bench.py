"""ESM-2 3B's four GEMM shapes (QKV, out_proj, fc1, fc2) at one packed batch, timed several ways on
one GPU: is there headroom in how the GEMMs are called? Prints TFLOP/s per shape and variant:

    linear      F.linear(x, W, b), W [out, in] as stored (what the fast engine runs; cuBLAS "TN")
    nn          torch.addmm(b, x, Wt) with Wt = W.t().contiguous() (the weight pre-transposed)
    gelu_ep     fc1 only: torch._addmm_activation(b, x, W.t(), use_gelu=True) (the GELU epilogue)
    tunable     F.linear under TunableOp (torch.cuda.tunable: every registered implementation of
                the GEMM benchmarked for the shape, the fastest kept)

and first the 8192^3 product, the kind of reference the engine's MFU divides by. The figures of
docs/benchmarks.md#h200-esm2 (GEMM headroom) came from

    python tools/gemm_bench.py --seconds 1.5
"""

from __future__ import annotations

import argparse
import time


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=65536,
                    help="rows of the activations, i.e. tokens per packed batch (default 65,536, the engine's budget)")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"], help="matmul dtype (default fp16)")
    ap.add_argument("--seconds", type=float, default=1.5, help="time each product for about this long (default 1.5)")
    ap.add_argument("--no-tunable", action="store_true", help="skip the TunableOp variant (it tunes for minutes)")
    return ap.parse_args(argv)


def timed(fn, seconds: float) -> float:
    """Seconds per call of ``fn`` (after one untimed call), over about ``seconds``."""
    import torch

    fn()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(5):
            fn()
        n += 5
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main(argv=None) -> None:
    a = parse_args(argv)
    import torch
    import torch.nn.functional as F
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    dev = torch.device("cuda")
    T, C = a.tokens, 2560
    shapes = {"qkv": (C, 3 * C), "out_proj": (C, C), "fc1": (C, 4 * C), "fc2": (4 * C, C)}
    n = 8192
    x8, w8 = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    s = timed(lambda: x8 @ w8, a.seconds)
    print(f"reference 8192^3: {2 * n ** 3 / s / 1e12:.1f} TFLOP/s")
    rows = []
    for name, (k, m) in shapes.items():
        x = torch.randn(T, k, device=dev, dtype=dt)
        w = torch.randn(m, k, device=dev, dtype=dt) * 0.02
        b = torch.zeros(m, device=dev, dtype=dt)
        wt = w.t().contiguous()
        flops = 2 * T * k * m
        res = {"linear": timed(lambda: F.linear(x, w, b), a.seconds),
               "nn": timed(lambda: torch.addmm(b, x, wt), a.seconds)}
        if name == "fc1":
            res["gelu_ep"] = timed(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True), a.seconds)
        rows.append((name, flops, res, (x, w, b)))
        for v, sec in res.items():
            print(f"{name:8s} {v:8s} {sec * 1e3:8.2f} ms  {flops / sec / 1e12:7.1f} TFLOP/s")
    if not a.no_tunable:
        import torch.cuda.tunable as tun
        tun.enable(True)
        tun.tuning_enable(True)
        tun.set_max_tuning_duration(200)
        tun.set_filename("/tmp/tunableop_results%d.csv")
        for name, flops, _, (x, w, b) in rows:
            t0 = time.perf_counter()
            F.linear(x, w, b)
            torch.cuda.synchronize()
            tune_s = time.perf_counter() - t0
            sec = timed(lambda: F.linear(x, w, b), a.seconds)
            print(f"{name:8s} tunable  {sec * 1e3:8.2f} ms  {flops / sec / 1e12:7.1f} TFLOP/s (tuning {tune_s:.1f} s)")
        try:
            for r in tun.get_results():
                print("  tuned:", r)
        except Exception as exc:  # noqa: BLE001
            print("  results:", exc)
        tun.enable(False)


if __name__ == "__main__":
    main()
