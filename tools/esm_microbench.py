"""Micro-benchmark of the packed ESM-2 forward on one GPU: tokens/s, MFU (model FLOPs over the bf16
matmul peak measured in the same process) and ms per batch on the anchor workload -- random proteins of
40-100 residues, ~1.44 M tokens, packed first-fit-decreasing into batches of --budgets tokens -- for
each element-wise kernel implementation in --kernels, one after the other on the same batches, with
each one's largest embedding difference from the first; with --profile the top CUDA kernels of one
batch (torch.profiler), i.e. where a batch's time goes.

--kernels names: triton (the fast engine's on a GPU), eager (plain PyTorch ops, `--no-compile`),
compile (torch.compile, static shapes). A name ending in -nopad runs the batches as packed, as the
engine runs the Triton kernels; without it they are padded to the budget, as torch.compile's static
shapes need. Re-checks docs/benchmarks.md#h200-esm2 (the Triton kernels against torch.compile):

    python tools/esm_microbench.py --models /tmp/models --budgets 65536 --kernels compile,triton,triton-nopad --profile

--dtype takes a comma-separated list: each precision's model is loaded in turn (the previous one freed)
and timed on the same batches, so `--dtype fp16,fp8` is the FP8 path against the product's fp16 one
side by side (docs/benchmarks.md#fp8), with the fp8 embeddings' cosine to the first precision's.
"""

from __future__ import annotations

import argparse
import time

KERNELS = ("triton", "eager", "compile")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="a models folder holding the ESM-2 checkpoint (and the rest of a set)")
    ap.add_argument("--budgets", default="65536",
                    help="comma-separated token budgets per packed batch (default 65536, the engine's on an H200)")
    ap.add_argument("--tokens", type=int, default=1_440_000,
                    help="size of the anchor workload in tokens, BOS/EOS included (default 1,440,000)")
    ap.add_argument("--dtype", default="fp16",
                    help="comma-separated matmul precisions, each timed in turn: fp16 (the product's default), "
                         "bf16, fp8 (ESM-2's GEMMs in e4m3: models/esm2_fp8.py)")
    ap.add_argument("--kernels", default="triton-nopad",
                    help="comma-separated element-wise kernels to compare: triton, eager, compile, each optionally "
                         "with -nopad (default triton-nopad, as the engine runs)")
    ap.add_argument("--gelu", default="tanh-epilogue", choices=["tanh-epilogue", "exact"],
                    help="fc1's GELU: tanh approximation in the GEMM epilogue (the engine's default in fp16/bf16) "
                         "or the exact GELU as a separate pass")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one batch per implementation")
    a = ap.parse_args(argv)
    for d in a.dtype.split(","):
        if d not in ("fp16", "bf16", "fp8"):
            ap.error(f"--dtype: unknown {d!r} (choose from fp16, bf16, fp8)")
    for name in a.kernels.split(","):
        if name.removesuffix("-nopad") not in KERNELS:
            ap.error(f"--kernels: unknown {name!r} (choose from {', '.join(KERNELS)}, each optionally with -nopad)")
    return a


def select_kernels(model, name: str, gelu_epilogue: bool) -> None:
    """Make ``name``'s element-wise kernels and the GELU form the ones ``model`` runs. ``compile`` (the
    engine no longer has it: docs/benchmarks.md#exp-esm-compile) is the eager functions through
    torch.compile with static shapes, registered here under that name."""
    from virnucpro.models import esm2_fast
    kind = name.removesuffix("-nopad")
    if kind == "compile" and kind not in esm2_fast.KERNEL_SETS:
        import torch
        e = esm2_fast.EAGER
        esm2_fast.KERNEL_SETS[kind] = esm2_fast.KernelSet(
            *(torch.compile(f, dynamic=False) for f in (e.pre, e.post, e.post_pre)))
    model.set_kernels(kind, "tanh-epilogue" if gelu_epilogue else "exact")


def anchor(tokens: int, seed: int = 0):
    """Random proteins of 40-100 residues until ``tokens`` (BOS/EOS included); their token lengths."""
    import numpy as np
    rng = np.random.default_rng(seed)
    aas = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    prots, total = [], 0
    while total < tokens:
        n = int(rng.integers(40, 101))
        prots.append("".join(rng.choice(aas, n)))
        total += n + 2
    return prots, np.array([len(p) + 2 for p in prots])


