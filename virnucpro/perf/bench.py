"""`virnucpro bench`: one command that makes a performance claim repeatable.

    virnucpro bench --workload reads100k --models ~/.cache/virnucpro/synthetic-full -o bench-out

1. models: the given directory, or (when it holds none) a synthetic ``full`` set written there
   (real ESM-2 3B / DNABERT-S architectures, random weights: real FLOPs, no biology). That is
   ~5.7 GB of disk: bench asks first on a terminal, and elsewhere writes it only with --yes;
2. workload: a named synthetic read set from real genomes (``virnucpro reads synth``);
3. the fast engine on the whole workload, with its telemetry summary;
4. side by side in the same process, on the first ``--reference-reads`` reads: the reference
   engine and the (already warm) fast engine, giving the speedup (end to end and of the embedding
   stages) and the label agreement (``virnucpro compare``);
5. a projection to 1,000,000 reads, as the performance gate makes it (``virnucpro.perf.projection``:
   model loading once, the rest scaled; no process start-up, the run is in this process).
Everything lands in OUT/bench.json and is printed as a table.

``--project`` runs nothing: it projects the 1M-read time on 1 and 2 RTX 4090s and 8 H100s (fp16 and
fp8) from a measured per-GPU ESM-2 throughput -- a bench run's (``--from OUT/bench.json``), given
tok/s (``--tokens-per-s N --measured-on h200``), or by default the H200 gate's -- and the GPUs'
published peaks, and prints the table with its assumptions (``virnucpro.perf.gpu_projection``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from virnucpro.errors import InputError
from virnucpro.perf.projection import MILLION, project_wall_s

WORKLOADS = {  # name -> (reads, seed, length profile)
    "reads1k": (1_000, 1, "respiratory"),
    "reads10k": (10_000, 1, "respiratory"),
    "reads100k": (100_000, 1, "respiratory"),
    "reads1m": (1_000_000, 1, "respiratory"),
}


FULL_SET_GB = 5.7   # a synthetic full set on disk (ESM-2 3B in fp16 is most of it)


def ensure_models(models: Path, preset: str, seed: int, device: str, yes: bool = False) -> Path:
    """``models``, or a synthetic ``preset`` set written there when it holds none. A full set (~5.7 GB)
    is written only with ``yes`` or after a yes on a terminal; else InputError saying how."""
    from virnucpro.models import synth
    if not (models / "SYNTHETIC.json").is_file() and not any(models.glob("esm2_*.pt")):
        if preset.startswith("full") and not yes and not _ask(f"no models in {models}: write a synthetic full set there "
                                                     f"(~{FULL_SET_GB} GB)? [y/N] "):
            raise InputError(f"no models in {models}: writing a synthetic full set there takes ~{FULL_SET_GB} GB of "
                             "disk; add --yes to write it, --preset tiny for a small set, or --models DIR of a set "
                             "you have")
        print(f"no models in {models}: writing a synthetic {preset} set (seed {seed}) ...", flush=True)
        synth.synth(models, preset, seed, device)
    return models


def _ask(question: str) -> bool:
    """A yes from the user on a terminal; False without one (not a terminal, or end of input)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def ensure_workload(name: str, out: Path) -> Path:
    from virnucpro.workloads.reads import write_reads_fasta
    if name not in WORKLOADS:
        p = Path(name)
        if p.is_file():
            return p
        raise InputError(f"unknown workload {name!r}: one of {', '.join(WORKLOADS)} or a FASTA path")
    n, seed, profile = WORKLOADS[name]
    path = out / f"{name}.fa"
    if not path.is_file():
        write_reads_fasta(path, n=n, seed=seed, length_profile=profile)
    return path


