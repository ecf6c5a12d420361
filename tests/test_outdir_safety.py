"""A hostile or broken machine around the output directory (issue 16 item 9): an environment error
names its actual cause (exit 3) and suggests --resume only where checkpoints exist; a planted
``virnucpro.log`` or ``.virnucpro-run`` symbolic link is refused with one line and never followed; a
model error leaves no new output directory behind; a kill -9 leaves no multiprocessing temp folder
that the next run does not remove.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from run_helpers import env_with, predict_cmd, start_run
from virnucpro.run.faults import FaultPlan

CPU = ["--device", "cpu", "--no-progress"]
FAST = ["--engine", "fast", "--token-budget", "1024", "--batches-per-unit", "2"]


@pytest.fixture(scope="module")
def reads(synthetic_reads) -> Path:
    return synthetic_reads(40, 21)


def errors_of(res) -> list[str]:
    return [ln for ln in res.err_lines() if not ln.startswith("virnucpro: WARNING")]


# ------------------------------------------------------------------------- environment errors

@pytest.mark.parametrize("code, cause", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "no space left on the device")])
def test_an_environment_error_names_its_cause_and_no_resume_without_checkpoints(reads, tiny_models, tmp_path,
                                                                               run_cli, monkeypatch, code, cause):
    from virnucpro.io.lock import OutdirLock
    out = tmp_path / "out"

    def refused(outdir, what="-o/--outdir"):
        raise OSError(code, os.strerror(code), str(outdir))

    monkeypatch.setattr(OutdirLock, "acquire", staticmethod(refused))
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *CPU, *FAST)
    assert res.code == 3, str(res)
    errors = errors_of(res)
    assert errors == [f"virnucpro: error: {cause}: {out} ({errors[0].split('(', 1)[1]}"], str(res)
    assert "--resume" not in res.err and "internal error" not in res.err, str(res)


def test_an_environment_error_after_finished_units_suggests_resume(reads, tiny_models, tmp_path, run_cli):
    out = tmp_path / "out"
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *CPU, *FAST,
                  faults=FaultPlan(full_in_write="stage"))
    assert res.code == 3, str(res)
    errors = errors_of(res)
    assert len(errors) == 1 and errors[0].startswith("virnucpro: error: no space left on the device"), str(res)
    assert "--resume" in errors[0], str(res)
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *CPU, *FAST, "--resume")
    assert res.code == 0, str(res)


# ------------------------------------------------------------------------------ planted links

def test_a_planted_log_symlink_is_refused_and_not_followed(reads, tiny_models, tmp_path, run_cli):
    target = tmp_path / "bashrc"
    target.write_text("mine\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "virnucpro.log").symlink_to(target)
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *CPU)
    assert res.code == 2, str(res)
    assert errors_of(res) == [f"virnucpro: error: {out / 'virnucpro.log'} is a symbolic link: refusing to write "
                              "through it (remove it)"], str(res)
    assert target.read_text() == "mine\n"


def test_the_log_file_is_opened_without_following_a_link(tmp_path):
    """The refusal above is checked before the run; the log's own open refuses a link planted later."""
    from virnucpro.core.telemetry import setup_logging
    from virnucpro.errors import InputError
    target = tmp_path / "target"
    target.write_text("mine\n")
    (tmp_path / "virnucpro.log").symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link"):
        setup_logging(tmp_path / "virnucpro.log")
    assert target.read_text() == "mine\n"


def test_a_planted_run_dir_symlink_is_refused_with_one_line(reads, tiny_models, tmp_path, run_cli):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("mine\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".virnucpro-run").symlink_to(elsewhere, target_is_directory=True)
    res = run_cli("predict", reads, "-o", out, "--models", tiny_models, *CPU, *FAST)
    assert res.code == 2, str(res)
    errors = errors_of(res)
    assert len(errors) == 1 and "is a symbolic link" in errors[0] and "internal error" not in res.err, str(res)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]


def test_the_run_dir_refuses_a_link_itself(tmp_path):
    from virnucpro.errors import InputError
    from virnucpro.run.rundir import RunDir
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".virnucpro-run").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for action in (RunDir(tmp_path).reset, RunDir(tmp_path).make_dirs):
        with pytest.raises(InputError, match="is a symbolic link"):
            action()


# ---------------------------------------------------------------------------- model errors

