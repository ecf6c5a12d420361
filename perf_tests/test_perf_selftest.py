"""The gate tests itself: a real smoke run, deliberately broken, must fail each criterion with a
specific message (perf_smoke; runs in CI on the CPU).

Every test copies the session's real ``cpu`` run, breaks one thing the way a faulty pipeline
would, and runs the same functions the criterion tests use.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gate_harness import Case, GateSession
from virnucpro.perf import gate
from virnucpro.io.paths import CONSENSUS, LOG_NAME, PREDICTIONS
from virnucpro.perf.compare import compare_dirs
from virnucpro.errors import InputError
from virnucpro.perf.gate import GateError, RunRecord

pytestmark = pytest.mark.perf_smoke


@pytest.fixture(scope="module")
def smoke_run(gate_session: GateSession) -> RunRecord:
    if gate_session.profile.device != "cpu":
        pytest.skip(f"the self-test breaks a CPU smoke run; this session's profile is "
                    f"{gate_session.profile.name}")
    try:
        return gate_session.run(Case(gate.CPU_CONFIG, 0))
    except GateError as exc:
        pytest.fail(f"the smoke run itself failed, so the gate cannot be tested: {exc}", pytrace=False)


@pytest.fixture
def broken(smoke_run: RunRecord, tmp_path: Path) -> Path:
    """A private copy of the real run's output directory, to break."""
    dst = tmp_path / "run"
    shutil.copytree(smoke_run.outdir, dst)
    return dst


def test_the_real_smoke_run_is_sound(smoke_run: RunRecord) -> None:
    """The unbroken run loads and its telemetry holds what the criteria read."""
    again = gate.load_run(smoke_run.outdir, "cpu", 0, wall_s=smoke_run.wall_s)
    assert again.reads > 0 and again.summary["frames"] > 0, \
        f"expected reads and frames > 0, saw {again.reads} reads, {again.summary['frames']} frames"
    assert {"chunk_translate", "load_models"} <= set(again.stages), f"stages seen: {again.stages}"
    assert compare_dirs(smoke_run.outdir, smoke_run.outdir).passes(1.0)


def test_missing_prediction_file_fails(broken: Path) -> None:
    (broken / PREDICTIONS).unlink()
    with pytest.raises(GateError, match=r"cpu: the run wrote no prediction_results\.txt"):
        gate.load_run(broken, "cpu", 0)


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


def test_wrong_labels_fail_correctness(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """Flip every 10th frame label and chunk consensus: agreement ~90% < the profile's floor."""
    for name, col, flip in ((PREDICTIONS, 1, {"virus": "others", "others": "virus"}),
                            (CONSENSUS, 1, {"True": "False", "False": "True"})):
        p = broken / name
        lines = p.read_text().splitlines()
        for i in range(1, len(lines), 10):
            f = lines[i].split("\t")
            f[col] = flip[f[col]]
            lines[i] = "\t".join(f)
        p.write_text("\n".join(lines) + "\n")
    check = gate.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu", hw_profile)
    assert not check.passed, f"flipped labels must fail correctness: {check.message}"
    assert re.search(r"frame: label agreement \d+\.\d+% < target 99", check.message), check.message
    assert re.search(r"consensus: label agreement \d+\.\d+% < target 99", check.message), check.message


def test_dropped_rows_fail_correctness(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    p = broken / PREDICTIONS
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-1]) + "\n")
    check = gate.check_correctness(compare_dirs(smoke_run.outdir, broken), "cpu", hw_profile)
    assert not check.passed and "frame: ids missing: 1 only in v1, 0 only in v2" in check.message, check.message


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


def test_impossible_packing_efficiency_fails(broken: Path, hw_profile) -> None:
    _rewrite_summary(broken, packing_efficiency=3.58)  # the previous rewrite's 358%
    run = gate.load_run(broken, "cpu", 0)
    profile = gate.Profile("t", hw_profile.path, {**hw_profile.data, "packing": {"min_efficiency": 0.9}})
    check = gate.check_packing(run, profile)
    assert not check.passed and "outside 0..100%" in check.message, check.message


