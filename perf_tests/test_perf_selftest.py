"""The gate tests itself: a real CPU run, deliberately broken, must fail each criterion with a
specific message (perf_smoke; runs in CI on the CPU).

Most tests copy the session's real ``cpu-fp32`` run and break one thing the way a faulty pipeline
would (or craft the one figure a CPU cannot produce, such as NVML samples), then run the same
functions the criterion tests use. One launches the fast engine made 3x slower for real; one runs
``pytest -m gpu4090`` on this GPU-less machine and expects a non-zero exit with a NOT RUN verdict.
Which self-test shows which criterion failing: docs/perf-gate.md, "Self-tests".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gate_harness import ORIGIN_IMPORTED, Case, GateSession, RunOutcome
from virnucpro.errors import InputError
from virnucpro.perf import criteria, gate
from virnucpro.perf import results as res
from virnucpro.io.paths import CONSENSUS, LOG_NAME, PREDICTIONS, RUN_JSON
from virnucpro.perf.compare import compare_dirs
from virnucpro.perf.gate import GateError, RunRecord
from virnucpro.perf.sampler import Samples

pytestmark = pytest.mark.perf_smoke
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@pytest.fixture(scope="module")
def smoke_case(gate_session: GateSession) -> Case:
    if gate_session.profile.device != "cpu":
        pytest.skip(f"the self-test breaks a CPU smoke run; this session's profile is "
                    f"{gate_session.profile.name}")
    return gate_session.cases[0]


@pytest.fixture(scope="module")
def smoke_run(gate_session: GateSession, smoke_case: Case) -> RunRecord:
    try:
        return gate_session.run(smoke_case)
    except GateError as exc:
        pytest.fail(f"the smoke run itself failed, so the gate cannot be tested: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def reference_run(gate_session: GateSession, smoke_run: RunRecord) -> RunRecord:
    try:
        return gate_session.reference_run()
    except GateError as exc:
        pytest.fail(f"the reference run failed, so the gate cannot be tested: {exc}", pytrace=False)


@pytest.fixture
def broken(smoke_run: RunRecord, tmp_path: Path) -> Path:
    """A private copy of the real run's output directory, to break."""
    dst = tmp_path / "run"
    shutil.copytree(smoke_run.outdir, dst)
    return dst


def _reload(broken: Path, like: RunRecord, config: str | None = None, n_gpus: int | None = None,
            wall_s: float | None = None, harness: Samples | None = None) -> RunRecord:
    return gate.load_run(broken, config or like.config, like.n_gpus if n_gpus is None else n_gpus,
                         wall_s=like.wall_s if wall_s is None else wall_s,
                         harness=like.harness if harness is None else harness)


def test_the_real_smoke_run_is_sound(smoke_run: RunRecord) -> None:
    """The unbroken run loads and its telemetry holds what the criteria read."""
    again = gate.load_run(smoke_run.outdir, smoke_run.config, 0, wall_s=smoke_run.wall_s)
    assert again.reads > 0 and again.summary["frames"] > 0, \
        f"expected reads and frames > 0, saw {again.reads} reads, {again.summary['frames']} frames"
    assert {"chunk_translate", "load_models"} <= set(again.stages), f"stages seen: {again.stages}"
    assert compare_dirs(smoke_run.outdir, smoke_run.outdir).passes(1.0)
    assert again.clock_offset is not None, "the log's timestamps must place the telemetry on the epoch clock"
    assert smoke_run.harness is not None and smoke_run.harness.cpu, "the harness sampled no CPU time"
    cpu, why = criteria.processing_cpu_s(smoke_run)
    assert cpu is not None and cpu > 0, f"no CPU seconds in the processing window: {why}"


def test_benchmark_records_the_run_alone_whoever_launched_it(gate_session: GateSession, smoke_case: Case,
                                                             smoke_run: RunRecord) -> None:
    """The benchmark test's timer reports the harness's wall clock of the configuration's run:
    the same figure when the run was launched earlier by another test (as here: the smoke_run
    fixture), and the warm-up (pedantic's setup) never in it."""
    from gate_harness import RunClock

    clock = RunClock(gate_session, smoke_case)
    start, end = clock(), clock()
    assert (start, end) == (0.0, smoke_run.wall_s), (start, end, smoke_run.wall_s)
    o = gate_session.runs[smoke_case.config]
    assert abs(smoke_run.wall_s - (o.end - o.start)) < 1.0, "the subprocess's own wall clock, not a session's span"
    warm = gate_session.runs.get("warmup")
    assert warm is None or warm.end <= o.start, "the warm-up ran inside the timed run"


def test_gate_names_one_criterion_once() -> None:
    """Test, profile section and report row of a criterion are one name (no duplicate rows)."""
    from gate_harness import CRITERIA

    assert {c for c, _ in CRITERIA.values()} - {"benchmark"} == set(gate.CRITERIA)
    assert all(t == f"test_{c}" for t, (c, _) in CRITERIA.items() if c != "benchmark"), CRITERIA


