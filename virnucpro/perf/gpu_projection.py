"""`virnucpro bench --project`: the 1M-read time on GPUs we cannot rent, projected from a measured
per-GPU ESM-2 throughput and the GPUs' published peak tensor figures. A projection, not a guess:
every input is a measurement or a published figure, and every assumption is printed with the table.

    per-GPU ESM-2 tok/s (fp16)  = measured tok/s x peak16(target) / peak16(measured GPU)   MFU carried over
    per-GPU ESM-2 tok/s (fp8)   = fp16 tok/s / (g / s8 + 1 - g)        only the GEMMs (share g) speed up, by s8
    ESM-2 s per 1M reads        = tokens per read x 1e6 / per-GPU tok/s
    rest s per 1M reads         = ESM-2 s (fp16) x rest share           DNABERT-S, classifier, host work: per
                                                                         read, as measured (fp16 also under fp8)
    wall(n GPUs)                = start-up + (ESM-2 s + rest s) / (n x e),  e = 1 for one GPU, else the
                                                                         measured 2-GPU speedup / 2

Peaks are dense (no sparsity) tensor-core figures with fp32 accumulation, the way the fast engine's
GEMMs run (cuBLAS computes fp16 GEMMs in fp32, and FP8 GEMMs only with fp32 compute). Defaults for the
measurement are the H200 gate's figures (docs/benchmarks.md#h200-gate); ``--from bench.json`` or
``--tokens-per-s`` replace them. Assumptions not modelled: a 24 GiB card runs smaller batches (its
token budget) and its own host; PCIe instead of NVLink only matters for model loading here (no
traffic between GPUs during a run).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from virnucpro.errors import InputError

MILLION = 1_000_000


@dataclass(frozen=True)
class GpuPeak:
    name: str
    fp16_tflops: float     # dense fp16/bf16 tensor, fp32 accumulate
    fp8_tflops: float      # dense fp8 (e4m3) tensor, fp32 accumulate
    source: str


PEAKS = {
    "rtx4090": GpuPeak("RTX 4090", 165.2, 330.3,
                       "NVIDIA Ada GPU architecture whitepaper, appendix A (GeForce RTX 4090): FP16/BF16 tensor "
                       "with FP32 accumulate 165.2 dense, FP8 with FP32 accumulate 330.3 dense (FP32 accumulate is "
                       "half rate on GeForce; cuBLAS FP8 GEMMs need FP32 compute: NVIDIA developer forum thread "
                       "'Fp8/fp16 accumulation on ada RTX 4090', 2024)"),
    "h100": GpuPeak("H100 SXM5", 989.4, 1978.9,
                    "NVIDIA H100 datasheet: BF16/FP16 tensor 1,979 and FP8 3,958 TFLOPS with sparsity, half without"),
    "h200": GpuPeak("H200 SXM", 989.4, 1978.9,
                    "NVIDIA H200 datasheet: the H100's tensor rates (BF16/FP16 1,979, FP8 3,958 with sparsity) "
                    "with 141 GB HBM3e"),
}


@dataclass(frozen=True)
class Measured:
    """One GPU's measured run, reduced to what the projection needs."""
    gpu: str                       # a PEAKS key
    tokens_per_s: float            # ESM-2 tokens/s per GPU (fp16 or bf16: the same tensor peak)
    tokens_per_read: float         # ESM-2 tokens per input read
    rest_share: float              # per-read time outside ESM-2 over ESM-2's (fp16)
    startup_s: float               # fixed time per run: process start-up + model loading (not scaled)
    scaling_2gpu: float            # measured speedup of the per-read work on 2 GPUs
    gemm_share: float              # share of ESM-2's GPU time in the four GEMMs
    fp8_gemm_speedup: float        # fp8 over fp16 GEMM time at ESM-2's shapes
    source: str
    # ESM-2 tok/s of the FP8 path as built over the fp16 path's, measured side by side (quantising
    # passes included); None: only the GEMMs speed up, by fp8_gemm_speedup (the first estimate)
    fp8_esm_speedup: float | None = None