def test_slow_run_fails_wall_time(smoke_run: RunRecord, broken: Path, hw_profile) -> None:
    """The same run, had its read-proportional part taken twice the cpu-smoke limit, fails."""
    run = gate.load_run(broken, "cpu", 0, wall_s=smoke_run.wall_s)
    check = gate.check_wall_time(run, hw_profile)
    assert check.passed, f"the real smoke run must pass its limit: {check.message}"
    startup = run.wall_s - float(run.summary["wall_s"])
    variable = 2 * hw_profile.wall_limit_per_million("cpu", 0) * run.reads / gate.MILLION
    slow_wall = run.stages.get("load_models", 0.0) + variable
    _rewrite_summary(broken, wall_s=slow_wall)
    slow = gate.check_wall_time(gate.load_run(broken, "cpu", 0, wall_s=startup + slow_wall), hw_profile)
    assert not slow.passed and "wall_time [cpu] FAIL" in slow.message, slow.message


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


def _crafted_gpu_run(tmp: Path, config: str, n: int, wall: float) -> RunRecord:
    """A GPU-like run record (batch and gpu_sample events) for exercising the report's plots."""
    events = [{"event": "batch", "t": 5.0 + i, "dt": 1.0, "model": m, "tokens": 40_000 + 100 * i,
               "packing_efficiency": 0.97} for i in range(20) for m in ("esm", "dnabert")]
    events += [{"event": "gpu_sample", "t": 5.0 + 0.5 * i, "gpu": g, "util_pct": 90 + (i % 7)}
               for i in range(40) for g in range(n)]
    summary = {"event": "summary", "wall_s": wall, "reads": 100_000, "chunks": 60_000, "frames": 80_000,
               "stages": {"load_models": 3.0, "embed_dnabert": 2.0, "embed_esm": wall - 6.0, "write": 1.0},
               "packing_efficiency": 0.97, "gpu_util_mean": 93.0, "mfu_esm": 0.71, "esm_tokens_per_s": 1e5}
    return RunRecord(config=config, n_gpus=n, outdir=tmp / config, wall_s=wall, summary=summary,
                     events=events, manifest={"synthetic": True})


def test_report_tables_and_plots(tmp_path: Path) -> None:
    """The report writer on crafted 1- and 2-GPU runs: table per criterion and config, 4 plots."""
    from gate_harness import RunOutcome
    from gate_report import write_report

    profiles = gate.profiles_in(Path(__file__).resolve().parent.parent / "baselines" / "profiles")
    opts = {"gate_out": str(tmp_path / "out"), "gate_cache": str(tmp_path / "cache")}
    gs = GateSession(profiles["rtx4090"], "test", opts, tmp_path, detected=2, gpu_name="NVIDIA GeForce RTX 4090")
    one, two = _crafted_gpu_run(tmp_path, "1gpu", 1, 100.0), _crafted_gpu_run(tmp_path, "2gpu", 2, 52.0)
    gs.runs = {"1gpu": RunOutcome(one), "2gpu": RunOutcome(two)}
    gs.results = [
        {"test": "test_wall_time", "criterion": "wall_time", "config": "1gpu", "outcome": "passed",
         "target": "<= 3,600 s", "measured": "1,000 s", "details": []},
        {"test": "test_scaling", "criterion": "scaling", "config": "2gpu", "outcome": "failed",
         "target": ">= 1.90x", "measured": "1.92x", "details": ["crafted"]},
        {"test": "test_gpu_utilisation", "criterion": "gpu_util", "config": "2gpu", "outcome": "skipped",
         "reason": "2gpu needs 2 GPU(s); 1 detected"},
    ]
    path = write_report(gs)
    text = path.read_text()
    assert text.startswith("# Performance gate report — FAIL"), text[:80]
    assert "| wall_time | **PASS** 1,000 s | — |" in text, text
    assert "| scaling | — | **FAIL** 1.92x |" in text, text
    assert "**skip** 2gpu needs 2 GPU(s); 1 detected" in text, text
    for png in ("throughput.png", "gpu_util.png", "stages.png", "scaling.png"):
        assert (path.parent / png).stat().st_size > 1000, f"{png} missing or empty"
        assert f"]({png})" in text, f"{png} not linked from the report"
    doc = json.loads((path.parent / "results.json").read_text())
    assert doc["verdict"] == "FAIL" and len(doc["results"]) == 3