# ----------------------------------------------------------------------------- broken runs

def test_missing_prediction_file_fails(broken: Path) -> None:
    (broken / PREDICTIONS).unlink()
    with pytest.raises(GateError, match=r"cpu-fp32: the run wrote no prediction_results\.txt"):
        gate.load_run(broken, "cpu-fp32", 0)


def test_telemetry_without_summary_fails(broken: Path) -> None:
    log = broken / LOG_NAME
    lines = log.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if '"event": "summary"' not in ln]
    assert len(kept) < len(lines), "the real log must hold a summary event to remove"
    log.write_text("".join(kept))
    with pytest.raises(GateError, match=r"has no 'summary' telemetry event"):
        gate.load_run(broken, "cpu", 0)


def test_missing_log_fails(broken: Path) -> None:
    (broken / LOG_NAME).unlink()
    with pytest.raises(GateError, match=r"wrote no log file"):
        gate.load_run(broken, "cpu", 0)


def test_corrupted_scores_are_refused(smoke_run: RunRecord, broken: Path) -> None:
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    fields = lines[1].split("\t")
    lines[1] = "\t".join(fields[:3] + ["not-a-score"])
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"prediction_results\.txt: line 2: score2 is not a number"):
        compare_dirs(smoke_run.outdir, broken)


# ----------------------------------------------------------------------------- correctness

def _flip_every(broken: Path, step: int) -> None:
    for name, col, flip in ((PREDICTIONS, 1, {"virus": "others", "others": "virus"}),
                            (CONSENSUS, 1, {"True": "False", "False": "True"})):
        p = broken / name
        lines = p.read_text().splitlines()
        for i in range(1, len(lines), step):
            f = lines[i].split("\t")
            f[col] = flip[f[col]]
            lines[i] = "\t".join(f)
        p.write_text("\n".join(lines) + "\n")


def test_wrong_labels_fail_correctness(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """Flip every 10th frame label and chunk consensus: agreement ~90% < the profile's floor, and
    the flipped rows are not borderline."""
    _flip_every(broken, 10)
    border = criteria.borderline_counts(smoke_run.outdir, broken, 0.02)
    check = criteria.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu-fp16", hw_profile,
                                       borderline=border, precision="fp16")
    assert not check.passed, f"flipped labels must fail correctness: {check.message}"
    assert re.search(r"frame: label agreement \d+\.\d+% < target 99", check.message), check.message
    assert re.search(r"consensus: label agreement \d+\.\d+% < target 99", check.message), check.message
    assert re.search(r"frame: \d+ disagreement\(s\) not borderline", check.message), check.message


def test_one_non_borderline_disagreement_fails_correctness(smoke_run: RunRecord, broken: Path,
                                                           hw_profile) -> None:
    """Agreement stays above 99.5%, but the one flipped frame sits far from 0.5: not borderline,
    beyond the cpu-smoke allowance of none. The same flip on a frame scored ~0.5 is borderline."""
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    scores = [(abs(float(ln.split("\t")[3]) - 0.5), i) for i, ln in enumerate(lines[1:], 1)]
    far, near = max(scores)[1], min(scores)[1]
    for i in (far,):
        f = lines[i].split("\t")
        f[1] = {"virus": "others", "others": "virus"}[f[1]]
        lines[i] = "\t".join(f)
    p.write_text("\n".join(lines) + "\n")
    border = criteria.borderline_counts(smoke_run.outdir, broken, 0.02)
    check = criteria.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu-fp16", hw_profile,
                                       borderline=border, precision="fp16")
    assert not check.passed and "frame: 1 disagreement(s) not borderline" in check.message, check.message
    assert "frame disagreements borderline: 0 of 1" in check.measured, check.measured
    # a borderline disagreement (the frame scored closest to 0.5, its score nudged across) passes
    shutil.copyfile(smoke_run.outdir / PREDICTIONS, p)
    lines = p.read_text().splitlines()
    f = lines[near].split("\t")
    s2 = float(f[3])
    f[1], f[3] = ("others", "0.4999") if s2 >= 0.5 else ("virus", "0.5001")
    lines[near] = "\t".join(f)
    p.write_text("\n".join(lines) + "\n")
    assert abs(s2 - 0.5) <= 0.02, f"no frame of the real run scored within 0.02 of 0.5 ({s2})"
    border = criteria.borderline_counts(smoke_run.outdir, broken, 0.02)
    assert border.frames == 1 and border.frames_borderline == 1, border


def test_dropped_rows_fail_correctness(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-1]) + "\n")
    check = criteria.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu-fp32", hw_profile,
                                       precision="fp32")
    assert not check.passed and "frame: ids missing: 1 only in v1, 0 only in v2" in check.message, check.message


