"""Micro-benchmark of the packed ESM-2 forward on one GPU (the anchor workload of
shared/docs/prior-art-and-anchors.md: random proteins of 40-100 aa, ~1.44 M tokens).

    python scripts/esm_microbench.py --models DIR [--budgets 16384,32768,65536] [--profile]
    python scripts/esm_microbench.py --models DIR --dtype fp16 --compile --budgets 65536 \
        --variants base,v_view,chain,halfres,chain+v_view,chain+v_view+gelu_ep [--profile]

``--kernels compile,triton,triton-nopad`` times the element-wise kernel implementations of the fast
engine (torch.compile / the Triton kernels; ``-nopad``: batches not padded to the budget, as the engine
runs the Triton kernels) on the same batches in one process, GELU epilogue on, and prints each one's
largest embedding difference from the first.

``--variants`` (with --compile) times the kernel groupings of ``esm2_fast.OPTIONS`` (and ``halfres``:
residual stream in the matmul dtype) one after the other in one process, on the same batches, and
prints each one's largest embedding difference from the first variant.

Prints tokens/s and MFU (vs the measured bf16 matmul peak) per budget, and optionally the top
CUDA kernels of one batch (torch.profiler) so we can see where the time goes.
"""

import argparse
import time

import numpy as np
import torch

from virnucpro.engines.fast import matmul_peak_tflops
from virnucpro.plan.packing import pack_ffd
from virnucpro.models.esm2_fast import PackedESM2, flops_per_token, tokenize
from virnucpro.models.layout import _find_esm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--budgets", default="16384,32768,65536")
    ap.add_argument("--tokens", type=int, default=1_440_000)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--variants", default=None)
    ap.add_argument("--kernels", default=None)
    a = ap.parse_args()
    if a.variants:
        return variants(a)
    if a.kernels:
        return kernels(a)
    dev = torch.device("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    if a.compile:
        from virnucpro.models import esm2_fast
        esm2_fast.compile_kernels()
    peak = matmul_peak_tflops(dev)
    model, alphabet = PackedESM2.from_checkpoint(_find_esm(__import__("pathlib").Path(a.models)), dev, dtype)
    prots, lens = _anchor(a.tokens)
    fpt = flops_per_token(model.num_layers, model.embed_dim)
    print(f"peak bf16 matmul {peak} TFLOP/s; {len(prots)} proteins, {lens.sum():,} tokens; "
          f"{fpt / 1e9:.2f} GFLOP/token")
    for budget in map(int, a.budgets.split(",")):
        batches = pack_ffd(lens, budget)
        host = []
        for b in batches:
            tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b], pad_to=budget if a.compile else None)
            host.append((torch.from_numpy(tok).long().to(dev), torch.from_numpy(cu).to(dev),
                         torch.from_numpy(pos).long().to(dev), mx))
        with torch.inference_mode():
            for t in host[:2]:
                model(*t)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for t in host:
                h = model(*t)
                PackedESM2.mean_residues(h, t[1])  # (includes the padding pseudo-sequences: cheap)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        tps = lens.sum() / dt
        print(f"budget {budget:6d}: {len(batches)} batches, {tps:,.0f} tok/s, MFU {tps * fpt / (peak * 1e12):.1%}, "
              f"peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        torch.cuda.reset_peak_memory_stats()
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        t = host[len(host) // 2]
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(*t)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))


def variants(a):
    from virnucpro.models import esm2_fast
    dev, dtype, peak, model, alphabet, prots, lens, fpt, budget = _setup(a)
    host = []
    for b in pack_ffd(lens, budget):
        tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b], pad_to=budget)
        host.append((torch.from_numpy(tok).long().to(dev), torch.from_numpy(cu).to(dev),
                     torch.from_numpy(pos).long().to(dev), mx, len(b)))
    print(f"peak {peak} TFLOP/s; {len(host)} batches of {budget}; {lens.sum():,} tokens; {a.dtype}")
    ref = None
    for name in a.variants.split(","):
        parts = set(name.split("+"))
        esm2_fast.OPTIONS.update(v_view="v_view" in parts, chain="chain" in parts, gelu_epilogue="gelu_ep" in parts)
        model.residual_dtype = dtype if "halfres" in parts else torch.float32
        torch._dynamo.reset()
        t0 = time.perf_counter()
        esm2_fast.compile_kernels()
        ref = _time_variant(f"variant {name:24s}", model, host, lens, fpt, peak, ref, t0, a.profile)


def kernels(a):
    from virnucpro.models import esm2_fast
    dev, dtype, peak, model, alphabet, prots, lens, fpt, budget = _setup(a)
    batches = pack_ffd(lens, budget)
    esm2_fast.OPTIONS.update(v_view=True, chain=True, gelu_epilogue=True)
    print(f"peak {peak} TFLOP/s; {len(batches)} batches of {budget}; {lens.sum():,} tokens; {a.dtype}; GELU epilogue")
    ref = None
    for name in a.kernels.split(","):
        pad = not name.endswith("-nopad")
        host = []
        for b in batches:
            tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b], pad_to=budget if pad else None)
            host.append((torch.from_numpy(tok).long().to(dev), torch.from_numpy(cu).to(dev),
                         torch.from_numpy(pos).long().to(dev), mx, len(b)))
        t0 = time.perf_counter()
        if name.startswith("compile"):
            esm2_fast.compile_kernels()
        elif name.startswith("triton"):
            esm2_fast.triton_kernels()
        else:
            esm2_fast.eager_kernels()
        ref = _time_variant(f"kernels {name:14s}", model, host, lens, fpt, peak, ref, t0, a.profile)


def _setup(a):
    """The GPU, dtype, measured peak, model, anchor proteins and budget of a comparison run."""
    dev = torch.device("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    peak = matmul_peak_tflops(dev)
    model, alphabet = PackedESM2.from_checkpoint(_find_esm(__import__("pathlib").Path(a.models)), dev, dtype)
    prots, lens = _anchor(a.tokens)
    fpt = flops_per_token(model.num_layers, model.embed_dim)
    return dev, dtype, peak, model, alphabet, prots, lens, fpt, int(a.budgets.split(",")[-1])


def _time_variant(label, model, host, lens, fpt, peak, ref, t0, profile):
    """Time ``model`` over the batches ``host`` (after the first batch, which may compile, since
    ``t0``); print tokens/s, MFU, ms per batch, and the largest embedding difference of the first
    batch from ``ref`` (the first variant's); optionally a profile of one batch. Returns ``ref``."""
    with torch.inference_mode():
        first = PackedESM2.mean_residues(model(*host[0][:4]), host[0][1])[:host[0][4]]
        torch.cuda.synchronize()
        t_first = time.perf_counter() - t0
        model(*host[1][:4])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for t in host:
            PackedESM2.mean_residues(model(*t[:4]), t[1])
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    diff = 0.0 if ref is None else float((first - ref).abs().max())
    tps = lens.sum() / dt
    print(f"{label}: {tps:,.0f} tok/s, MFU {tps * fpt / (peak * 1e12):.1%}, {dt / len(host) * 1e3:.1f} ms/batch, "
          f"set-up+first batch {t_first:.1f} s, max |emb - first| {diff:.2e}", flush=True)
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(*host[len(host) // 2][:4])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    return first if ref is None else ref


def _anchor(tokens):
    rng = np.random.default_rng(0)
    aas = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    prots, total = [], 0
    while total < tokens:
        n = int(rng.integers(40, 101))
        prots.append("".join(rng.choice(aas, n)))
        total += n + 2
    return prots, np.array([len(p) + 2 for p in prots])


if __name__ == "__main__":
    main()
