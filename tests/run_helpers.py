"""Helpers for tests that run ``predict`` as a subprocess and interrupt it (test_parallel,
test_lifecycle, test_lock, test_outdir_safety): the command (through tests/fault_launcher.py when
faults are injected), its environment (``env_with``: every test that launches the package in a
subprocess), the run's telemetry and units, and the processes of its session. The shared input and
the one-worker run they compare against are conftest.py's ``reads_600`` and ``one_worker_run``.

A small token budget and 2 batches per unit cut the ~460 kept frames of 600 reads into ~14 units,
so that every worker gets several units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from virnucpro.core.telemetry import read_telemetry
from virnucpro.run.rundir import RUN_DIRNAME, RunDir

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).resolve().parent / "fault_launcher.py"
OUTPUT_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv")
FAST = ["--engine", "fast", "--device", "cpu", "--no-progress", "--token-budget", "1024", "--batches-per-unit", "2"]


def predict_cmd(reads: Path, out: Path, models: Path, *extra: str, faults: dict | None = None) -> list[str]:
    """``python -m virnucpro predict ...``; with ``faults`` (FaultPlan fields), through the fault launcher."""
    command = [sys.executable, str(LAUNCHER), json.dumps(faults)] if faults else [sys.executable, "-m", "virnucpro"]
    return [*command, "predict", str(reads), "-o", str(out), "--models", str(models), *FAST, *extra]


def env_with(**extra: str) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def last_run(outdir: Path) -> list[dict]:
    """Telemetry events of the latest invocation in outdir (the log is appended to)."""
    ev = read_telemetry(outdir / "virnucpro.log")
    starts = [i for i, e in enumerate(ev) if e["event"] == "run_start"]
    return ev[starts[-1]:]


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUT_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} of {b} differs from the one-worker run"


def n_units(outdir: Path) -> int:
    return next(e for e in last_run(outdir) if e["event"] == "plan")["units"]


def done_units(outdir: Path) -> set[int]:
    return RunDir(outdir).done_units() if (outdir / RUN_DIRNAME / "units").is_dir() else set()


def start_run(cmd: list[str], env: dict, **popen) -> subprocess.Popen:
    """The command in a session of its own (its process group is the test's to signal)."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(cmd, env=env, text=True, start_new_session=True, **popen)


def wait_for_units(outdir: Path, proc: subprocess.Popen, k: int, timeout: float = 60) -> None:
    t0 = time.time()
    while len(done_units(outdir)) < k:
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {k} units were done"
        assert time.time() - t0 < timeout, f"fewer than {k} units done after {timeout} s"
        time.sleep(0.05)


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, session, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def session_processes(sid: int) -> dict[int, int]:
    """Live (not zombie) processes of session ``sid``: pid -> parent pid (Linux /proc)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat(int(name))
            if f is not None and f[0] != "Z" and int(f[3]) == sid:
                out[int(name)] = int(f[1])
    return out


def children_of(procs: dict[int, int], parents) -> list[int]:
    return sorted(p for p, pp in procs.items() if pp in set(parents))