def test_fp32_scores_beyond_1e5_fail_correctness(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """fp32 must match the reference to 1e-5: one score moved by 1e-4 fails, labels unchanged."""
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    f = lines[1].split("\t")
    s2 = float(f[3])
    f[3] = f"{s2 + (1e-4 if s2 < 0.4 else -1e-4):.6f}"
    lines[1] = "\t".join(f)
    p.write_text("\n".join(lines) + "\n")
    check = criteria.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu-fp32", hw_profile,
                                       precision="fp32")
    assert not check.passed and re.search(r"max \|d\| (0\.0001\d*|9\.\d+e-05) violates <= 1e-05", check.message), \
        check.message


# ----------------------------------------------------------------------------- packing, utilisation

def _rewrite_summary(broken: Path, **changes) -> None:
    log = broken / LOG_NAME
    out = []
    for ln in log.read_text().splitlines(keepends=True):
        if '"event": "summary"' in ln:
            head, _, body = ln.partition("TELEMETRY ")
            rec = json.loads(body)
            rec.update(changes)
            ln = head + "TELEMETRY " + json.dumps(rec) + "\n"
        out.append(ln)
    log.write_text("".join(out))


def _add_events(broken: Path, events: list[dict]) -> None:
    """Telemetry lines inserted before the summary, stamped like the real ones."""
    log = broken / LOG_NAME
    lines = log.read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if '"event": "summary"' in ln)
    stamp = lines[i].split(" INFO ", 1)[0]
    new = [f"{stamp} INFO virnucpro.core.telemetry: TELEMETRY {json.dumps(e)}\n" for e in events]
    log.write_text("".join(lines[:i] + new + lines[i:]))


