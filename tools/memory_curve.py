"""Peak memory (RSS) of ``virnucpro predict`` against the number of reads: the curve of
docs/benchmarks.md#memory.

    python tools/memory_curve.py --models models/tiny --reads 2000,20000           # the real run
    python tools/memory_curve.py --models models/tiny --reads 100000,1000000 --stub # host side only
    python tools/memory_curve.py --models models/tiny --reads 20000 --stub --trace  # who holds it

Each point is a fresh ``python -m virnucpro predict`` (one worker, ``--device cpu``, fp32) on reads
from ``virnucpro reads synth --seed 1`` (made once, kept in --workdir); its peak RSS is the kernel's
(``wait4``'s ru_maxrss: the largest of the command and its children). ``--stub`` replaces the fast
engine's networks by a stand-in that scores each frame from its index at once (same loop protocol:
claims, checkpoints, growing plan): everything per read on the host (reading, chunking, planning,
checkpoints, merge, output files) is the real code, without hours of tiny-model CPU embedding.
``--trace``: the child runs under tracemalloc and prints the largest holders of memory in the
snapshot (sampled every 0.25 s) nearest the traced peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class StubEngine:
    """The fast engine's loop without networks: each unit of ``source`` is "computed" at once, its
    scores a fixed function of the frame indices. Enough of the engine for ``worker.work``."""

    mfu_esm = None
    peak_tflops = None
    startup = None

    def run(self, prep, classifier, tel, source, on_unit, on_progress=None, stop=None, on_unit_start=None,
            more=None) -> dict:
        import numpy as np
        totals = {"dna_s": 0.0, "esm_s": 0.0, "cls_s": 0.0, "io_wait_s": 0.0, "esm_tokens": 0, "dna_tokens": 0,
                  "units": 0, "frames": 0, "oom_retries": 0, "stopped": False}
        while True:
            for u in source:
                if stop is not None and stop.is_set():
                    totals["stopped"] = True
                    break
                if on_unit_start is not None:
                    on_unit_start(u)
                frames = prep.unit(u).frames if hasattr(prep, "unit") else prep.plan.units[u].frames   # (an old tree)
                a = ((frames * 0.6180339887) % 1.0).astype(np.float32)
                scores = np.stack([a, 1 - a], axis=1)
                totals["units"] += 1
                totals["frames"] += len(frames)
                totals["esm_tokens"] += int(prep.unit_tokens[u])
                on_unit(u, frames, scores, {"frames": len(frames)})
                if on_progress:
                    on_progress(totals["frames"], totals["esm_tokens"])
            grown = more() if more is not None and not totals["stopped"] else None
            if grown is None:
                break
            prep, source = grown
        totals["busy_s"] = 0.0
        self.totals = totals
        return totals


def _child(args: argparse.Namespace, predict_args: list[str]) -> None:
    """In the measured process: optionally the stub engine and tracemalloc, then the command."""
    if args.stub:
        import virnucpro.engines as engines
        real = engines.make_engine
        engines.make_engine = lambda name, *a, **k: StubEngine() if name == "fast" else real(name, *a, **k)
    if args.trace:
        import threading
        import tracemalloc
        tracemalloc.start(args.trace_frames)
        best: list = [0, None]

        def sample() -> None:   # keep the snapshot taken nearest the traced peak
            while True:
                time.sleep(0.25)
                now = tracemalloc.get_traced_memory()[0]
                if now > best[0]:
                    best[:] = [now, tracemalloc.take_snapshot()]

        threading.Thread(target=sample, daemon=True).start()
        import atexit
        import multiprocessing.util as mpu
        exit_function = mpu._exit_function

        def report() -> None:   # (the command ends through os._exit after this)
            _top(f"the largest sample ({best[0] / 2**20:.1f} MiB)", best[1])
            print(f"tracemalloc peak: {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB", file=sys.stderr)
            exit_function()
        mpu._exit_function = report
        atexit.register(lambda: None)
    from virnucpro.cli import run
    run(predict_args)


def _top(when: str, snap, n: int = 14) -> None:
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"--- {when}: {total / 2**20:.1f} MiB traced; largest holders:", file=sys.stderr)
    for s in stats[:n]:
        fr = s.traceback[0]
        print(f"  {s.size / 2**20:8.1f} MiB {s.count:9d} blocks  {Path(fr.filename).name}:{fr.lineno}", file=sys.stderr)


def reads_file(workdir: Path, n: int) -> Path:
    path = workdir / f"reads_{n}.fa"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "virnucpro", "reads", "synth", "--n", str(n), "--seed", "1",
                        "-o", str(path)], check=True, env=_env(), stdout=subprocess.DEVNULL)
    return path


def _env(tree: Path = REPO) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env


def measure(args: argparse.Namespace, n: int) -> dict:
    reads = reads_file(args.workdir, n)
    out = args.workdir / f"out_{n}{'_stub' if args.stub else ''}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *(["--stub"] if args.stub else []),
           *(["--trace"] if args.trace else []), "--", "predict", str(reads), "-o", str(out), "--models",
           str(args.models), "--engine", "fast", "--device", "cpu", "--precision", "fp32", "--no-progress",
           *args.extra]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=_env(args.tree), stdout=subprocess.DEVNULL, stderr=None if args.trace else subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"reads={n}: exit {proc.returncode}\n{err}")
    summary = json.loads((out / "run.json").read_text())["summary"]
    return {"reads": n, "frames": summary["frames"], "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "wall_s": round(time.time() - t0, 1), "stub": args.stub, "tree": str(args.tree)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, help="a model set (e.g. `virnucpro models synth --preset tiny`)")
    p.add_argument("--reads", default="2000,20000", help="comma-separated read counts")
    p.add_argument("--workdir", type=Path, default=Path("memory-curve"))
    p.add_argument("--stub", action="store_true", help="stand-in networks (host-side memory only)")
    p.add_argument("--tree", type=Path, default=REPO, help="the source tree measured (holds virnucpro/; "
                   "default this one): an older checkout gives the 'before' curve")
    p.add_argument("--repeat", type=int, default=1, help="runs per point; the lowest peak is kept (the "
                   "transient peaks of chunking and translating vary from run to run)")
    p.add_argument("--trace", action="store_true", help="tracemalloc's largest holders at the write stage")
    p.add_argument("--trace-frames", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("extra", nargs="*", help="after --: more predict options (or, with --child, the command)")
    args = p.parse_args()
    if args.child:
        _child(args, args.extra)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [min((measure(args, int(n)) for _ in range(args.repeat)), key=lambda r: r["peak_rss_mib"])
            for n in args.reads.split(",")]
    for r in rows:
        print(json.dumps(r))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        per = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20 / max(1, b["reads"] - a["reads"])
        print(f"growth {a['reads']:,} -> {b['reads']:,} reads: {b['peak_rss_mib'] - a['peak_rss_mib']:+.1f} MiB "
              f"({per:,.0f} bytes per read); {platform.node()} {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