def test_baseline_make_round_trip(gate_session: GateSession, smoke_run: RunRecord, tmp_path: Path) -> None:
    """`virnucpro baseline make` on the smoke workload: manifest complete, outputs equal to the
    smoke run (same engine and models), and the gate finds it for that run."""
    import subprocess
    import sys

    from virnucpro.perf import baseline as bl

    w = gate_session.workload_info
    cmd = [sys.executable, "-m", "virnucpro", "baseline", "make", "smoke-test", "--out-root", str(tmp_path),
           "--models", str(gate_session.models()), "--reads", str(w["reads"]), "--reads-seed", str(w["seed"]),
           "--length-profile", w["length_profile"], "--workload-cache", str(gate_session.cache),
           "--chunk-length", str(gate_session.chunk_length), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"baseline make exited {proc.returncode}: {proc.stderr[-500:]}"
    b = bl.load_baseline(tmp_path / "smoke-test")
    m = b.manifest
    for key in ("engine", "chunk_length", "models", "workload", "date", "machine", "wall_s"):
        assert key in m, f"manifest lacks {key}: {sorted(m)}"
    assert m["engine"] == "reference" and m["chunk_length"] == gate_session.chunk_length
    assert m["workload"]["sha256"] == gate_session.workload_sha256()
    assert m["models"]["fingerprints"] == bl.run_fingerprints(smoke_run.manifest)
    assert compare_dirs(b.path, smoke_run.outdir).passes(1.0), "same engine, models and input: identical"
    found = bl.find_compatible(tmp_path, smoke_run.manifest, gate_session.workload_sha256())
    assert found is not None and found.path == b.path


def test_warm_up_runs_once_before_the_timed_runs(gate_session: GateSession, tmp_path: Path) -> None:
    """[run] warmup_reads: one untimed run of the first N reads, noted in the report, then never again."""
    import dataclasses
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
    cold = GateSession(gate_session.profile, "test", {**opts, "gate_out": str(tmp_path / "o2")}, tmp_path,
                       gate_session.detected, gate_session.gpu_name)
    cold.warm_up()
    assert not [n for n in cold.notes if n.startswith("warm-up")], "a profile without warmup_reads warmed up"


@pytest.mark.parametrize("detected, expected", [(1, 1), (2, 2), (4, 4)])
def test_warm_up_uses_the_gpus_of_the_largest_configuration(gate_session: GateSession, tmp_path: Path,
                                                            detected: int, expected: int) -> None:
    """torch.compile's cache is kept per GPU index: a 1-GPU warm-up would leave GPU 1's compile to
    the timed 2-GPU run. The h200 profile asks for 1 and 2 GPUs (and more when more are present)."""
    prof = gate.load_profile(Path(__file__).resolve().parents[1] / "baselines" / "profiles" / "h200.toml")
    opts = {**gate_session.options, "gate_out": str(tmp_path / "out")}
    gs = GateSession(prof, "test", opts, tmp_path, detected, "NVIDIA H200")
    assert gs.warmup_gpus() == expected, f"{detected} GPU(s) detected: warm-up on {gs.warmup_gpus()}, expected {expected}"
    if gate_session.profile.device == "cpu":
        assert gate_session.warmup_gpus() == 0, "a CPU profile warmed up on a GPU"
