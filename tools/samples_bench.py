"""Many samples in one predict vs one predict per sample: wall time, model loading, device busy share, same outputs (docs/benchmarks.md#samples).

    python tools/samples_bench.py                                   # 20 x 5,000 reads, tiny models, CPU
    python tools/samples_bench.py --device cuda --models models/full --samples 20 --reads 5000

Writes N samples of simulated reads (``virnucpro reads synth``'s generator, seeds SEED..SEED+N-1)
into --workdir, runs one warm-up ``predict`` (untimed: the models' files into the page cache, the
kernels' caches), then, side by side in this one run and on the same device:

  A. N separate ``python -m virnucpro predict SAMPLE -o DIR`` commands, one after the other;
  B. one ``python -m virnucpro predict S1 S2 ... SN -o OUTROOT`` (one sub-directory per sample).

It prints and writes (--json) the wall time of each (the commands as a user would launch them: the
process start, imports and CUDA initialisation included), the time the runs spent loading models
(the load_models stage of each sample's telemetry; with worker processes, the slowest worker's
start-up), the device's busy share (the embedding windows
of all samples, run.json's embed_wall_s, over the wall time: what is left is the host's time between
samples, when the GPU idles), and checks that every sample's prediction files are byte-identical
between A and B (exit 1 if not). Without --models a tiny synthetic model set is written first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv", "viral_reads.fa")


def parse_args(argv=None) -> argparse.Namespace:
    doc = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20, help="number of samples (default 20)")
    p.add_argument("--reads", type=int, default=5000, help="reads per sample (default 5000)")
    p.add_argument("--models", type=Path, default=None,
                   help="model directory (default: a tiny synthetic set written into --workdir)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both modes use it; default cpu)")
    p.add_argument("--seed", type=int, default=100, help="first sample's seed (default 100)")
    p.add_argument("--workdir", type=Path, default=None, help="where reads and outputs go (default: a temp dir, removed)")
    p.add_argument("--extra", default="", help="more predict options for both modes, e.g. '--threads 8'")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p.parse_args(argv)


def predict(args, inputs: list[Path], out: Path, models: Path) -> float:
    """One ``virnucpro predict`` command; its wall time (s). Exit status must be 0."""
    cmd = [sys.executable, "-m", "virnucpro", "predict", *map(str, inputs), "-o", str(out), "--models", str(models),
           "--device", args.device, "--no-progress", *args.extra.split()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"predict failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall


def run_figures(outdir: Path) -> dict:
    """A sample's embedding window and model loading, from its run.json and telemetry."""
    from virnucpro.core.telemetry import read_telemetry
    summary = json.loads((outdir / "run.json").read_text())["summary"]
    events = read_telemetry(outdir / "virnucpro.log")
    load = next((e for e in events if e["event"] == "stage" and e["stage"] == "load_models"), {})
    loading = load.get("load_total_s")
    if loading is None:   # worker processes (--workers/--gpus > 1): their start-up, the slowest one's
        loading = max((e.get("startup_s", 0.0) for e in events if e["event"] == "worker_start"), default=0.0)
    return {"embed_wall_s": summary["embed_wall_s"], "load_total_s": loading,
            "wall_s": summary["wall_s"], "reads": summary["reads"], "frames": summary["frames"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from virnucpro.workloads.reads import write_reads_fasta
    work = args.workdir or Path(tempfile.mkdtemp(prefix="samples-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        models = args.models
        if models is None:
            from virnucpro.models.synth import synth
            models = work / "models-tiny"
            if not models.exists():
                synth(models, "tiny", seed=0, device="cpu")
        reads = []
        for k in range(args.samples):
            p = work / "reads" / f"s{k:02d}.fa"
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                write_reads_fasta(p, args.reads, seed=args.seed + k)
            reads.append(p)
        for d in ("warm", "separate", "multi"):
            shutil.rmtree(work / d, ignore_errors=True)
        predict(args, reads[:1], work / "warm", models)   # untimed

        t_sep = [predict(args, [r], work / "separate" / r.stem, models) for r in reads]
        t_multi = predict(args, reads, work / "multi", models)

        sep = [run_figures(work / "separate" / r.stem) for r in reads]
        mul = [run_figures(work / "multi" / r.stem) for r in reads]
        differ = [f"{r.stem}/{name}" for r in reads for name in FILES
                  if (work / "separate" / r.stem / name).read_bytes() != (work / "multi" / r.stem / name).read_bytes()]
        wall_sep = sum(t_sep)
        fig = {
            "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "device": args.device,
            "models": str(args.models or "tiny synthetic"), "samples": args.samples, "reads_per_sample": args.reads,
            "extra": args.extra,
            "separate": {"wall_s": round(wall_sep, 2), "per_sample_wall_s": [round(t, 2) for t in t_sep],
                         "load_models_s": round(sum(f["load_total_s"] for f in sep), 2),
                         "embed_s": round(sum(f["embed_wall_s"] for f in sep), 2)},
            "multi": {"wall_s": round(t_multi, 2),
                      "per_sample_run_s": [round(f["wall_s"], 2) for f in mul],
                      "load_models_s": round(sum(f["load_total_s"] for f in mul), 2),
                      "embed_s": round(sum(f["embed_wall_s"] for f in mul), 2)},
            "speedup": round(wall_sep / t_multi, 3) if t_multi else None,
            "identical_outputs": not differ, "differing": differ,
        }
        for m in ("separate", "multi"):
            f = fig[m]
            f["busy_share"] = round(f["embed_s"] / f["wall_s"], 3) if f["wall_s"] else None
            f["idle_per_sample_s"] = round((f["wall_s"] - f["embed_s"]) / args.samples, 3)   # device waits for the host
        print(f"{args.samples} samples x {args.reads:,} reads on {args.device} ({fig['models']}):")
        print(f"  {'':24s}{'wall s':>10s}{'load models s':>15s}{'embedding s':>13s}{'busy share':>12s}"
              f"{'idle s/sample':>15s}")
        for name, key in (("separate commands (A)", "separate"), ("one command (B)", "multi")):
            f = fig[key]
            print(f"  {name:24s}{f['wall_s']:>10.2f}{f['load_models_s']:>15.2f}{f['embed_s']:>13.2f}"
                  f"{f['busy_share']:>12.1%}{f['idle_per_sample_s']:>15.3f}")
        print(f"  one command is {fig['speedup']}x the separate commands; per sample "
              f"{wall_sep / args.samples:.2f} s -> {t_multi / args.samples:.2f} s")
        print(f"  prediction files identical: {'yes' if not differ else 'NO: ' + ', '.join(differ[:5])}")
        if args.json:
            args.json.write_text(json.dumps(fig, indent=2) + "\n")
        return 0 if not differ else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
