"""Nothing left running, a clean stop on any signal, resumable from anything (issue 16, items 3-5):

- kill -9 of the coordinator alone: no process of the run (fork server, workers, their loaders)
  outlives it by more than a few seconds (it used to compute every unit on without it);
- SIGTERM to the whole process group (docker stop, systemd, Slurm), SIGINT to the coordinator,
  SIGTERM to one loader process: exit 130, one line, no process left, and --resume finishes with
  the outputs of an uninterrupted run;
- a damaged unit checkpoint (empty, truncated, altered) is computed again on --resume, and a run
  killed before its manifest existed resumes as a fresh run.

The runs are tiny-model CPU runs slowed by a FaultPlan's ``unit_delay`` (tests/run_helpers.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from run_helpers import (FAST, assert_same_outputs, children_of, done_units, env_with, last_run, n_units, predict_cmd,
                         session_processes, start_run, wait_for_units)
from virnucpro.run.rundir import RUN_DIRNAME, RunDir

OUTLIVE_S = 5.0   # how long a process of the run may outlive its end


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def loader_processes(coordinator: int) -> list[int]:
    """The DataLoader processes of a run: children of its workers (of the fork server's children,
    or of the coordinator itself when it is the only worker)."""
    procs = session_processes(coordinator)
    helpers = [p for p in children_of(procs, [coordinator])
               if "forkserver" in _cmdline(p) or "resource_tracker" in _cmdline(p)]
    servers = [p for p in helpers if "forkserver" in _cmdline(p)]
    workers = children_of(procs, servers) if servers else [coordinator]
    return [p for p in children_of(procs, workers) if p not in helpers]


def assert_nothing_left(sid: int, within: float = OUTLIVE_S) -> None:
    """No process of session ``sid`` is alive ``within`` seconds from now (the leftovers are killed)."""
    deadline = time.time() + within
    while (left := session_processes(sid)) and time.time() < deadline:
        time.sleep(0.1)
    left = {p: _cmdline(p)[:120] for p in session_processes(sid)}
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes of the run alive {within:.0f} s after its end: {left}"


# --------------------------------------------------------------------------------------- kill -9

@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["in-process", "2-workers"])
def test_kill_9_of_the_coordinator_leaves_no_process(reads_600, tiny_models, tmp_path, workers):
    """Workers, their loaders and the fork server die with the coordinator: on a GPU they would hold
    the cards (they used to compute every unit on, 45 s on the 200k-read run of the issue)."""
    out = tmp_path / "killed"
    proc = start_run(predict_cmd(reads_600, out, tiny_models, *workers, faults={"unit_delay": 2.0}), env_with(),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_units(out, proc, 1)
        running = session_processes(proc.pid)
        assert len(running) > 1, f"the run has no other process to outlive it: {running}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert_nothing_left(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert len(done_units(out)) < 14, "the run finished its units after its coordinator was killed"


# --------------------------------------------------------------------------------------- signals

def _signal_run(proc: subprocess.Popen, whom: str, sig: int) -> None:
    if whom == "group":
        os.killpg(proc.pid, sig)
    elif whom == "coordinator":
        os.kill(proc.pid, sig)
    else:   # one of the DataLoader processes
        deadline = time.time() + 30
        while not (loaders := loader_processes(proc.pid)):
            assert time.time() < deadline and proc.poll() is None, "no loader process appeared"
            time.sleep(0.05)
        os.kill(loaders[0], sig)


@pytest.mark.parametrize("whom, sig, workers", [
    ("group", signal.SIGTERM, []),
    ("group", signal.SIGTERM, ["--workers", "2"]),
    ("coordinator", signal.SIGINT, []),
    ("loader", signal.SIGTERM, ["--workers", "2"]),
], ids=["group-SIGTERM-1-worker", "group-SIGTERM-2-workers", "coordinator-SIGINT", "loader-SIGTERM-2-workers"])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(one_worker_run, reads_600, tiny_models, tmp_path,
                                                                run_cli, whom, sig, workers):
    """Exit 130 with one line naming the signal and --resume (a loader used to die under the GPU
    loop: "internal error: RuntimeError: DataLoader worker ... killed by signal", or two
    tracebacks), nothing left running or claimed, and the resumed run computes exactly the
    unfinished units into the outputs of an uninterrupted run."""
    out = tmp_path / "stopped"
    proc = start_run(predict_cmd(reads_600, out, tiny_models, *workers, faults={"unit_delay": 0.5}), env_with())
    try:
        wait_for_units(out, proc, 2)
        _signal_run(proc, whom, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip() and "SYNTHETIC" not in line]
    assert proc.returncode == 130, f"exit {proc.returncode}, stderr:\n{err}"
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
    assert lines[0].startswith(f"virnucpro: stopped by {name} ") and "--resume" in lines[0], err
    assert_nothing_left(proc.pid)
    rd = RunDir(out)
    assert not rd.claimed(), f"claims left after a clean stop: {rd.claimed()}"
    assert not list(rd.units.glob(".*")), "temp files left in the checkpoint directory"
    before = rd.done_units()
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume", *workers)
    assert res.code == 0, str(res)
    assert_same_outputs(one_worker_run, out)
    ran = {e["unit"] for e in last_run(out) if e["event"] == "unit_done"}
    assert ran == set(range(n_units(out))) - before


def _catches(pid: int, sig: int) -> bool:
    """Process ``pid`` has a handler for ``sig`` (/proc/PID/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_sigterm_before_the_embedding_ends_the_command_as_ctrl_c(tiny_models, tmp_path):
    """A run still waiting for its input (standard input, nothing written yet) gets SIGTERM: exit
    130, "virnucpro: interrupted", nothing left running (SIGTERM used to kill it silently, 143)."""
    proc = start_run([*predict_cmd(Path("-"), tmp_path / "out", tiny_models)], env_with(), stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not _catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None and time.time() < deadline, "the command never took SIGTERM over"
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, f"exit {proc.returncode}: {err}"
    assert [line for line in err.splitlines() if line.strip()] == ["virnucpro: interrupted"], err
    assert_nothing_left(proc.pid)


# ------------------------------------------------------------------------------- resume from damage

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    else:   # one bit of the scores' bytes flipped (the zip's CRC-32 tells)
        i = data.index(b"scores.npy") + 200
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])