# the H200 gate (docs/benchmarks.md#h200-gate): 100,000 reads in 48.4 s, 1M projection 451 s, ESM-2
# 99,456 tok/s over 41.29 s (4,106,056 tokens), 3.7 s start-up + loading; the rest of the per-read
# work = 451 - 3.7 - 412.9 s of ESM-2 per 1M reads. Two GPUs: the GPU work divided 1.98x at 600,000
# reads (#h200-scaling). GEMMs ~545 of 640.3 ms of a batch (#h200-esm2). FP8 GEMMs: 1.62x the bf16
# ones at the 3B shapes, 65,536 tokens, torch._scaled_mm with row-wise scales (H100; issue 19).
# The FP8 path as built (models/esm2_fp8.py): 118,958.9 vs 100,356.0 ESM-2 tok/s, fp8 vs fp16 in one gate
# session on an H100 (docs/benchmarks.md#fp8), 1.185x: its quantising passes cost ~25% of a batch.
H200_GATE = Measured(gpu="h200", tokens_per_s=99_456, tokens_per_read=41.06056, rest_share=(451 - 3.7 - 412.86) / 412.86,
                     startup_s=3.7, scaling_2gpu=1.98, gemm_share=545 / 640.3, fp8_gemm_speedup=1.62,
                     source="the H200 gate, docs/benchmarks.md#h200-gate; fp8 from docs/benchmarks.md#fp8",
                     fp8_esm_speedup=118_958.9 / 100_356.0)


def gpu_key(name: str) -> str:
    """A PEAKS key from a GPU's name as torch reports it ("NVIDIA H200", "NVIDIA GeForce RTX 4090")."""
    low = name.lower().replace(" ", "")
    for key in ("rtx4090", "h100", "h200"):
        if key in low or (key == "rtx4090" and "4090" in low):
            return key
    raise InputError(f"no published peak for GPU {name!r}: give --measured-on one of {', '.join(PEAKS)}")


