"""Scaling and surviving on CPU: several worker processes claiming work units, checkpoints, resume
after kill -9 and SIGTERM, a dead worker's units re-queued, refused mismatched resumes, and the
out-of-memory back-off. Faults are injected with a ``FaultPlan``: in this process through
``run_cli(..., faults=...)``, in a subprocess through ``tests/fault_launcher.py``.

A small token budget and 2 batches per unit cut ~460 kept frames into ~14 units, so that every
worker gets several units (tests/run_helpers.py). Outputs are compared byte for byte with a
one-worker run. Processes, signals and damaged checkpoints: tests/test_lifecycle.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from run_helpers import (FAST, assert_same_outputs, done_units, env_with, last_run, n_units, predict_cmd, start_run,
                         wait_for_units)
from virnucpro.core.telemetry import read_telemetry
from virnucpro.errors import InputError
from virnucpro.run.devices import parse_devices
from virnucpro.run.faults import FaultPlan
from virnucpro.run.rundir import RUN_DIRNAME, Released, RunDir


# ---------------------------------------------------------------------------------------------- units

def test_cpu_devices_and_worker_count():
    assert parse_devices(None, None, "cpu") == ["cpu"]
    assert parse_devices("all", 3, "cpu") == ["cpu"] * 3
    with pytest.raises(InputError, match="--workers"):
        parse_devices(None, 0, "cpu")


@pytest.mark.parametrize("engine, device, gpus, workers, skip, visible, expected", [
    ("auto", "auto", None, None, False, "0,1", True),       # all visible GPUs, two of them
    ("auto", "auto", None, None, False, "0", False),        # one GPU: the run stays in this process
    ("auto", "auto", None, None, False, "", False),         # no GPU: the fast engine in this process
    ("fast", "cpu", None, 2, False, "", True),              # CPU worker processes
    ("fast", "cpu", None, None, True, "", True),            # --skip-failing-units needs a worker process
    ("auto", "cpu", None, 2, False, "", True),              # engine auto on a CPU is the fast engine too
    ("reference", "cpu", None, 2, False, "", False),        # the reference engine: one process
    ("reference", "cuda", "2", None, False, "0,1", False),
    ("auto", "cuda", "2", None, False, "0,1", True),
    ("auto", "cuda", "1", None, False, "0,1", False),
    ("auto", "cuda", "0,1", None, False, "0,1", True),
    ("auto", "cuda:1", None, None, False, "0,1", False),
])
def test_worker_processes_are_foreseen_before_torch_is_imported(monkeypatch, engine, device, gpus, workers,
                                                                 skip, visible, expected):
    from virnucpro.run.devices import likely_worker_processes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    got = likely_worker_processes(engine, device, gpus, workers, skip)
    assert got is expected, (f"engine={engine} device={device} gpus={gpus} workers={workers} skip={skip} "
                             f"with CUDA_VISIBLE_DEVICES={visible!r}: expected {expected}, got {got}")


def test_the_command_leaves_no_temp_dir_behind(reads_600, tiny_models, tmp_path):
    """``python -m virnucpro`` exits without the interpreter's teardown, but only after joining its
    children and removing multiprocessing's temp directory (as the teardown would)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(predict_cmd(reads_600, tmp_path / "out", tiny_models, "--workers", "2"),
                          env=env_with(TMPDIR=str(tmp)), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "prediction_results.txt").stat().st_size > 0
    deadline = time.time() + 5   # the fork server and resource tracker end when the command does
    while any(tmp.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(tmp.iterdir()), f"left in TMPDIR: {sorted(p.name for p in tmp.iterdir())}"


def test_a_worker_waits_for_the_manifest_of_its_own_run(tmp_path):
    """Workers start before the coordinator has read the input, i.e. while OUTDIR may still hold an
    earlier run's manifest: only the manifest with their run token lets them start."""
    import threading
    from virnucpro.run.worker_process import wait_for_own_manifest
    rd = RunDir(tmp_path)
    rd.reset()
    rd.write_manifest({"run_token": "earlier-run", "token_budget": 1024})
    t0 = time.time()
    assert wait_for_own_manifest(rd, threading.Event(), "this-run", timeout=0.3) is None, \
        "a worker took an earlier run's manifest for its own"
    assert time.time() - t0 >= 0.3
    rd.write_manifest({"run_token": "this-run", "token_budget": 2048})
    m = wait_for_own_manifest(rd, threading.Event(), "this-run", timeout=5)
    assert m is not None and m["token_budget"] == 2048


def test_a_bad_input_with_workers_is_one_error_line_and_leaves_no_process(tiny_models, tmp_path):
    """The workers start before the input is read; a bad input must still end the command at once
    with one error line, and none of them may outlive it."""
    bad = tmp_path / "bad.fa"
    bad.write_text("hello world\n")   # neither FASTA nor FASTQ
    proc = start_run(predict_cmd(bad, tmp_path / "out", tiny_models, "--workers", "2"), env_with())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, f"expected exit 2 for a text input, got {proc.returncode}: {err}"
    assert "not a FASTA" in err and "Traceback" not in err, err
    deadline = time.time() + 10
    while True:   # the run's session: the coordinator is gone; workers and their fork server must be too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "processes of the failed run were still alive 10 s after it ended"
        time.sleep(0.1)


def test_a_claim_is_exclusive_and_released_with_its_owner(tmp_path):
    rd = RunDir(tmp_path)
    rd.reset()
    assert rd.claim(3, "w0") is True
    assert rd.claim(3, "w1") is False, "a second worker claimed a unit that is already claimed"
    assert rd.claim(4, "w0") and rd.claim(5, "w1")
    rd.save_unit(4, np.array([7, 8]), np.zeros((2, 2), np.float32))
    rd.claim(6, "w0")
    rd.mark_started(6)
    rd.claim(7, "w0")           # computed, its checkpoint not yet written when its worker died
    rd.mark_started(7)
    rd.mark_computed(7)
    assert rd.release_owner("w0") == Released(lost=[3, 6, 7], started=[6]), \
        "released: the dead worker's unfinished units, and of them the one it had started and not computed"
    assert set(rd.claimed()) == {5}
    assert rd.done_units() == {4}
    assert not list(rd.units.glob(".*")), "a temp file was left beside the unit checkpoint"


# ------------------------------------------------------------------------------------------ end to end

def test_three_workers_give_the_one_worker_outputs(one_worker_run, reads_600, tiny_models, tmp_path):
    out = tmp_path / "three"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--workers", "3"), env=env_with(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_same_outputs(one_worker_run, out)
    ev = last_run(out)
    done = [e for e in ev if e["event"] == "unit_done"]
    units = n_units(out)
    assert sorted(e["unit"] for e in done) == list(range(units)), "every unit exactly once"
    by_worker = {e["worker"] for e in done}
    assert len(by_worker) >= 2, f"dynamic claiming left all units to one worker: {by_worker}"
    summary = next(e for e in ev if e["event"] == "summary")
    assert summary["n_workers"] == 3 and summary["n_gpus"] == 0
    assert sum(summary["units_per_worker"].values()) == units == summary["units_computed"]
    assert summary["load_imbalance"] is None or summary["load_imbalance"] >= 1.0
    assert {e["worker"] for e in ev if e["event"] == "worker_summary"} == {"w0", "w1", "w2"}
    assert {e["worker"] for e in ev if e["event"] == "worker_start"} == {"w0", "w1", "w2"}
    assert "scaling: 3 worker(s)" in (out / "virnucpro.log").read_text()
    spawned = next(e for e in ev if e["event"] == "workers_spawned")
    assert spawned["before_input"] is True, "a fresh run's workers should start before its input is read"
    assert max(e["entered_t"] for e in ev if e["event"] == "worker_start") < summary["wall_s"]


def test_segmented_planning(one_worker_run, reads_600, tiny_models, tmp_path, run_cli):
    """Reads planned 70 at a time (units start before the input is translated), one worker and two
    workers claiming from that growing plan: byte-identical outputs to each other, and the labels
    of the one-segment run (the batches differ, so scores may differ in the last digits)."""
    outs = {}
    for name, extra in (("seg1", ()), ("seg2", ("--workers", "2"))):
        out = outs[name] = tmp_path / name
        res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--segment-reads", "70", *extra)
        assert res.code == 0, str(res)
        ev = last_run(out)
        plan = next(e for e in ev if e["event"] == "plan")
        done = sorted(e["unit"] for e in ev if e["event"] == "unit_done")
        assert done == list(range(plan["units"])), f"{name}: units done {done}, planned {plan['units']}"
    assert_same_outputs(outs["seg1"], outs["seg2"])
    cols = ["id", "label", "s0", "s1"]
    a = pd.read_csv(one_worker_run / "prediction_results.txt", sep="\t", names=cols, skiprows=1)
    b = pd.read_csv(outs["seg1"] / "prediction_results.txt", sep="\t", names=cols, skiprows=1)
    assert a["id"].tolist() == b["id"].tolist(), "segmented planning changed the frames or their order"
    diff = float((a["s1"] - b["s1"]).abs().max())
    assert diff <= 1e-3, f"scores differ by up to {diff:.2e} from the one-segment run (expected rounding only)"
    assert (a["label"] == b["label"]).mean() >= 0.99


def test_workers_from_a_fork_server_that_initialised_cuda_are_restarted_with_spawn(one_worker_run, reads_600,
                                                                                  tiny_models, tmp_path):
    """A child forked after CUDA was initialised cannot use CUDA (seen on an H200 when the fork server
    imported torch._inductor). Such a worker exits BAD_FORK_EXIT at once; the coordinator starts it
    again with spawn, without counting a death, and the run completes with the same outputs."""
    out = tmp_path / "badfork"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--workers", "2", faults={"bad_fork": True}),
                          env=env_with(VIRNUCPRO_START_METHOD="forkserver"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_same_outputs(one_worker_run, out)
    ev = last_run(out)
    restarts = [e for e in ev if e["event"] == "worker_restart"]
    assert restarts and all(e["start_method"] == "spawn" for e in restarts), restarts
    assert not [e for e in ev if e["event"] == "worker_lost"], "a bad fork was counted as a lost worker"
    assert {e["worker"] for e in ev if e["event"] == "worker_start"} == {"w0s", "w1s"}


def test_a_dead_worker_units_are_requeued(one_worker_run, reads_600, tiny_models, tmp_path):
    out = tmp_path / "dead"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--workers", "2",
                                      faults={"die_owner": "w1", "die_after": 1}),
                          env=env_with(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_same_outputs(one_worker_run, out)
    ids = pd.read_csv(out / "prediction_results.txt", sep="\t").Sequence_ID
    assert ids.is_unique and len(ids) == len(pd.read_csv(one_worker_run / "prediction_results.txt", sep="\t"))
    ev = last_run(out)
    lost = [e for e in ev if e["event"] == "worker_lost"]
    assert len(lost) == 1 and lost[0]["worker"] == "w1" and lost[0]["exitcode"] == 17, lost
    done = {e["unit"]: e["worker"] for e in ev if e["event"] == "unit_done"}
    assert sorted(done) == list(range(n_units(out)))
    for u in lost[0]["released_units"]:
        assert done[u] != "w1", f"unit {u} released by the dead worker was never redone by another"


def test_a_full_disk_in_a_worker_stops_the_run_with_one_line(reads_600, tiny_models, tmp_path):
    """A worker whose writes are refused (disk full) is not restarted again and again: the run stops
    at once with one line saying what to do, exit 3 (the machine's problem), no "internal error";
    --resume only when work units were checkpointed."""
    out = tmp_path / "full"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--workers", "2", faults={"disk_full_owner": "w1"}),
                          env=env_with(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("virnucpro: error")]
    assert len(errors) == 1 and "worker w1" in errors[0] and "free disk space" in errors[0], proc.stderr
    assert "--resume" not in errors[0] or done_units(out), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    ev = last_run(out)
    assert not [e for e in ev if e["event"] == "worker_lost"], "a storage error is not a lost worker to restart"


def test_a_unit_that_keeps_killing_workers_stops_the_run_naming_it(reads_600, tiny_models, tmp_path):
    out = tmp_path / "poison"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--workers", "2", faults={"poison_unit": 1}),
                          env=env_with(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stderr}"
    assert "unit 1 was lost with its worker 3 times" in proc.stderr and "read(s): read" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "prediction_results.txt").exists()
    assert 1 not in done_units(out)


def test_skip_failing_units_leaves_out_and_reports_only_the_poison_unit(one_worker_run, reads_600, tiny_models,
                                                                        tmp_path):
    """With the explicit option, one worker process (even on one device) re-tries the poison unit,
    gives up on it after 3 deaths, finishes everything else and names the reads it could not score."""
    out = tmp_path / "skip"
    proc = subprocess.run(predict_cmd(reads_600, out, tiny_models, "--skip-failing-units", faults={"poison_unit": 1}),
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    assert "unit 1 was lost with its worker 3 times; skipped" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    pred = "prediction_results.txt"
    base_lines = (one_worker_run / pred).read_text().splitlines()
    out_lines = (out / pred).read_text().splitlines()
    assert set(out_lines) < set(base_lines), "a kept row differs from the one-worker run, or nothing was left out"
    assert out_lines == [ln for ln in base_lines if ln in set(out_lines)], "rows out of order"
    missing = {ln.split("\t")[0] for ln in set(base_lines) - set(out_lines)}
    skipped = set(pd.read_csv(out / "skipped_reads.tsv", sep="\t").read_id)
    assert skipped == {fid.rsplit("_chunk_", 1)[0] for fid in missing}, "skipped_reads.tsv must name exactly their reads"
    summary = pd.read_csv(out / "read_summary.tsv", sep="\t", comment="#")
    assert set(summary[summary.label == "skipped"].read_id) == skipped
    ev = last_run(out)
    assert [e["unit"] for e in ev if e["event"] == "unit_skipped"] == [1]
    s = next(e for e in ev if e["event"] == "summary")
    assert s["skipped_frames"] == len(missing) and s["skipped_reads"] == len(skipped), s


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["in-process", "2-workers"])
def test_kill_9_then_resume_recomputes_only_unfinished_units(one_worker_run, reads_600, tiny_models, tmp_path, run_cli,
                                                             workers):
    """Killed with -9 and resumed with the same layout: with worker processes, the killed run's
    published segments and claims are void and the resumed run publishes its own."""
    out = tmp_path / "killed"
    proc = start_run(predict_cmd(reads_600, out, tiny_models, *workers, faults={"unit_delay": 0.3}), env_with())
    try:
        wait_for_units(out, proc, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = done_units(out)
    assert not (out / "prediction_results.txt").exists(), "a killed run must not have written outputs"
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume", *workers)
    assert res.code == 0, str(res)
    assert not (out / RUN_DIRNAME / "segments").exists() or not any((out / RUN_DIRNAME / "segments").iterdir()), \
        "published segments left after the run"
    assert_same_outputs(one_worker_run, out)
    ev = last_run(out)
    units = n_units(out)
    assert 3 <= len(before) < units, f"{len(before)} of {units} units were done at the kill"
    ran = sorted(e["unit"] for e in ev if e["event"] == "unit_done")
    assert ran == sorted(set(range(units)) - before), "the resumed run must compute exactly the unfinished units"
    summary = next(e for e in ev if e["event"] == "summary")
    assert (summary["units_skipped"], summary["units_computed"]) == (len(before), units - len(before))


def test_sigterm_stops_cleanly_and_leaves_a_resumable_state(one_worker_run, reads_600, tiny_models, tmp_path, run_cli):
    out = tmp_path / "term"
    proc = start_run(predict_cmd(reads_600, out, tiny_models, "--workers", "2", faults={"unit_delay": 0.3}), env_with())
    wait_for_units(out, proc, 2)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 130, f"exit {proc.returncode}, stderr:\n{err}"
    assert "--resume" in err, err
    rd = RunDir(out)
    assert not rd.claimed(), f"claims left after a clean stop: {rd.claimed()}"
    assert not list(rd.units.glob(".*")), "temp files left in the checkpoint directory"
    before = rd.done_units()
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume", "--workers", "1")
    assert res.code == 0, str(res)
    assert_same_outputs(one_worker_run, out)
    ran = {e["unit"] for e in last_run(out) if e["event"] == "unit_done"}
    assert ran == set(range(n_units(out))) - before


@pytest.mark.parametrize("change, words", [
    (["-c", "500"], "chunk length"),
    (["--precision", "bf16"], "precision"),   # (the base run: fp32, the CPU's default)
    (["--classifier", "{models}/300_model.safetensors"], "models"),
    (["--token-budget", "2048"], "token budget"),
    ("other-input", "input file"),
    ("older-plan", "work-plan version"),
    (["--save-embeddings"], "--save-embeddings"),   # units done without their features
])
def test_a_mismatched_resume_is_refused(one_worker_run, reads_600, tiny_models, tmp_path, run_cli, change, words):
    out = tmp_path / "copy"
    shutil.copytree(one_worker_run, out)
    inp = reads_600
    if change == "older-plan":   # checkpoints of a release that cut units another way
        manifest = RunDir(out).read_manifest()
        del manifest["plan_version"]
        RunDir(out).write_manifest(manifest)
        change = []
    if change == "other-input":
        inp = tmp_path / "other.fa"
        inp.write_text(reads_600.read_text().replace("A", "C", 5))
        change = []
    args = [a.replace("{models}", str(tiny_models)) for a in change]
    fast = list(FAST)
    if "--token-budget" in args:
        i = fast.index("--token-budget")
        del fast[i:i + 2]
    res = run_cli("predict", inp, "-o", out, "--models", tiny_models, *fast, *args, "--resume")
    assert res.code == 2, str(res)
    assert "--resume refused" in res.err and words in res.err, res.err
    assert (out / "prediction_results.txt").read_bytes() == (one_worker_run / "prediction_results.txt").read_bytes()


def test_out_of_memory_halves_the_batch_and_retries(reads_600, tiny_models, tmp_path, run_cli):
    """fp32 so that re-packed batches give the same numbers up to rounding (fp16 would not)."""
    fp32 = [*FAST, "--precision", "fp32"]
    ref = tmp_path / "ref"
    assert run_cli("predict", reads_600, "-o", ref, "--models", tiny_models, *fp32).code == 0
    assert not [e for e in last_run(ref) if e["event"] == "oom"], "an out-of-memory retry without a fault"
    out = tmp_path / "oom"
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *fp32,
                  faults=FaultPlan(fake_oom_tokens=600))
    assert res.code == 0, str(res)
    ev = last_run(out)
    ooms = [e for e in ev if e["event"] == "oom"]
    assert ooms and all(e["retry_budget"] == e["budget"] // 2 for e in ooms), ooms
    assert next(e for e in ev if e["event"] == "summary")["oom_retries"] == len(ooms)
    a = pd.read_csv(ref / "prediction_results.txt", sep="\t")
    b = pd.read_csv(out / "prediction_results.txt", sep="\t")
    assert a.Sequence_ID.tolist() == b.Sequence_ID.tolist()
    diff = float(np.abs(a.score2 - b.score2).max())
    assert diff <= 1e-5, f"scores after the OOM back-off differ by {diff:.2e}"
    assert (a.Prediction == b.Prediction).all()


def test_torchrun_ranks_share_the_work_through_the_run_directory(one_worker_run, reads_600, tiny_models, tmp_path):
    """Two ranks as torchrun starts them (RANK/WORLD_SIZE/LOCAL_RANK), coordinating only by files."""
    out = tmp_path / "ranks"
    procs = [start_run(predict_cmd(reads_600, out, tiny_models),
                       env_with(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), TORCHELASTIC_RUN_ID="t1"))
             for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert_same_outputs(one_worker_run, out)
    events = read_telemetry(out / "virnucpro.log") + read_telemetry(out / "virnucpro.rank1.log")
    done = [e for e in events if e["event"] == "unit_done"]
    assert sorted(e["unit"] for e in done) == list(range(n_units(out))), "every unit exactly once over the ranks"
    summary = next(e for e in events if e["event"] == "summary")
    assert set(summary["units_per_worker"]) == {"r0", "r1"}, summary["units_per_worker"]


def test_a_stale_claim_is_taken_over(tmp_path):
    """Across hosts nobody sees a worker die: a claim without heartbeat for stale_s is released."""
    import threading
    from virnucpro.plan.planner import PlanBuilder
    from virnucpro.run.claims import wait_for_claimable
    plans = PlanBuilder.of([("f", 0, "ATG" * 10, "M" * 10)] * 40, budget=64, batches_per_unit=1)
    assert plans.n_units >= 2
    rd = RunDir(tmp_path)
    rd.reset()
    rd.claim(0, "r1")
    rd.claim(1, "r2")
    old = time.time() - 100
    os.utime(rd.claim_path(0), (old, old))
    assert wait_for_claimable(rd, plans, plans.n_units, threading.Event(), stale_s=30) is True
    assert set(rd.claimed()) == {1}, "the stale claim should be gone, the fresh one kept"


def test_resume_of_checkpoints_made_before_the_engine_configuration_was_recorded(one_worker_run, reads_600,
                                                                                  tiny_models, tmp_path, run_cli):
    """A run directory made by a virnucpro older than EngineConfig has no ``engine_config`` in its
    manifest: the ESM-2 kernels, GELU and DNABERT-S compile it ran with are unknowable, so --resume
    is refused in one line that says so and names --force, never as "a different configuration"."""
    out = tmp_path / "old"
    shutil.copytree(one_worker_run, out)
    manifest = RunDir(out).read_manifest()
    del manifest["engine_config"]
    RunDir(out).write_manifest(manifest)
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST, "--resume")
    assert res.code == 2, str(res)
    lines = [line for line in res.err_lines() if "SYNTHETIC" not in line]
    assert len(lines) == 1, str(res)
    assert lines[0].startswith(f"virnucpro: error: --resume refused: the checkpoints in {out / RUN_DIRNAME} were "
                               f"made by an older virnucpro ({manifest['virnucpro_version']}) that did not record "
                               "its engine configuration"), lines[0]
    assert "cannot be matched" in lines[0] and "--force" in lines[0] and "different" not in lines[0], lines[0]
    assert (out / "prediction_results.txt").read_bytes() == (one_worker_run / "prediction_results.txt").read_bytes()