def test_a_damaged_checkpoint_is_computed_again(one_worker_run, reads_600, tiny_models, tmp_path, run_cli):
    """An empty, a truncated and an altered unit checkpoint: --resume recomputes exactly those
    three with one warning naming them (it used to die with "internal error: EOFError / BadZipFile")."""
    out = tmp_path / "damaged"
    shutil.copytree(one_worker_run, out)
    rd = RunDir(out)
    for u, how in [(0, "empty"), (3, "truncated"), (5, "altered")]:
        _damage(rd.unit_path(u), how)
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume")
    assert res.code == 0, str(res)
    warnings = [line for line in res.err_lines() if "damaged" in line]
    assert len(warnings) == 1 and "0, 3, 5" in warnings[0], res.err
    assert_same_outputs(one_worker_run, out)
    assert sorted(e["unit"] for e in last_run(out) if e["event"] == "unit_done") == [0, 3, 5]


@pytest.mark.parametrize("left", ["nothing", "run-dir-without-manifest"])
def test_resume_of_a_run_killed_before_its_manifest_starts_afresh(one_worker_run, reads_600, tiny_models, tmp_path,
                                                                  run_cli, left):
    """A run killed before its manifest existed leaves no checkpoint (or an empty run directory
    and a log): --resume runs afresh with a note (it used to refuse: "no checkpoint to resume from")."""
    out = tmp_path / "early"
    if left != "nothing":
        RunDir(out).reset()
        (out / "virnucpro.log").write_text("killed before the manifest\n")
        assert not (out / RUN_DIRNAME / "manifest.json").exists()
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume")
    assert res.code == 0, str(res)
    assert "starting afresh" in res.err, res.err
    assert_same_outputs(one_worker_run, out)
    assert len({e["unit"] for e in last_run(out) if e["event"] == "unit_done"}) == n_units(out)
