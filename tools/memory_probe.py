"""What a stub ``virnucpro predict`` holds at fixed phases of the run: the trace of docs/benchmarks.md#memory-trace.

    python tools/memory_probe.py --reads-file reads_500000.fa --models models/tiny --out probe_500k
    python tools/memory_probe.py --reads-file reads_2000000.fa --models models/tiny --out probe_2m
    python tools/memory_probe.py --compare probe_500k probe_2m     # what grew, by source line

Runs one ``predict`` (stub engine of tools/memory_curve.py, one worker, ``--device cpu``, fp32). At the
end of each ``gc_paused`` block of the run (0: the reader thread's, at the end of reading; 1: the
embedding's, every unit done, before the write stage) it writes to ``--out``: a tracemalloc snapshot
(``snap_K.pkl``), and in ``phases.json`` the traced memory, the cyclic garbage the paused collector
left (objects by type; ``gc.collect`` with ``DEBUG_SAVEALL``) and VmRSS/VmHWM; with ``--arenas``,
pymalloc's arenas (current and high-water mark, ``sys._debugmallocstats``) instead of tracemalloc. Peak memory of the phases is
tools/memory_curve.py's job: tracemalloc slows the run ~3x and adds its own memory.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The in-flight segment's rows and reads at the instant of a snapshot (transient, not kept for the run).
TRANSIENT = ["*/run/rows.py", "*/io/outputs.py", "*/io/fasta.py", "<string>",
             "<frozen importlib._bootstrap_external>", "<frozen importlib._bootstrap>"]


def _status(key: str) -> int:
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) // 1024   # MiB


def _arenas() -> dict:
    with tempfile.TemporaryFile() as fh:   # _debugmallocstats writes to the C stderr
        saved = os.dup(2)
        os.dup2(fh.fileno(), 2)
        try:
            sys._debugmallocstats()
            ctypes.CDLL(None).fflush(None)   # (C stdio buffers stderr when it is a file)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        fh.seek(0)
        text = fh.read().decode()
    def get(name: str) -> int | None:
        m = re.search(rf"# arenas {name} *= *([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else None
    return {"arenas_current": get("allocated current"), "arenas_highwater": get("highwater mark")}


def probe(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import memory_curve
    import virnucpro.core.background as background
    import virnucpro.engines as engines
    real_engine, real_paused = engines.make_engine, background.gc_paused
    engines.make_engine = lambda name, *a, **k: memory_curve.StubEngine() if name == "fast" else real_engine(name, *a, **k)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    phases: list[dict] = []

    @contextlib.contextmanager
    def paused():
        with real_paused():
            yield
            k = len(phases)
            if tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(str(out / f"snap_{k}.pkl"))
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = collections.Counter(type(o).__name__ for o in gc.garbage)
            gc.garbage.clear()
            gc.set_debug(0)
            phases.append({"phase": k, "garbage_objects": sum(garbage.values()),
                           "garbage_types": dict(garbage.most_common(6)), "rss_mib": _status("VmRSS"),
                           "hwm_mib": _status("VmHWM"),
                           **({"traced_mib": round(tracemalloc.get_traced_memory()[0] / 2**20, 1)}
                              if tracemalloc.is_tracing() else _arenas())})
            (out / "phases.json").write_text(json.dumps(phases, indent=1))

    # --gc-on: the collector left on (the garbage is collected as usual; no phases written)
    background.gc_paused = contextlib.nullcontext if args.gc_on else paused
    if not args.arenas:
        tracemalloc.start(args.frames)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    from virnucpro.cli import run
    try:
        run(["predict", str(args.reads_file), "-o", str(run_dir), "--models", str(args.models), "--engine", "fast",
             "--device", "cpu", "--precision", "fp32", "--no-progress"])
    finally:
        (out / "hwm_mib.txt").write_text(f"{_status('VmHWM')}\n")


def compare(a: Path, b: Path, phase: int, n: int = 15) -> None:
    flt = [tracemalloc.Filter(False, p) for p in TRANSIENT]
    sa = tracemalloc.Snapshot.load(str(a / f"snap_{phase}.pkl")).filter_traces(flt)
    sb = tracemalloc.Snapshot.load(str(b / f"snap_{phase}.pkl")).filter_traces(flt)
    total = lambda s: sum(t.size for t in s.traces) / 2**20   # noqa: E731
    print(f"phase {phase}, without the in-flight segment: {total(sa):.1f} MiB -> {total(sb):.1f} MiB")
    for st in sb.compare_to(sa, "lineno")[:n]:
        fr = st.traceback[0]
        print(f"  {st.size_diff / 2**20:+8.2f} MiB {st.count_diff:+9d} blocks  {fr.filename}:{fr.lineno}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reads-file", type=Path, help="the input (e.g. from `virnucpro reads synth`)")
    p.add_argument("--models", type=Path, help="a model set (e.g. `virnucpro models synth --preset tiny`)")
    p.add_argument("--out", type=Path, help="where the snapshots, phases.json and the run go")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc's frames per trace")
    p.add_argument("--arenas", action="store_true", help="pymalloc's arenas instead of tracemalloc (which "
                   "replaces the allocator pymalloc's statistics come from); no snapshots")
    p.add_argument("--gc-on", action="store_true", help="the collector left on for the run (VmHWM only)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("SMALL", "LARGE"),
                   help="two --out folders: what grew between their snapshots")
    p.add_argument("--phase", type=int, default=1, help="with --compare: which snapshot (0 or 1)")
    args = p.parse_args()
    if args.compare:
        compare(*args.compare, args.phase)
        return
    if not (args.reads_file and args.models and args.out):
        p.error("--reads-file, --models and --out are needed (or --compare)")
    probe(args)


if __name__ == "__main__":
    main()