def from_bench(bench: dict, **overrides) -> Measured:
    """A ``virnucpro bench`` result (bench.json) as the measurement: its fast-engine run's ESM-2
    tok/s, tokens per read (tok/s x embed_esm s / reads), rest share ((wall - load - ESM-2) / ESM-2)
    and model loading; the GPU from its name. A CPU run has no tensor peak to scale from."""
    fast = bench.get("fast") or {}
    stages = fast.get("stages") or {}
    if not bench.get("gpu") or not fast.get("esm_tokens_per_s") or not stages.get("embed_esm"):
        raise InputError("the bench result has no GPU run with ESM-2 figures to project from (a CPU run has no "
                         "tensor peak to scale); give --tokens-per-s and --measured-on instead")
    tps, esm_s = float(fast["esm_tokens_per_s"]), float(stages["embed_esm"])
    load = float(stages.get("load_models", 0.0))
    m = replace(H200_GATE, gpu=gpu_key(bench["gpu"]), tokens_per_s=tps, tokens_per_read=tps * esm_s / fast["reads"],
                rest_share=max(0.0, fast["wall_s"] - load - esm_s) / esm_s, startup_s=load,
                source=f"bench run {bench.get('date', '')} on {bench['gpu']} ({fast['reads']:,} reads)")
    return replace(m, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Projection:
    gpu: str
    n_gpus: int
    precision: str
    tokens_per_s: float      # per GPU
    esm_s: float             # per 1M reads, one GPU
    rest_s: float            # per 1M reads, one GPU
    wall_s: float            # 1M reads on n_gpus


def project(m: Measured, gpu: str, n_gpus: int, precision: str, reads: int = MILLION) -> Projection:
    if gpu not in PEAKS or m.gpu not in PEAKS:
        raise InputError(f"unknown GPU {gpu if gpu not in PEAKS else m.gpu!r}: one of {', '.join(PEAKS)}")
    if precision not in ("fp16", "fp8") or n_gpus < 1:
        raise InputError(f"precision fp16 or fp8 on >= 1 GPU, not {precision} on {n_gpus}")
    fp16 = m.tokens_per_s * PEAKS[gpu].fp16_tflops / PEAKS[m.gpu].fp16_tflops
    if precision == "fp16":
        tps = fp16
    elif m.fp8_esm_speedup is not None:
        tps = fp16 * m.fp8_esm_speedup
    else:
        tps = fp16 / (m.gemm_share / m.fp8_gemm_speedup + 1 - m.gemm_share)
    tokens = m.tokens_per_read * reads
    esm_s, rest_s = tokens / tps, tokens / fp16 * m.rest_share
    eff = 1.0 if n_gpus == 1 else m.scaling_2gpu / 2
    return Projection(gpu, n_gpus, precision, tps, esm_s, rest_s, m.startup_s + (esm_s + rest_s) / (n_gpus * eff))


DEFAULT_ROWS = [("rtx4090", 1, "fp16"), ("rtx4090", 1, "fp8"), ("rtx4090", 2, "fp16"), ("rtx4090", 2, "fp8"),
                ("h100", 8, "fp16"), ("h100", 8, "fp8"), ("h200", 1, "fp8")]


def projection_lines(m: Measured, rows=None) -> list[str]:
    """The table (the measured GPU itself first: it must give back the measured projection) and the
    assumptions it rests on."""
    rows = [(m.gpu, 1, "fp16")] + list(rows or DEFAULT_ROWS)
    mfu = m.tokens_per_s * 24 * 36 * 2560 ** 2 / (PEAKS[m.gpu].fp16_tflops * 1e12)
    lines = [f"\nprojection to {MILLION:,} reads from {m.source}: {m.tokens_per_s:,.0f} ESM-2 tok/s on one "
             f"{PEAKS[m.gpu].name} = {mfu:.1%} of its published fp16 peak (ESM-2 3B FLOPs)",
             f"{'GPUs':>4s} {'GPU':10s} {'precision':9s} {'ESM-2 tok/s per GPU':>20s} {'ESM-2 s':>8s} {'rest s':>7s} "
             f"{'1M reads':>9s}"]
    for gpu, n, prec in rows:
        p = project(m, gpu, n, prec)
        lines.append(f"{n:>4d} {PEAKS[gpu].name:10s} {prec:9s} {p.tokens_per_s:>20,.0f} {p.esm_s:>8.0f} {p.rest_s:>7.0f} "
                     f"{p.wall_s:>7.0f} s")
    lines += ["assumptions:",
              f"  MFU carried over: each GPU reaches the measured share of its published dense fp16 peak "
              f"({', '.join(f'{p.name} {p.fp16_tflops:g}' for p in PEAKS.values())} TFLOPS; fp8 "
              f"{', '.join(f'{p.fp8_tflops:g}' for p in PEAKS.values())}; fp32 accumulate)",
              (f"  fp8: ESM-2 {m.fp8_esm_speedup:.3f}x the fp16 path's tokens/s, as measured side by side (the FP8 path "
               "as built, its quantising passes included; its labels miss the 99.9% agreement: opt-in); DNABERT-S stays fp16"
               if m.fp8_esm_speedup is not None else
               f"  fp8: only the GEMMs ({m.gemm_share:.0%} of ESM-2's time) speed up, {m.fp8_gemm_speedup:.2f}x (measured at "
               "the 3B shapes), quantization fused into the kernels that write the activations; DNABERT-S stays fp16"),
              f"  ESM-2 tokens per read {m.tokens_per_read:.2f}; the rest of the per-read work {m.rest_share:.1%} of "
              "ESM-2's fp16 time on every GPU",
              f"  several GPUs: the per-read work divides by n x {m.scaling_2gpu / 2:.3f} (the 2-GPU speedup "
              f"{m.scaling_2gpu:.2f}x / 2, also for 8 GPUs); start-up + model loading {m.startup_s:.1f} s once, as measured",
              "  not modelled: a 24 GiB card's smaller token budget, another host's CPU and disk",
              "sources:"] + [f"  {p.name}: {p.source}" for p in PEAKS.values()]
    return lines