def run_bench(args) -> dict:
    from virnucpro.perf.compare import compare_dirs
    from virnucpro.perf.gate import head_fasta
    from virnucpro.options import PredictOptions, resolve_device
    from virnucpro.pipeline import predict

    out = Path(args.outdir)
    device = resolve_device(args.device)
    from virnucpro.engines.config import EngineConfig
    # the CLI fills args.engine_config (with the environment's experiment switches)
    config = getattr(args, "engine_config", None) or EngineConfig(precision=args.precision,
                                                                  gpu_memory_gib=args.gpu_memory_gib)
    if config.precision == "fp8":   # refused before models or workloads are written, not by the engine later
        from virnucpro.models.esm2_fp8 import refuse_unsupported
        refuse_unsupported(device)
    models = ensure_models(Path(args.models), args.preset, args.seed, device, args.yes)
    out.mkdir(parents=True, exist_ok=True)
    workload = ensure_workload(args.workload, out)

    def run(inp: Path, sub: str, engine: str) -> dict:
        opts = PredictOptions(input=inp, outdir=out / sub, chunk_length=args.chunk_length, models=str(models),
                              engine=engine, device=device, engine_config=config, progress=args.progress,
                              token_budget=args.token_budget if engine == "fast" else None,
                              use_tuned=getattr(args, "use_tuned", True),   # as predict: this GPU's tuned file
                              force=True)   # bench's own directories: a rerun replaces them
        return predict(opts)

    result: dict = {"workload": str(workload), "device": device, "precision": args.precision,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "models": str(models)}
    if device.startswith("cuda"):
        import torch
        result["gpu"] = torch.cuda.get_device_name(0)
        result["torch"] = torch.__version__
    # the whole workload first: it also warms the compile caches, so that the side-by-side runs
    # below compare steady-state engines (their one-time costs are reported apart)
    full = run(workload, "fast", "fast")
    result["fast"] = _pick(full)
    run_json = out / "fast" / "run.json"   # which tuned file filled the settings, if any
    result["tuned"] = json.loads(run_json.read_text()).get("tuned") if run_json.is_file() else None
    result["projection_1m_reads_s"] = projection_1m_s(full)
    if args.reference_reads:
        sub = out / "subsample.fa"
        head_fasta(workload, sub, args.reference_reads)
        ref = run(sub, "reference-sub", "reference")
        fast_sub = run(sub, "fast-sub", "fast")
        cmp = compare_dirs(out / "reference-sub", out / "fast-sub")
        result["side_by_side"] = {
            "reads": ref["reads"],   # the workload's first --reference-reads reads: fewer when it is smaller
            "reference": _pick(ref), "fast": _pick(fast_sub),
            "speedup_end_to_end": round(ref["wall_s"] / fast_sub["wall_s"], 2),
            "speedup_embedding": round(ref["embed_wall_s"] / fast_sub["embed_wall_s"], 2),
            "agreement": {m: {"agreement": c.agreement, "mismatches": c.n_mismatch, "n": c.n_both,
                              "mean_abs_score_diff": c.scores.mean_abs if c.scores else None,
                              "max_abs_score_diff": c.scores.max_abs if c.scores else None}
                          for m, c in cmp.modes.items()},
        }
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def projection_1m_s(summary: dict) -> float:
    """A run's summary projected to 1,000,000 reads as the gate projects it; the run was in this
    process, so model loading is its only fixed part."""
    return round(project_wall_s(summary["wall_s"], summary["stages"].get("load_models", 0.0), summary["reads"],
                                MILLION), 1)


def _pick(s: dict) -> dict:
    keys = ("wall_s", "embed_wall_s", "reads", "frames", "esm_tokens_per_s", "packing_efficiency", "gpu_util_mean",
            "mfu_esm", "peak_gpu_mem_gib", "io_wait_s", "stages", "precision", "engine")
    return {k: s.get(k) for k in keys}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the fast engine on a named workload (synthetic models)",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("--workload", default="reads100k",
                   help=f"one of {', '.join(WORKLOADS)} or a FASTA path (default: reads100k)")
    p.add_argument("--models", default=str(Path.home() / ".cache" / "virnucpro" / "synthetic-full"),
                   help="model directory; a synthetic set is written there when it holds none "
                   "(default: ~/.cache/virnucpro/synthetic-full)")
    p.add_argument("--preset", choices=("full", "tiny", "full-outliers", "tiny-outliers"), default="full",
                   help=f"preset of a synthetic set to write (default: full, ~{FULL_SET_GB} GB: asked on a "
                   "terminal, else needs --yes; full-outliers: with trained transformers' outlier channels)")
    p.add_argument("--yes", action="store_true", help=f"write a synthetic full set (~{FULL_SET_GB} GB) without asking")
    p.add_argument("--seed", type=int, default=0, help="seed of a synthetic set to write (default: 0)")
    p.add_argument("-o", "--outdir", default="bench-out", metavar="DIR",
                   help="directory for the workload, the runs and bench.json; a rerun replaces its runs "
                   "(default: bench-out)")
    p.add_argument("--out", dest="outdir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)   # the old spelling
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    from virnucpro.engines.config import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="the fast engine's precision (default: fp16; fp8 is experimental and needs FP8 tensor "
                   "cores: see predict --help)")
    p.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300, help="(default: 300)")
    p.add_argument("--reference-reads", type=int, default=2000,
                   help="reads of the workload to run through BOTH engines for speedup and agreement "
                   "(0: skip; default: 2000)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="ESM-2 tokens per packed batch (default: sized from free GPU memory)")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="size the budget as if the GPU had this memory (default: its real memory)")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="the fast engine's input-loader processes (default: the engine's, 2)")
    p.add_argument("--no-tuned", dest="use_tuned", action="store_false",
                   help="ignore this GPU's tuned file (virnucpro tune), as predict --no-tuned; bench.json records "
                   "which file and values the runs used")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    g = p.add_argument_group("projection to GPUs not at hand (--project runs nothing)")
    g.add_argument("--project", action="store_true",
                   help="print the 1M-read time projected on 1 and 2 RTX 4090s and 8 H100s (fp16 and fp8) from a "
                   "measured ESM-2 throughput and published GPU peaks, with its assumptions")
    g.add_argument("--from", dest="project_from", type=Path, metavar="BENCH_JSON",
                   help="the measurement: a bench run's bench.json (default: the H200 gate's figures)")
    g.add_argument("--tokens-per-s", type=float, help="the measurement: ESM-2 tokens/s per GPU (with --measured-on)")
    g.add_argument("--measured-on", choices=("h200", "h100", "rtx4090"), help="the GPU --tokens-per-s was measured on")
    g.add_argument("--tokens-per-read", type=float, help="ESM-2 tokens per read (default: the measurement's)")
    g.add_argument("--scaling-2gpu", type=float, help="measured 2-GPU speedup of the per-read work (default 1.98)")
    g.add_argument("--startup-s", type=float, help="fixed start-up + model loading per run (default: the measurement's)")
    p.set_defaults(func=cmd_bench)