def test_impossible_packing_efficiency_fails(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    _rewrite_summary(broken, packing_efficiency=3.58)  # the previous rewrite's 358%
    check = criteria.check_packing(_reload(broken, smoke_run), hw_profile)
    assert not check.passed and "outside 0..100%" in check.message, check.message


def test_oom_retries_count_in_the_harness_packing(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """Out-of-memory re-packs are invisible to the plan's arithmetic (the pipeline's own figure);
    the harness counts each failed attempt's budget: three planted OOMs of full budget drop the
    packing below the floor, and the pipeline's unchanged figure disagrees beyond the tolerance."""
    real = criteria.check_packing(smoke_run, hw_profile)
    assert real.passed, f"the real run must pass packing: {real.message}"
    budget = next(e["budget"] for e in smoke_run.events if e.get("event") == "batch" and e.get("model") == "esm2")
    _add_events(broken, [{"event": "oom", "t": 1.0, "unit": 0, "model": "esm2", "budget": budget,
                          "retry_budget": budget // 2}] * 3)
    check = criteria.check_packing(_reload(broken, smoke_run), hw_profile)
    assert not check.passed and "3 OOM retries" in check.message, check.message
    assert "one of the two measurements is wrong" in check.message, check.message


def _gpu_profile(hw_profile) -> gate.Profile:
    return gate.Profile("t", hw_profile.path, {**hw_profile.data, "gpu_utilisation": {
        "min_pct": 80.0, "tolerance_pct": 5.0, "max_disagreement_pct": 15.0}})


def _harness_gpu(run: RunRecord, util: float) -> Samples:
    """NVML samples as the harness would take them, every 0.2 s over the whole run, on GPU 0."""
    h = dataclasses.replace(run.harness, gpu=[], gpu_note=None)
    t0 = run.clock_offset
    h.gpu = [(t0 + 0.2 * i, 0, util) for i in range(int(run.summary["wall_s"] / 0.2) + 2)]
    return h


def test_gpu_utilisation_is_not_measured_on_a_cpu(smoke_run: RunRecord, hw_profile) -> None:
    check = criteria.check_gpu_util(smoke_run, _gpu_profile(hw_profile))
    assert check.not_measured and not check.passed, check.message
    assert "not measured: no GPU in this configuration" in check.measured, check.measured


def test_low_gpu_utilisation_fails(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """Harness samples at 50% over the embedding window fail the 80% floor."""
    run = _reload(broken, smoke_run, config="1gpu", n_gpus=1, harness=_harness_gpu(smoke_run, 50.0))
    check = criteria.check_gpu_util(run, _gpu_profile(hw_profile))
    assert not check.passed and "GPU 0: 50.0%" in check.message, check.message
    good = criteria.check_gpu_util(_reload(broken, smoke_run, config="1gpu", n_gpus=1,
                                           harness=_harness_gpu(smoke_run, 97.0)), _gpu_profile(hw_profile))
    assert good.passed, good.message


def test_pipeline_utilisation_disagreeing_with_the_harness_fails(smoke_run: RunRecord, broken: Path,
                                                                 hw_profile) -> None:
    """The pipeline claims 97% while the harness sampled 82%: both above the floor, but 15+ points
    apart (> max_disagreement_pct): one measurement is wrong, the criterion fails; 3 points apart
    is within the tolerance and passes."""
    _rewrite_summary(broken, gpu_util_mean=99.0)
    run = _reload(broken, smoke_run, config="1gpu", n_gpus=1, harness=_harness_gpu(smoke_run, 82.0))
    check = criteria.check_gpu_util(run, _gpu_profile(hw_profile))
    assert not check.passed and "one of the two measurements is wrong" in check.message, check.message
    close = _reload(broken, smoke_run, config="1gpu", n_gpus=1, harness=_harness_gpu(smoke_run, 96.0))
    assert criteria.check_gpu_util(close, _gpu_profile(hw_profile)).passed


# ----------------------------------------------------------------------------- wall time, scaling, consistency

def test_slow_run_fails_wall_time(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """The same run, had its read-proportional part taken twice the cpu-smoke limit, fails."""
    run = _reload(broken, smoke_run)
    check = gate.check_wall_time(run, hw_profile)
    assert check.passed, f"the real smoke run must pass its limit: {check.message}"
    startup = run.wall_s - float(run.summary["wall_s"])
    variable = 2 * hw_profile.wall_limit_per_million("cpu", 0) * run.reads / gate.MILLION
    slow_wall = run.stages.get("load_models", 0.0) + variable
    _rewrite_summary(broken, wall_s=slow_wall)
    slow = gate.check_wall_time(_reload(broken, smoke_run, wall_s=startup + slow_wall), hw_profile)
    assert not slow.passed and f"wall_time [{smoke_run.config}] FAIL" in slow.message, slow.message


def _scaling_profile(hw_profile) -> gate.Profile:
    return gate.Profile("t", hw_profile.path, {**hw_profile.data, "scaling": {"min_efficiency": 0.95},
                                               "consistency": {"min_agreement": 1.0, "max_abs_diff": 0.0}})


def test_poor_scaling_fails(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """The real run as a 1-GPU run and, unchanged, as a '2-GPU' run taking 60% of its time:
    1.67x < 1.90x fails; at 51% (1.96x) it passes; a lost worker fails whatever the ratio."""
    one = _reload(smoke_run.outdir, smoke_run, config="1gpu", n_gpus=1)
    p = _scaling_profile(hw_profile)
    slow = criteria.check_scaling(one, _reload(broken, smoke_run, "2gpu", 2, wall_s=0.6 * one.wall_s), p)
    assert not slow.passed and "1.67x" in slow.measured, slow.message
    assert criteria.check_scaling(one, _reload(broken, smoke_run, "2gpu", 2, wall_s=0.51 * one.wall_s), p).passed
    _rewrite_summary(broken, workers_lost=1)
    lost = criteria.check_scaling(one, _reload(broken, smoke_run, "2gpu", 2, wall_s=0.5 * one.wall_s), p)
    assert not lost.passed and "1 worker process(es) died" in lost.message, lost.message


def test_inconsistent_gpu_outputs_fail(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """A '2-GPU' copy of the real outputs with one score moved by 1e-4 is not identical."""
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    f = lines[-1].split("\t")
    f[3] = f"{float(f[3]) + (1e-4 if float(f[3]) < 0.4 else -1e-4):.6f}"
    lines[-1] = "\t".join(f)
    p.write_text("\n".join(lines) + "\n")
    one = _reload(smoke_run.outdir, smoke_run, "1gpu", 1)
    check = criteria.check_consistency(one, _reload(broken, smoke_run, "2gpu", 2), _scaling_profile(hw_profile))
    assert not check.passed and re.search(r"max \|score2 difference\| (0\.0001|9\.\d+e-05) > 0", check.message), \
        check.message
    same = criteria.check_consistency(one, _reload(smoke_run.outdir, smoke_run, "2gpu", 2), _scaling_profile(hw_profile))
    assert same.passed, same.message


# ----------------------------------------------------------------------------- speedups

def test_fast_engine_made_3x_slower_fails_speedup(gate_session: GateSession, smoke_case: Case,
                                                  smoke_run: RunRecord, reference_run: RunRecord,
                                                  hw_profile, tmp_path: Path) -> None:
    """The planted defect: the fast engine with every model call computed 3 times
    (perf_tests/planted_slowdown.py), launched as the real run was, on the same reads. The real run
    passes speedup_vs_reference; the slowed one fails it."""
    real = criteria.check_speedup_vs_reference(reference_run, smoke_run, hw_profile, same_reads=True,
                                               repeats=gate_session.speedup_repeats(smoke_case))
    assert real.passed, f"the real run must pass: {real.message}"
    cmd = gate_session.predict_command(gate_session.workload(), tmp_path / "slow", "fast", "cpu", 0,
                                       smoke_case.precision)
    assert cmd[1:3] == ["-m", "virnucpro"], cmd
    counts = tmp_path / "planted_calls.json"
    cmd[1:3] = [str(HERE / "planted_slowdown.py"), "3", str(counts)]
    outcome = gate_session.launch(smoke_case, cmd, tmp_path / "slow", 600)
    assert outcome.record is not None, f"the slowed run failed: {outcome.error}"
    slow = criteria.check_speedup_vs_reference(reference_run, outcome.record, hw_profile, same_reads=True)
    gate_session.notes.append(f"self-test: the fast engine ({smoke_case.config}) with every model call computed "
                              f"3 times measured {slow.measured.split(' (')[0]} the reference engine's speed "
                              f"against {real.measured.split(' (')[0]} unchanged: "
                              f"{'FAIL, as it must' if not slow.passed else 'PASS (the gate missed it)'}")
    assert not slow.passed, f"a 3x slower fast engine must fail speedup_vs_reference: {slow.message}"
    # the defect took effect where it was planted: ESM-2's module calls, each computed 3 times (the fast
    # engine calls PackedESM2 as a module; its DNABERT-S layers are plain functions the planted wrapper
    # does not reach). Counted, not timed: ESM-2's stage time against the real run's, measured minutes
    # apart, came out 1.70x for this 3x slowdown with two test suites sharing the 2 cores (2026-12-07).
    planted = json.loads(counts.read_text())
    esm_calls = planted["repeated_calls"].get("PackedESM2", 0)
    assert planted["factor"] == 3 and esm_calls > 0, \
        f"the planted slowdown never repeated an ESM-2 call: repeated top-level calls {planted['repeated_calls']}"


def test_speedup_vs_v1_fails_a_slow_run(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """The known v1.0 timing (rtx4090 profile: 12,600 s for 1M reads on 2 GPUs): the real run,
    presented as a 2-GPU run whose read-proportional part projects to 1,500 s per 1M reads,
    passes 4x (8.4x); the same run 3x slower (4,500 s: 2.8x) fails."""
    prof = gate.profiles_in(ROOT / "baselines" / "profiles")["rtx4090"]
    fixed, reads = smoke_run.fixed_s, smoke_run.reads
    startup = smoke_run.wall_s - float(smoke_run.summary["wall_s"])

    def as_if(projected: float) -> RunRecord:   # the run's fixed part kept, its variable part scaled
        wall = fixed + (projected - fixed) * reads / gate.MILLION
        _rewrite_summary(broken, wall_s=wall - startup)
        return _reload(broken, smoke_run, "2gpu", 2, wall_s=wall)

    ok = criteria.check_speedup_vs_v1(as_if(1500.0), prof)
    assert ok.passed and "8.40x" in ok.measured and "known v1.0 timing 12,600 s" in ok.message, ok.message
    bad = criteria.check_speedup_vs_v1(as_if(fixed + 3 * (1500.0 - fixed)), prof)
    assert not bad.passed and ">= 4x" in bad.target, bad.message


# ----------------------------------------------------------------------------- baselines

def test_baseline_of_other_chunk_length_is_refused(smoke_run: RunRecord, tmp_path: Path) -> None:
    """The 300-vs-500 mistake: a baseline made at another chunk length is refused, loudly."""
    from virnucpro.perf import baseline as bl

    b = tmp_path / "b500"
    b.mkdir()
    for name in (PREDICTIONS, CONSENSUS):
        shutil.copyfile(smoke_run.outdir / name, b / name)
    manifest = {"format": bl.FORMAT, "chunk_length": 500, "chunking": "original",
                "models": {"fingerprints": bl.run_fingerprints(smoke_run.manifest)}}
    (b / bl.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"refusing to compare .*chunk length differs: baseline 500, run 300"):
        bl.check_compatible(bl.load_baseline(b), smoke_run.manifest)


def test_imported_v1_outputs_are_the_named_baseline(gate_session: GateSession, smoke_run: RunRecord,
                                                    reference_run: RunRecord, tmp_path: Path) -> None:
    """`virnucpro baseline import` on real output files (the session's reference run stands in for
    a v1.0 directory) and the workload: the manifest records sha256s, input and chunk length; the
    gate given it by --baseline compares against it and names its origin."""
    out = tmp_path / "imported"
    proc = subprocess.run([sys.executable, "-m", "virnucpro", "baseline", "import", str(reference_run.outdir),
                           "--input", str(gate_session.workload()), "--chunk-length", "300", "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"baseline import exited {proc.returncode}: {proc.stderr[-500:]}"
    m = json.loads((out / "manifest.json").read_text())
    assert m["origin"] == "imported-v1" and m["chunk_length"] == 300, m
    assert m["workload"]["sha256"] == gate_session.workload_sha256()
    assert set(m["source"]["files"]) == {PREDICTIONS, CONSENSUS}
    gs = GateSession(gate_session.profile, "test", {**gate_session.options, "baseline": str(out),
                                                    "gate_out": str(tmp_path / "g")},
                     gate_session.root, 0, None)
    result, note, border = gs.compare_against_baseline(smoke_run)
    assert gs.baseline_origin == ORIGIN_IMPORTED and "imported v1.0 outputs" in note, note
    assert result.modes["frame"].n_both == smoke_run.summary["frames"]
    bad = subprocess.run([sys.executable, "-m", "virnucpro", "baseline", "import", str(reference_run.outdir),
                          "--input", str(gate_session.out / "warmup-input.fa"), "--outdir", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "which is not in the input" in bad.stderr, bad.stderr


def test_baseline_make_round_trip(gate_session: GateSession, reference_run: RunRecord, tmp_path: Path) -> None:
    """`virnucpro baseline make` on the first 100 reads: manifest complete, outputs equal to the
    session's reference run on those reads (same engine and models), found for that input."""
    from virnucpro.perf import baseline as bl

    sub = tmp_path / "first100.fa"
    ids = gate.head_fasta(gate_session.workload(), sub, 100)
    cmd = [sys.executable, "-m", "virnucpro", "baseline", "make", "smoke-test", "--out-root", str(tmp_path),
           "--models", str(gate_session.models()), "--workload", str(sub),
           "--chunk-length", str(gate_session.chunk_length), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **gate_session.run_env()})
    assert proc.returncode == 0, f"baseline make exited {proc.returncode}: {proc.stderr[-500:]}"
    b = bl.load_baseline(tmp_path / "smoke-test")
    m = b.manifest
    for key in ("engine", "chunk_length", "models", "workload", "date", "machine", "wall_s", "origin"):
        assert key in m, f"manifest lacks {key}: {sorted(m)}"
    assert m["engine"] == "reference" and m["origin"] == bl.ORIGIN_REFERENCE
    assert m["workload"]["sha256"] == bl.sha256_file(sub)
    assert m["models"]["fingerprints"] == bl.run_fingerprints(reference_run.manifest)
    same = gate.restrict_outputs(reference_run.outdir, set(ids), tmp_path / "ref100")
    assert compare_dirs(b.path, same).passes(1.0), "same engine, models and input: identical"
    found = bl.find_compatible(tmp_path, reference_run.manifest, bl.sha256_file(sub))
    assert found is not None and found.path == b.path


# ----------------------------------------------------------------------------- report, verdict, history

def _crafted_gpu_run(tmp: Path, config: str, n: int, wall: float) -> RunRecord:
    """A GPU-like run record (batch and gpu_sample events) for exercising the report's plots."""
    events = [{"event": "batch", "t": 5.0 + i, "dt": 1.0, "model": m, "tokens": 40_000 + 100 * i,
               "budget": 42_000, "packing_efficiency": 0.97} for i in range(20) for m in ("esm2", "dnabert")]
    events += [{"event": "gpu_sample", "t": 5.0 + 0.5 * i, "gpu": g, "util_pct": 90 + (i % 7)}
               for i in range(40) for g in range(n)]
    summary = {"event": "summary", "t": wall, "wall_s": wall, "reads": 100_000, "chunks": 60_000, "frames": 80_000,
               "stages": {"load_models": 3.0, "embed_dnabert": 2.0, "embed_esm": wall - 6.0, "write": 1.0},
               "packing_efficiency": 0.97, "gpu_util_mean": 93.0, "mfu_esm": 0.71, "esm_tokens_per_s": 1e5}
    harness = Samples(start=1000.0, end=1000.0 + wall, gpu=[(1000.0 + 0.2 * i, g, 92.0) for i in range(150)
                                                           for g in range(n)])
    return RunRecord(config=config, n_gpus=n, outdir=tmp / config, wall_s=wall, summary=summary,
                     events=events, manifest={"synthetic": True}, harness=harness, clock_offset=1000.0)


def _crafted_session(tmp_path: Path, **options) -> GateSession:
    profiles = gate.profiles_in(ROOT / "baselines" / "profiles")
    opts = {"gate_out": str(tmp_path / "out"), "gate_cache": str(tmp_path / "cache"), **options}
    gs = GateSession(profiles["rtx4090"], "test", opts, tmp_path, detected=2, gpu_name="NVIDIA GeForce RTX 4090")
    gs.selected, gs.criteria_selected = list(gs.cases), True
    one, two = _crafted_gpu_run(tmp_path, "1gpu", 1, 100.0), _crafted_gpu_run(tmp_path, "2gpu", 2, 52.0)
    gs.runs = {"1gpu": RunOutcome(one, start=1000.0, end=1100.0, command=["virnucpro", "predict", "x"]),
               "2gpu": RunOutcome(two, start=1100.0, end=1152.0, command=["virnucpro", "predict", "y"])}
    return gs


def _row(criterion: str, config: str, outcome: str, **values) -> dict:
    return {"test": f"test_{criterion}", "criterion": criterion, "config": config, "outcome": outcome,
            "target": "t", "measured": "m", "details": [], "values": values}


def test_report_tables_and_plots(tmp_path: Path) -> None:
    """The report writer on crafted 1- and 2-GPU runs: one row per criterion, a column per
    configuration, the system and commands, results.json with its schema version, 4 plots."""
    from gate_report import write_report

    gs = _crafted_session(tmp_path)
    gs.results = [
        {**_row("wall_time", "1gpu", "passed"), "measured": "1,000 s"},
        {**_row("scaling", "2gpu", "failed"), "measured": "1.92x"},
        {"test": "test_gpu_utilisation", "criterion": "gpu_utilisation", "config": "2gpu",
         "outcome": "skipped", "reason": "2gpu needs 2 GPU(s); 1 detected"},
        {**_row("gpu_utilisation", "1gpu", "passed"), "measured": "92%"},
    ]
    path = write_report(gs)
    text = path.read_text()
    assert text.startswith("# Performance gate report — FAIL — failed: scaling [2gpu]"), text[:120]
    assert "| wall_time | **PASS** 1,000 s | — |" in text, text
    assert "| scaling | — | **FAIL** 1.92x |" in text, text
    assert "| gpu_utilisation | **PASS** 92% | **skip** 2gpu needs 2 GPU(s); 1 detected |" in text, text
    assert len(re.findall(r"^\| gpu_util", text, re.M)) == 1, "one row per criterion"
    for part in ("- system: ", "- software: virnucpro ", "- workload: ", "- models: ", "`virnucpro predict x`"):
        assert part in text, f"{part!r} missing from the report"
    for png in ("throughput.png", "gpu_util.png", "stages.png", "scaling.png"):
        assert (path.parent / png).stat().st_size > 1000, f"{png} missing or empty"
        assert f"]({png})" in text, f"{png} not linked from the report"
    doc = json.loads((path.parent / "results.json").read_text())
    assert doc["schema_version"] == res.SCHEMA_VERSION and doc["verdict"]["word"] == "FAIL"
    assert len(doc["results"]) == 4 and doc["runs"]["1gpu"]["command"] == ["virnucpro", "predict", "x"]


def test_verdict_not_run_incomplete_and_allowed_partial(tmp_path: Path) -> None:
    """A sign-off is green only when its configurations ran: nothing ran -> NOT RUN; 2gpu missing
    -> INCOMPLETE (exit non-zero); with --gate-allow-missing -> PASS that says PARTIAL."""
    from gate_report import verdict

    gs = _crafted_session(tmp_path)
    gs.criteria_selected = False
    v = verdict(gs, [])
    assert v.ok and v.word == "NO CRITERIA", "only the benchmark recorder selected: nothing to judge"
    gs.criteria_selected = True
    gs.results = [_row("wall_time", "1gpu", "skipped"), _row("wall_time", "2gpu", "skipped")]
    gs.detected = 0
    v = verdict(gs, [])
    assert not v.ok and v.word == "NOT RUN" and "1gpu: needs 1 GPU(s); none detected" in v.line, v.line
    gs.detected = 1
    gs.results = [_row("wall_time", "1gpu", "passed"), {**_row("wall_time", "2gpu", "skipped")}]
    v = verdict(gs, [])
    assert not v.ok and v.word == "INCOMPLETE" and "2gpu: needs 2 GPU(s); 1 detected" in v.line, v.line
    gs.options["gate_allow_missing"] = True
    v = verdict(gs, [])
    assert v.ok and v.line.startswith("PASS — PARTIAL, accepted by --gate-allow-missing: not run: 2gpu"), v.line
    gs.gpu_name = "NVIDIA H200"
    gs.detected = 2
    gs.options["gate_allow_missing"] = False
    v = verdict(gs, [])
    assert not v.ok and "profile rtx4090 is for GPUs matching RTX 4090" in v.line, v.line


def test_regression_against_the_previous_result_fails(tmp_path: Path) -> None:
    """--gate-previous: the same criteria, the speedup now 3x lower and a pass turned failure.
    The report says which criterion moved; with --gate-max-regression 10 the verdict is FAIL."""
    from gate_report import write_report

    gs = _crafted_session(tmp_path / "a")
    gs.results = [_row("speedup_vs_v1", "1gpu", "passed", ratio=9.0), _row("wall_time", "1gpu", "passed",
                                                                           projected_s_per_million=1000.0)]
    prev = json.loads(write_report(gs).with_name("results.json").read_text())
    prev_file = tmp_path / "previous.json"
    prev_file.write_text(json.dumps(prev))
    gs2 = _crafted_session(tmp_path / "b", gate_previous=str(prev_file), gate_max_regression=10.0)
    gs2.results = [_row("speedup_vs_v1", "1gpu", "passed", ratio=3.0), _row("wall_time", "1gpu", "passed",
                                                                            projected_s_per_million=1004.0)]
    text = write_report(gs2).read_text()
    assert gs2.verdict.word == "FAIL" and "speedup_vs_v1 [1gpu]: 9 -> 3 (-66.7%, worse)" in gs2.verdict.line, \
        gs2.verdict.line
    assert "| speedup_vs_v1 | 1gpu | 9 -> 3 (-66.7%, worse) | **yes** |" in text, text
    assert "wall_time | 1gpu" not in text, "a 0.4% move is not a move"
    gs3 = _crafted_session(tmp_path / "c", gate_previous=str(prev_file))
    gs3.results = gs2.results
    write_report(gs3)
    assert gs3.verdict.ok, f"without --gate-max-regression a move is reported, not failed: {gs3.verdict.line}"


def test_gpu_profile_on_this_cpu_machine_exits_non_zero_not_run(tmp_path: Path) -> None:
    """`pytest perf_tests -m gpu4090` where no GPU is visible: every criterion skips, and the
    session must still exit non-zero with the NOT RUN verdict and its reason in the report."""
    proc = subprocess.run([sys.executable, "-m", "pytest", str(HERE), "-m", "gpu4090", "-q", "-p", "no:cacheprovider",
                           "--gate-out", str(tmp_path / "out"), "--benchmark-disable"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    tail = proc.stdout[-1500:]
    assert proc.returncode != 0, f"a sign-off that ran nothing exited 0:\n{tail}"
    assert re.search(r"\d+ skipped", tail) and " passed" not in tail, tail
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# Performance gate report — NOT RUN — nothing was measured: "
                             "1gpu: needs 1 GPU(s); none detected"), report[:300]
    assert "performance gate: NOT RUN" in proc.stdout, tail


# ----------------------------------------------------------------------------- warm-up

def test_warm_up_runs_once_before_the_timed_runs(gate_session: GateSession, tmp_path: Path) -> None:
    """[run] warmup_reads: one untimed run of the first N reads, noted in the report, then never again."""
    data = {**gate_session.profile.data, "run": {**gate_session.profile.data["run"], "warmup_reads": 5}}
    prof = dataclasses.replace(gate_session.profile, data=data)
    opts = {**gate_session.options, "gate_out": str(tmp_path / "out")}
    gs = GateSession(prof, "test", opts, tmp_path, gate_session.detected, gate_session.gpu_name)
    gs.warm_up()
    notes = [n for n in gs.notes if n.startswith("warm-up")]
    assert len(notes) == 1 and "5 reads on the CPU" in notes[0], gs.notes
    out = tmp_path / "out" / "runs" / "warmup"
    assert (out / "prediction_results.txt").is_file(), "the warm-up did not run the pipeline"
    assert (tmp_path / "out" / "warmup-input.fa").read_text().count(">") == 5
    gs.warm_up()
    assert len([n for n in gs.notes if n.startswith("warm-up")]) == 1, "the warm-up ran twice"
    no_warm = {**data, "run": {**data["run"], "warmup_reads": 0}}
    cold = GateSession(dataclasses.replace(prof, data=no_warm), "test", {**opts, "gate_out": str(tmp_path / "o2")},
                       tmp_path, gate_session.detected, gate_session.gpu_name)
    cold.warm_up()
    assert not [n for n in cold.notes if n.startswith("warm-up")], "a profile without warmup_reads warmed up"


@pytest.mark.parametrize("detected, expected", [(1, 1), (2, 2), (4, 4)])
def test_warm_up_uses_the_gpus_of_the_largest_configuration(gate_session: GateSession, tmp_path: Path,
                                                            detected: int, expected: int) -> None:
    """Compile caches are kept per GPU index: a 1-GPU warm-up would leave GPU 1's compile to
    the timed 2-GPU run. The h200 profile asks for 1 and 2 GPUs (and more when more are present)."""
    prof = gate.load_profile(ROOT / "baselines" / "profiles" / "h200.toml")
    opts = {**gate_session.options, "gate_out": str(tmp_path / "out")}
    gs = GateSession(prof, "test", opts, tmp_path, detected, "NVIDIA H200")
    assert gs.warmup_gpus() == expected, f"{detected} GPU(s) detected: warm-up on {gs.warmup_gpus()}, expected {expected}"
    if gate_session.profile.device == "cpu":
        assert gate_session.warmup_gpus() == 0, "a CPU profile warmed up on a GPU"
