"""One run at a time per output directory (virnucpro.io.lock, issue 16 item 1): a second run into a
directory another run is writing is refused at once (one line naming the directory and the holder's
pid, exit 2) and the first run's outputs are intact; a lock file left by a kill -9'd run never blocks
the next one (the kernel dropped its lock), not even while a child the holder forked lives on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from run_helpers import FAST, OUTPUT_FILES, env_with, predict_cmd, start_run
from virnucpro.io.lock import OutdirBusy, OutdirLock
from virnucpro.io.outset import status
from virnucpro.io.paths import LOCK_NAME, Paths


def slow_run(reads: Path, out: Path, models: Path, delay: float) -> subprocess.Popen:
    """A fast-engine run that sleeps ``delay`` s after each of its ~12 work units."""
    return start_run(predict_cmd(reads, out, models, faults={"unit_delay": delay}), env_with())


def wait_until_working(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """The run holds the lock and has finished a unit (so it is past its start-up)."""
    units = out / ".virnucpro-run" / "units"
    t0 = time.time()
    while not ((out / LOCK_NAME).exists() and units.is_dir() and any(units.glob("unit_*.npz"))):
        assert proc.poll() is None, f"the run ended early (exit {proc.returncode}): {proc.stderr.read()}"
        assert time.time() - t0 < timeout, "the run did not start working"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------- the lock

def test_a_second_lock_is_refused_naming_the_directory_and_the_holder(tmp_path):
    out = tmp_path / "out"
    first = OutdirLock.acquire(out)
    try:
        with pytest.raises(OutdirBusy, match=rf"{out} is in use by another virnucpro run \(pid {os.getpid()}\)"):
            OutdirLock.acquire(out)
    finally:
        first.release()
    assert not (out / LOCK_NAME).exists(), "a finished run leaves no lock file"
    OutdirLock.acquire(out).release()


def test_a_lock_file_without_a_live_holder_does_not_block(tmp_path):
    (tmp_path / LOCK_NAME).write_text("pid 999999\n")      # what a kill -9'd run leaves
    lock = OutdirLock.acquire(tmp_path)
    try:
        assert lock.stale_holder == "pid 999999"
        assert (tmp_path / LOCK_NAME).read_text() == f"pid {os.getpid()}\n"
    finally:
        lock.release()


def test_a_planted_lock_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    with pytest.raises(Exception, match="is a symbolic link"):
        OutdirLock.acquire(out)
    assert target.read_text() == "keep"


def test_a_child_forked_by_the_holder_does_not_keep_the_lock_after_the_holder_dies(tmp_path):
    """DataLoader workers are forked from a one-worker run's process: after a kill -9 of that process
    they may live on for a while; the directory must be free at once all the same."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from virnucpro.io.lock import OutdirLock
        lock = OutdirLock.acquire({str(tmp_path)!r})
        child = os.fork()
        if child == 0:
            # os.fork() returns here only after the at-fork hooks ran: say so, then outlive the holder
            os.write(1, b"child running\\n")   # one write each: the two processes share the pipe
            time.sleep(60)
            os._exit(0)
        os.write(1, b"%d\\n" % child)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env_with(), stdout=subprocess.PIPE, text=True)
    # Both lines, in either order: the child pid (from the holder) and "child running" (from the child).
    # Without waiting for the child's line, a loaded machine may not yet have scheduled the new child:
    # until it runs, its copy of the descriptor is still open, and the test judged a child that had not
    # started (CI failure of 2026-12-07: 'in use by another virnucpro run').
    lines = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
    assert "child running" in lines, f"expected the child's 'child running' line, saw {lines}"
    child = int(next(line for line in lines if line != "child running"))
    try:
        with pytest.raises(OutdirBusy):
            OutdirLock.acquire(tmp_path)
        proc.kill()
        proc.wait()
        os.kill(child, 0)   # the child still lives ...
        OutdirLock.acquire(tmp_path).release()   # ... and the directory is free
    finally:
        os.kill(child, signal.SIGKILL)


# ------------------------------------------------------------------------------- two real runs

def test_a_second_run_into_a_busy_directory_is_refused_at_once(one_worker_run, reads_600, tiny_models, tmp_path):
    out = tmp_path / "busy"
    first = slow_run(reads_600, out, tiny_models, delay=1.5)
    try:
        wait_until_working(out, first)
        t0 = time.time()
        second = subprocess.run([sys.executable, "-m", "virnucpro", "predict", str(reads_600), "-o", str(out),
                                 "--models", str(tiny_models), *FAST], env=env_with(), capture_output=True, text=True,
                                timeout=120)
        took = time.time() - t0
        assert first.poll() is None, "the first run ended before the second was refused: the test proves nothing"
        assert second.returncode == 2, second.stderr
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert lines == [f"virnucpro: error: {out} is in use by another virnucpro run (pid {first.pid}); "
                         "wait for it to finish or choose another -o/--outdir"], second.stderr
        assert took < 60, f"refused only after {took:.0f} s"
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, err
    assert status(out) == "complete"
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker_run / name).read_bytes(), \
            f"{name} of the first run is not intact"
    assert not (out / LOCK_NAME).exists()


def test_the_lock_file_of_a_killed_run_does_not_block_the_next(one_worker_run, reads_600, tiny_models, tmp_path,
                                                               run_cli):
    out = tmp_path / "killed"
    first = slow_run(reads_600, out, tiny_models, delay=0.5)
    try:
        wait_until_working(out, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert (Paths(out).lock).read_text() == f"pid {first.pid}\n", "the killed run's lock file is left behind"
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume")
    assert res.code == 0, str(res)
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker_run / name).read_bytes()