@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_a_model_error_leaves_no_new_output_directory(reads, tiny_models, tmp_path, run_cli, engine):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    ckpt = next(models.glob("esm2_*_synthetic.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])   # damaged: found only when loaded
    out = tmp_path / "new" / "out"
    args = ["predict", reads, "-o", out, "--models", models, *CPU]
    res = run_cli(*args, *(FAST if engine == "fast" else ["--engine", "reference"]))
    assert res.code == 2, str(res)
    assert "ESM-2 checkpoint" in res.err, str(res)
    assert not out.exists(), f"left behind: {sorted(p.name for p in out.rglob('*'))}"


def test_no_planner_thread_writes_after_a_model_error(reads, tiny_models, tmp_path, run_cli, monkeypatch):
    """The planner thread was left running when the models failed to load: on a loaded machine it wrote
    planned units after the clean-up had removed the new directory (CI, 2026-12-07: 'left behind:
    .virnucpro-run, plan, unit_000000.pkl'). Planning is slowed here so that it is still at work when
    the error comes; the command must stop it before cleaning up and return with no thread of it left."""
    import threading
    from virnucpro.plan.planner import UnitStore
    put = UnitStore.put

    def slow_put(self, u, data):
        time.sleep(0.3)
        put(self, u, data)
    monkeypatch.setattr(UnitStore, "put", slow_put)
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    ckpt = next(models.glob("esm2_*_synthetic.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    out = tmp_path / "new" / "out"
    res = run_cli("predict", reads, "-o", out, "--models", models, *CPU, *FAST)
    assert res.code == 2 and "ESM-2 checkpoint" in res.err, str(res)
    left = [t.name for t in threading.enumerate() if t.name == "plan-producer"]
    assert not left, f"the run returned with its planner still running: {left}"
    time.sleep(1.0)
    assert not out.exists(), f"written after the command returned: {sorted(p.name for p in out.rglob('*'))}"


def test_a_model_error_in_an_existing_directory_leaves_it_as_it_was(reads, tiny_models, tmp_path, run_cli):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    ckpt = next(models.glob("esm2_*_synthetic.pt"))
    ckpt.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    res = run_cli("predict", reads, "-o", out, "--models", models, *CPU, "--engine", "reference")
    assert res.code == 2, str(res)
    assert (out / "notes.txt").read_text() == "mine\n"


# ---------------------------------------------------------------- multiprocessing temp folders

def test_no_multiprocessing_temp_folder_outlives_a_killed_run_past_the_next(reads, tiny_models, tmp_path):
    """A kill -9 of a two-worker run (coordinator, fork server, workers) left three pymp-* folders in
    TMPDIR; now they are all inside one run folder, which the next run removes."""
    from virnucpro.core.mptemp import PREFIX
    tmp = Path(tempfile.mkdtemp(prefix="vnp-t", dir="/tmp"))   # short: sockets are made in there
    try:
        env = env_with(TMPDIR=str(tmp))
        out = tmp_path / "out"
        proc = start_run(predict_cmd(reads, out, tiny_models, "--workers", "2", faults={"unit_delay": 1.0}), env,
                         stdout=subprocess.DEVNULL)
        units = out / ".virnucpro-run" / "units"
        t0 = time.time()
        try:
            while not (units.is_dir() and any(units.glob("unit_*.npz"))):
                assert proc.poll() is None, proc.stderr.read()
                assert time.time() - t0 < 180, "no unit finished"
                time.sleep(0.1)
            left = sorted(p.name for p in tmp.iterdir())
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert left and all(n.startswith(PREFIX) for n in left), f"outside the run folder: {left}"
        assert list(tmp.glob(f"{PREFIX}*/w*")), "no worker made a temp folder: the test proves nothing"
        time.sleep(1.0)   # the killed processes' locks are the kernel's to drop
        done = subprocess.run([sys.executable, "-m", "virnucpro", "predict", str(tmp_path / "none.fa"), "-o",
                               str(tmp_path / "o2"), "--models", str(tiny_models), *CPU],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert sorted(p.name for p in tmp.iterdir()) == [], "a killed run's temp folders outlived the next run"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_run_folder_whose_coordinator_lives_is_not_swept(tmp_path):
    from virnucpro.core import mptemp
    live = tmp_path / f"{mptemp.PREFIX}abc"
    live.mkdir()
    script = (f"import fcntl, os, time; fd = os.open({str(live / mptemp.HELD)!r}, os.O_RDWR | os.O_CREAT); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('ok', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        dead = tmp_path / f"{mptemp.PREFIX}def"
        (dead / "wx").mkdir(parents=True)
        (dead / mptemp.HELD).write_text("")
        assert mptemp.sweep_stale(tmp_path) == [dead]
        assert live.is_dir() and not dead.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_sweep_leaves_a_run_folder_whose_worker_children_still_live(tmp_path):
    """The coordinator is gone (its lock dropped) but a worker's DataLoader child still exits and
    unlinks its socket in the worker's folder: a concurrent run's sweep must leave the folder until
    that process is gone too (else the child's finalizer printed a FileNotFoundError traceback)."""
    import fcntl
    import os

    from virnucpro.core import mptemp

    run = tmp_path / f"{mptemp.PREFIX}abcd1234"
    (run / "wxyz").mkdir(parents=True)
    (run / mptemp.HELD).write_text("")          # the coordinator's lock file, not held: it died
    held_r, held_w = os.pipe()     # child -> parent: the lock is held
    go_r, go_w = os.pipe()         # parent -> child: let go
    pid = os.fork()
    if pid == 0:   # a worker's child: holds the worker folder's lock until told to go
        fd = os.open(run / "wxyz" / mptemp.HELD, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(held_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    try:
        os.read(held_r, 1)
        assert mptemp.sweep_stale(tmp_path) == [] and run.is_dir(), "swept while a worker's process lives"
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
    assert mptemp.sweep_stale(tmp_path) == [run] and not run.exists()