def main(argv=None) -> None:
    a = parse_args(argv)
    import torch

    from virnucpro.engines.fast import matmul_peak_tflops
    from virnucpro.engines.fast.engine import DTYPES
    from virnucpro.models.esm2_fast import PackedESM2, flops_per_token
    from virnucpro.models.layout import resolve

    dev = torch.device("cuda")
    peak = matmul_peak_tflops(dev)
    prots, lens = anchor(a.tokens)
    refs: dict[int, object] = {}   # budget -> the first precision's first-batch embeddings
    for dname in a.dtype.split(","):
        dtype = DTYPES[dname]   # the weights' load dtype (fp8: fp16, then quantised)
        model = None
        torch.cuda.empty_cache()
        model, alphabet = PackedESM2.from_checkpoint(resolve(a.models, 300, fingerprint=False).esm, dev, dtype)
        if dname == "fp8":
            model.to_fp8()
            torch.cuda.empty_cache()
        fpt = flops_per_token(model.num_layers, model.embed_dim)
        print(f"peak bf16 matmul {peak} TFLOP/s; {len(prots)} proteins, {lens.sum():,} tokens; "
              f"{fpt / 1e9:.2f} GFLOP/token; {dname}"
              f"{f' (GEMM output {model.out_dtype})' if dname == 'fp8' else ''}; GELU {'exact' if dname == 'fp8' else a.gelu}")
        run_budgets(a, model, alphabet, prots, lens, fpt, peak, refs, dname)
        del model


def run_budgets(a, model, alphabet, prots, lens, fpt, peak, refs, dname) -> None:
    import torch

    from virnucpro.models.esm2_fast import tokenize
    from virnucpro.plan.packing import pack_ffd
    dev = torch.device("cuda")
    for budget in map(int, a.budgets.split(",")):
        batches = pack_ffd(lens, budget)
        ref = refs.get(budget)
        for name in a.kernels.split(","):
            host = []
            for b in batches:
                tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b],
                                            pad_to=None if name.endswith("-nopad") else budget)
                host.append((torch.from_numpy(tok).long().to(dev), torch.from_numpy(cu).to(dev),
                             torch.from_numpy(pos).long().to(dev), mx, len(b)))
            t0 = time.perf_counter()
            select_kernels(model, name, a.gelu == "tanh-epilogue")
            ref = time_kernels(f"{dname} budget {budget:6d}, {len(host)} batches, kernels {name:13s}", model, host,
                               lens, fpt, peak, ref, t0, a.profile)
            refs.setdefault(budget, ref)
            torch.cuda.reset_peak_memory_stats()


def time_kernels(label, model, host, lens, fpt, peak, ref, t0, profile):
    """Time ``model`` over the batches ``host`` (after the first two, which may compile; set-up counted
    from ``t0``); print tokens/s, MFU, ms per batch, peak memory and the largest embedding difference
    of the first batch from ``ref`` (the first implementation's); optionally a profile of one batch.
    Returns ``ref``, or this run's first-batch embeddings when there was none."""
    import torch

    from virnucpro.models.esm2_fast import PackedESM2
    with torch.inference_mode():
        first = PackedESM2.mean_residues(model(*host[0][:4]), host[0][1])[:host[0][4]]   # [sequences, C]
        torch.cuda.synchronize()
        t_first = time.perf_counter() - t0
        model(*host[1 % len(host)][:4])
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        for t in host:
            PackedESM2.mean_residues(model(*t[:4]), t[1])
        torch.cuda.synchronize()
        dt = time.perf_counter() - t1
    diff = 0.0 if ref is None else float((first - ref).abs().max())
    cos = 1.0 if ref is None else float(torch.nn.functional.cosine_similarity(first.float(), ref.float(), dim=1).min())
    tps = lens.sum() / dt
    print(f"{label}: {tps:,.0f} tok/s, MFU {tps * fpt / (peak * 1e12):.1%}, {dt / len(host) * 1e3:.1f} ms/batch, "
          f"set-up+first batch {t_first:.1f} s, peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, "
          f"max |emb - first| {diff:.2e}, min cosine to first {cos:.6f}", flush=True)
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(*host[len(host) // 2][:4])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    return first if ref is None else ref


if __name__ == "__main__":
    main()