def measurement(args):
    """The projection's measurement from the command line (gpu_projection.Measured)."""
    from dataclasses import replace
    from virnucpro.perf import gpu_projection as gp
    overrides = {"tokens_per_read": args.tokens_per_read, "scaling_2gpu": args.scaling_2gpu,
                 "startup_s": args.startup_s}
    if args.tokens_per_s is not None:
        if not args.measured_on:
            raise InputError("--tokens-per-s needs --measured-on (the GPU it was measured on)")
        m = replace(gp.H200_GATE, gpu=args.measured_on, tokens_per_s=args.tokens_per_s,
                    source=f"{args.tokens_per_s:,.0f} tok/s given, other figures the H200 gate's")
    elif args.project_from is not None:
        try:
            bench = json.loads(Path(args.project_from).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the bench result {args.project_from}: {exc}") from None
        return gp.from_bench(bench, **overrides)
    else:
        m = gp.H200_GATE
    return replace(m, **{k: v for k, v in overrides.items() if v is not None})


def cmd_bench(args) -> int:
    if args.project:
        from virnucpro.perf.gpu_projection import projection_lines
        for line in projection_lines(measurement(args)):
            print(line)
        return 0
    r = run_bench(args)
    for line in bench_lines(r):
        print(line)
    print(f"  details: {Path(args.outdir) / 'bench.json'}")
    return 0


def bench_lines(r: dict) -> list[str]:
    """bench.json's result as the lines printed at the end."""
    f = r["fast"]
    lines = [f"\nbench: {r['workload']} on {r.get('gpu', r['device'])} ({r['precision']})",
             f"  fast engine: {f['reads']:,} reads in {f['wall_s']:.1f} s; ESM-2 {f['esm_tokens_per_s'] or 0:,.0f} tok/s; "
             f"MFU {_pct(f['mfu_esm'])}; packing {_pct(f['packing_efficiency'])}; GPU util {_util(f['gpu_util_mean'])}",
             f"  projection to 1,000,000 reads: {r['projection_1m_reads_s']:.0f} s"]
    if "side_by_side" in r:
        s = r["side_by_side"]
        lines.append(f"  side by side on {s['reads']:,} reads: speedup {s['speedup_end_to_end']}x end to end, "
                     f"{s['speedup_embedding']}x embedding")
        for mode, a in s["agreement"].items():
            diff = "" if a["max_abs_score_diff"] is None else \
                f"; score difference mean {a['mean_abs_score_diff']:.1e}, max {a['max_abs_score_diff']:.1e}"
            lines.append(f"  {mode} label agreement with the reference engine: {_pct(a['agreement'], 2)} "
                         f"({a['mismatches']:,} of {a['n']:,} differ){diff}")
    return lines


def _pct(x, digits: int = 1) -> str:
    """A fraction as a percentage; n/a for None."""
    return "n/a" if x is None else f"{x:.{digits}%}"


def _util(x) -> str:
    """NVML's mean GPU utilisation (already in percent); n/a without a GPU."""
    return "n/a (no GPU)" if x is None else f"{x:.1f}%"
