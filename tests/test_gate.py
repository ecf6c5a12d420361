"""virnucpro.perf.gate, .criteria, .baseline, .sampler and .results on crafted run directories: every
criterion's pass and fail path, profile validation and selection, which configurations a machine can
run, the harness's own measurements, baseline compatibility and import, the comparison of two
results — no pipeline, no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnucpro.perf import baseline as bl
from virnucpro.perf import criteria, gate
from virnucpro.perf import results as res
from virnucpro.perf.sampler import HarnessSampler, Samples, tree_cpu_s
from virnucpro.io.paths import CONSENSUS, LOG_NAME, PREDICTIONS, RUN_JSON
from virnucpro.perf.compare import compare_dirs
from virnucpro.errors import InputError
from virnucpro.perf.gate import GateError

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "baselines" / "profiles"

FRAMES = [("r1_chunk_1F1", 0.9), ("r1_chunk_1R2", 0.2), ("r2_chunk_1F2", 0.1), ("r3_chunk_1F1", 0.7)]


def write_outputs(d: Path, frames=FRAMES) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows = ["Sequence_ID\tPrediction\tscore1\tscore2"]
    best: dict[str, float] = {}
    for fid, s2 in frames:
        rows.append(f"{fid}\t{'virus' if s2 > 0.5 else 'others'}\t{1 - s2:.7g}\t{s2:.7g}")
        best[fid[:-2]] = max(best.get(fid[:-2], 0.0), s2)
    (d / PREDICTIONS).write_text("\n".join(rows) + "\n")
    cons = ["Modified_ID\tIs_Virus"] + [f"{c}\t{s >= 1 - s}" for c, s in sorted(best.items())]
    (d / CONSENSUS).write_text("\n".join(cons) + "\n")


def make_run(d: Path, *, wall_s: float = 95.0, reads: int = 1000, stages=None, events=(),
             fingerprints=None, chunk_length: int = 300, **summary) -> Path:
    """A run directory as `virnucpro predict` leaves it: outputs, run.json, telemetry log."""
    write_outputs(d)
    stages = stages if stages is not None else {"chunk_translate": 1.0, "load_models": 10.0, "embed_esm": 80.0}
    summ = {"event": "summary", "t": wall_s, "wall_s": wall_s, "reads": reads, "chunks": 3, "frames": 4,
            "stages": stages, "packing_efficiency": None, "gpu_util_mean": None, "mfu_esm": None, **summary}
    lines = [{"event": "run_start", "t": 0.0, "engine": "fast"}, *events,
             {"event": "stage", "t": 90.0, "stage": "embed_esm", "wall_s": 80.0, "tokens": 40_000}, summ]
    (d / LOG_NAME).write_text("".join(
        f"2026-11-29 16:55:00,123 INFO virnucpro.core.telemetry: TELEMETRY {json.dumps(e)}\n" for e in lines))
    manifest = {"chunk_length": chunk_length, "chunking": "original",
                "models": {"fingerprints": fingerprints or {"esm": "e1", "dnabert": "d1", "classifier": "c1"}}}
    (d / RUN_JSON).write_text(json.dumps(manifest))
    return d


def profile(**sections) -> gate.Profile:
    data = {"name": "t", "marker": "perf_smoke", "device": "cuda",
            "run": {"engine": "fast", "chunk_length": 300},
            "workload": {"reads": 1000, "seed": 1, "length_profile": "respiratory"},
            "models": {"preset": "tiny", "seed": 0},
            "wall_time": {"limit_s_per_million_reads": {"1": 3600, "2": 1800, "cpu": 1e9}}}
    data.update(sections)
    return gate.Profile("t", Path("t.toml"), data)


# ----------------------------------------------------------------------------- runs

def test_load_run_reads_summary_and_projects(tmp_path: Path) -> None:
    run = gate.load_run(make_run(tmp_path / "r"), "1gpu", 1, wall_s=100.0)
    assert run.reads == 1000 and run.esm_tokens == 40_000
    assert run.fixed_s == pytest.approx(15.0), "5 s start-up (100 - 95) + 10 s load_models"
    assert run.projected_wall_s(1_000_000) == pytest.approx(15 + 85 * 1000)
    assert run.projected_wall_s(1000) == pytest.approx(100.0), "projection to its own size is its wall"


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / PREDICTIONS).unlink(), "the run wrote no prediction_results.txt"),
    (lambda d: (d / CONSENSUS).write_text(""), "prediction_results_highestscore.csv is empty"),
    (lambda d: (d / LOG_NAME).unlink(), "wrote no log file"),
    (lambda d: (d / LOG_NAME).write_text("x INFO TELEMETRY {\"event\": \"run_start\"}\n"),
     "has no 'summary' telemetry event (1 events read)"),
    (lambda d: (d / LOG_NAME).write_text("x INFO TELEMETRY {\"event\": \"summary\", \"wall_s\": 1}\n"),
     "lacks reads, chunks, frames, stages"),
    (lambda d: (d / LOG_NAME).write_text("x INFO TELEMETRY {not json\n"), "malformed TELEMETRY line"),
    (lambda d: (d / RUN_JSON).unlink(), "wrote no manifest"),
])
def test_load_run_refuses_broken_runs(tmp_path: Path, breakage, message: str) -> None:
    d = make_run(tmp_path / "r")
    breakage(d)
    with pytest.raises(GateError) as ei:
        gate.load_run(d, "1gpu", 1)
    assert message in str(ei.value), f"expected {message!r} in {ei.value}"


# ----------------------------------------------------------------------------- criteria

def test_wall_time_pass_and_fail(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", wall_s=40.0, reads=10_000, stages={"load_models": 4.0})
    fast = gate.check_wall_time(gate.load_run(d, "1gpu", 1, wall_s=41.0), profile())
    # fixed 1 + 4 = 5 s; (41 - 5) x 100 + 5 = 3605 s > 3600 s
    assert not fast.passed and "3,605 s" in fast.measured and "<= 3,600 s" in fast.target, fast.message
    ok = gate.check_wall_time(gate.load_run(d, "2gpu", 2, wall_s=20.0), profile())
    assert ok.passed, ok.message  # (20 - 5) x 100 + 5 = 1505 <= 1800


def test_wall_limit_for_unlisted_gpu_counts() -> None:
    p = profile()
    assert p.wall_limit_per_million("4gpu", 4) == pytest.approx(900.0), "2-GPU limit x 2/4"
    assert p.wall_limit_per_million("3gpu", 3) == pytest.approx(1200.0)
    q = profile(wall_time={"limit_s_per_million_reads": {"2": 100}})
    with pytest.raises(GateError, match="no wall-time limit for 1gpu"):
        q.wall_limit_per_million("1gpu", 1)


def _harness(gpu: list[tuple[float, int, float]] = (), cpu: list[tuple[float, float]] = ()) -> Samples:
    return Samples(start=0.0, end=100.0, gpu=list(gpu), cpu=list(cpu))


def test_log_clock_offset_places_the_run_on_the_epoch_clock(tmp_path: Path) -> None:
    import datetime
    stamp = datetime.datetime.strptime("2026-11-29 16:55:00,123", "%Y-%m-%d %H:%M:%S,%f").timestamp()
    run = gate.load_run(make_run(tmp_path / "r"), "1gpu", 1)
    # every line is stamped 16:55:00,123 (local time); the events' t are 0, 90 and 95: the median wins
    assert run.clock_offset == pytest.approx(stamp - 90.0), run.clock_offset


def test_gpu_util_is_the_harness_measurement_on_every_gpu(tmp_path: Path) -> None:
    batches = [{"event": "batch", "t": 60.0 + i, "dt": 1.0, "model": "esm2", "tokens": 90, "budget": 100}
               for i in range(20)]
    p = profile(gpu_utilisation={"min_pct": 80})
    run = gate.load_run(make_run(tmp_path / "r", gpu_util_mean=85.0, events=batches), "2gpu", 2)
    run.clock_offset = 1000.0
    # the harness saw GPU 1 at 60% inside the embedding window [59, 79]; outside it, 0% (ignored)
    run.harness = _harness([(1000.0 + t, g, u) for t in range(50, 90)
                            for g, u in ((0, 97.0 if 59 <= t <= 79 else 0.0), (1, 60.0 if 59 <= t <= 79 else 0.0))])
    check = criteria.check_gpu_util(run, p)
    assert not check.passed and "GPU 1: 60.0%" in check.message, check.message
    assert check.values["harness_per_gpu"] == {0: 97.0, 1: 60.0}, check.values
    run.harness = _harness([(1000.0 + t, g, 96.0) for t in range(59, 80) for g in (0, 1)])
    good = criteria.check_gpu_util(run, p)
    assert good.passed and "pipeline's own 85.0%" in good.measured, good.message
    assert "11 pts apart" in good.message and "> tolerance 5" in good.message, good.message
    run.summary["gpu_util_mean"] = 70.0   # the pipeline's own figure 26 points off the harness's
    bad = criteria.check_gpu_util(run, p)
    assert not bad.passed and "one of the two measurements is wrong" in bad.message, bad.message


def test_gpu_util_without_nvml_is_not_measured(tmp_path: Path) -> None:
    """A CPU run (or NVML absent): 'not measured', never a pass — even when the pipeline's own
    telemetry claims a utilisation."""
    run = gate.load_run(make_run(tmp_path / "n", gpu_util_mean=97.0), "1gpu", 1)
    run.harness = Samples(start=0.0, end=1.0, gpu_note="NVML unavailable to the harness: no driver")
    c = criteria.check_gpu_util(run, profile(gpu_utilisation={"min_pct": 80}))
    assert c.not_measured and not c.passed, c.message
    assert "not measured: NVML unavailable to the harness" in c.measured and "own figure: 97.0%" in c.measured
    run.harness = None
    assert criteria.check_gpu_util(run, profile(gpu_utilisation={"min_pct": 80})).not_measured


def _batches(tokens_budget: list[tuple[int, int]], model: str = "esm2") -> list[dict]:
    return [{"event": "batch", "t": 50.0 + i, "dt": 0.5, "model": model, "tokens": t, "budget": b}
            for i, (t, b) in enumerate(tokens_budget)]


@pytest.mark.parametrize("events, own, passed, text", [
    (_batches([(95, 100), (91, 100)]), 0.93, True, "harness 93.00%; pipeline's own 93.00%"),
    (_batches([(85, 100), (85, 100)]), 0.85, False, "85.00% <= 90%"),
    (_batches([(95, 100), (91, 100)]), 3.58, False, "outside 0..100%"),
    ([], 0.93, False, "not measured: the run emitted no ESM-2 batch events"),
    # an OOM attempt adds its budget and no tokens: (95 + 91) / (200 + 100) = 62%, while the plan says 93%
    (_batches([(95, 100), (91, 100)]) + [{"event": "oom", "t": 51.0, "model": "esm2", "budget": 100}],
     0.93, False, "1 OOM retries (100 tokens of budget lost)"),
])
def test_packing_from_the_batch_events(tmp_path: Path, events, own, passed: bool, text: str) -> None:
    run = gate.load_run(make_run(tmp_path / "r", packing_efficiency=own, events=events), "1gpu", 1)
    check = criteria.check_packing(run, profile(packing_efficiency={"min_efficiency": 0.9}))
    assert check.passed is passed and text in check.message, check.message


def test_packing_disagreement_with_the_pipeline(tmp_path: Path) -> None:
    events = _batches([(95, 100), (95, 100)]) + _batches([(50, 100)], "dnabert")
    p = profile(packing_efficiency={"min_efficiency": 0.9, "tolerance": 0.01, "max_disagreement": 0.05})
    near = criteria.check_packing(gate.load_run(make_run(tmp_path / "a", packing_efficiency=0.97, events=events),
                                                "1gpu", 1), p)
    assert near.passed and "> tolerance 0.01" in near.message and "DNABERT-S batches" in near.message, near.message
    far = criteria.check_packing(gate.load_run(make_run(tmp_path / "b", packing_efficiency=0.88, events=events),
                                               "1gpu", 1), p)
    assert not far.passed and "one of the two measurements is wrong" in far.message, far.message


def test_mfu(tmp_path: Path) -> None:
    p = profile(mfu_esm={"min_esm": 0.7})
    assert criteria.check_mfu(gate.load_run(make_run(tmp_path / "a", mfu_esm=0.72), "1gpu", 1), p).passed
    low = criteria.check_mfu(gate.load_run(make_run(tmp_path / "b", mfu_esm=0.46), "1gpu", 1), p)
    assert not low.passed and "46.0%" in low.message, low.message


def test_scaling(tmp_path: Path) -> None:
    one = gate.load_run(make_run(tmp_path / "1"), "1gpu", 1, wall_s=200.0)
    two = gate.load_run(make_run(tmp_path / "2"), "2gpu", 2, wall_s=104.0)
    p = profile(scaling={"min_efficiency": 0.95})
    c = criteria.check_scaling(one, two, p)
    assert c.passed and "1.92x" in c.measured and ">= 1.90x" in c.target, c.message
    slow = gate.load_run(make_run(tmp_path / "3"), "2gpu", 2, wall_s=107.0)
    assert not criteria.check_scaling(one, slow, p).passed, "200/107 = 1.87x < 1.9x"
    # the report says where a shortfall comes from: GPU work vs the part that does not divide
    one_b = gate.load_run(make_run(tmp_path / "5", busy_s_per_worker={"w0": 180.0}), "1gpu", 1, wall_s=200.0)
    two_b = gate.load_run(make_run(tmp_path / "6", busy_s_per_worker={"w0": 89.0, "w1": 91.0}), "2gpu", 2, wall_s=107.0)
    c = criteria.check_scaling(one_b, two_b, p)
    assert not c.passed and c.values["work_ratio"] == pytest.approx(180 / 91), c.values
    assert "180.0 s -> 91.0 s (1.98x)" in c.message and "20.0 s -> 16.0 s" in c.message, c.message
    lost = gate.load_run(make_run(tmp_path / "4", workers_lost=2), "2gpu", 2, wall_s=100.0)
    c = criteria.check_scaling(one, lost, p)
    assert not c.passed and "2 worker process(es) died" in c.message, \
        f"a 2-GPU run whose workers died must not pass scaling: {c.message}"


def test_speedup_vs_v1_against_the_known_timing(tmp_path: Path) -> None:
    p = profile(speedup_vs_v1={"v1_wall_s": 12600, "v1_gpus": 2, "v1_reads": 1_000_000, "min_ratio": 4.0})
    assert criteria.v1_from_known(p, 1).wall_s == 12600, "v1 on fewer GPUs: no slower than its timing"
    assert criteria.v1_from_known(p, 4).wall_s == 6300, "v1 on more GPUs: assumed to scale perfectly"
    # 10,000 reads, wall 30 s, fixed 5 s -> 1M projection 5 + 25 x 100 = 2505 s -> 5.03x
    run = gate.load_run(make_run(tmp_path / "r", reads=10_000, stages={"load_models": 5.0}, wall_s=30.0),
                        "2gpu", 2, wall_s=30.0)
    c = criteria.check_speedup_vs_v1(run, p)
    assert c.passed and c.values["ratio"] == pytest.approx(12600 / 2505), c.message
    assert c.criterion == "speedup_vs_v1" and "known v1.0 timing" in c.message, c.message
    slow = gate.load_run(make_run(tmp_path / "s", reads=10_000, wall_s=40.0, stages={"load_models": 5.0}),
                         "2gpu", 2)
    slow_c = criteria.check_speedup_vs_v1(slow, p)
    assert not slow_c.passed, f"(40-5) x 100 + 5 = 3505 s -> 3.6x < 4x: {slow_c.message}"


def test_speedup_vs_reference_on_a_subsample(tmp_path: Path) -> None:
    p = profile(speedup_vs_reference={"min_ratio": 12.0}, reference={"subsample_reads": 100})
    ref = gate.load_run(make_run(tmp_path / "ref", reads=100, wall_s=50.0, stages={"load_models": 10.0}),
                        "reference", 1, wall_s=50.0)
    run = gate.load_run(make_run(tmp_path / "run", reads=1000, wall_s=20.0), "1gpu", 1, wall_s=20.0)
    # both logs carry 40,000 ESM-2 tokens -> factor 1: reference 10 + 40 x 1 = 50 s; 50/20 = 2.5x
    v1 = criteria.v1_from_reference(ref, run)
    assert v1.wall_s == pytest.approx(50.0) and "ESM-2 tokens" in v1.how
    c = criteria.check_speedup_vs_reference(ref, run, p, same_reads=False)
    assert not c.passed and "2.50x" in c.measured and c.criterion == "speedup_vs_reference", c.message


def test_speedup_vs_reference_side_by_side(tmp_path: Path) -> None:
    """Same reads: the processing windows (models loaded -> summary), in CPU seconds of the
    process tree (harness samples) or in wall seconds; the precision's own bar."""
    p = profile(speedup_vs_reference={"basis": "cpu", "fp32": {"min_ratio": 2.0}, "fp16": {"min_ratio": 1.0}},
                reference={"side_by_side": True})
    ev = [{"event": "stage", "t": 10.0, "stage": "load_models", "wall_s": 5.0}]
    ref = gate.load_run(make_run(tmp_path / "ref", wall_s=95.0, events=ev), "reference", 0)
    run = gate.load_run(make_run(tmp_path / "run", wall_s=95.0, events=ev, precision="fp32"), "cpu-fp32", 0)
    for r, cpu_in_window in ((ref, 60.0), (run, 20.0)):   # CPU seconds accrue linearly over [10, 95]
        r.clock_offset = 0.0
        r.harness = _harness(cpu=[(0.0, 0.0), (10.0, 3.0), (95.0, 3.0 + cpu_in_window)])
    c = criteria.check_speedup_vs_reference(ref, run, p, same_reads=True)
    assert c.passed and c.values["cpu_ratio"] == pytest.approx(3.0) and "3.00x (cpu seconds" in c.measured, c.message
    assert c.values["wall_ratio"] == pytest.approx(1.0), c.values
    run.summary["precision"] = "fp16"
    assert criteria.check_speedup_vs_reference(ref, run, p, same_reads=True).passed, ">= 1x for fp16"
    run.summary["precision"] = "fp32"
    run.harness = _harness(cpu=[(0.0, 0.0), (10.0, 3.0), (95.0, 3.0 + 40.0)])   # twice the CPU time
    slow = criteria.check_speedup_vs_reference(ref, run, p, same_reads=True)
    assert not slow.passed and "1.50x" in slow.measured, slow.message
    run.harness = Samples(start=0.0, cpu_note="no /proc/<pid>/stat on this system: CPU time not sampled")
    absent = criteria.check_speedup_vs_reference(ref, run, p, same_reads=True)
    assert absent.not_measured and "no /proc" in absent.measured, absent.message


def test_correctness_pass_fail_and_score_bounds(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_outputs(a)
    write_outputs(b, [(f, s + 0.02) for f, s in FRAMES])
    p = profile(correctness={"min_frame_agreement": 0.99, "min_consensus_agreement": 0.99,
                             "max_mean_abs_diff": 0.01})
    c = criteria.check_correctness(compare_dirs(a, b), "1gpu", p)
    assert not c.passed and "mean |d| 0.02 violates <= 0.01" in c.message, c.message
    assert "frame 100.000%" in c.measured, "labels agree; only scores moved"
    write_outputs(b, [(f, 1 - s) for f, s in FRAMES])
    flipped = criteria.check_correctness(compare_dirs(a, b), "1gpu", p)
    assert "frame: label agreement 0.000% < target 99.000%" in flipped.message, flipped.message
    write_outputs(b)
    assert criteria.check_correctness(compare_dirs(a, b), "1gpu", p).passed


def test_correctness_thresholds_per_precision(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_outputs(a)
    write_outputs(b, [(f, s + 2e-5) for f, s in FRAMES])
    p = profile(correctness={"min_frame_agreement": 0.995, "fp32": {"max_abs_diff": 1e-5}})
    strict = criteria.check_correctness(compare_dirs(a, b), "cpu-fp32", p, precision="fp32")
    assert not strict.passed and "max |d| 2e-05 violates <= 1e-05" in strict.message, strict.message
    assert criteria.check_correctness(compare_dirs(a, b), "cpu-fp16", p, precision="fp16").passed


def test_borderline_disagreements(tmp_path: Path) -> None:
    """r1_chunk_1F1 0.9 -> 0.1 is far from 0.5; r3_chunk_1F1 0.51 -> 0.49 is borderline (0.02)."""
    a, b = tmp_path / "a", tmp_path / "b"
    base = [("r1_chunk_1F1", 0.9), ("r1_chunk_1R2", 0.2), ("r2_chunk_1F2", 0.1), ("r3_chunk_1F1", 0.51)]
    write_outputs(a, base)
    write_outputs(b, [("r1_chunk_1F1", 0.9), ("r1_chunk_1R2", 0.2), ("r2_chunk_1F2", 0.1), ("r3_chunk_1F1", 0.49)])
    border = criteria.borderline_counts(a, b, 0.02)
    assert (border.frames, border.frames_borderline, border.chunks, border.chunks_borderline) == (1, 1, 1, 1), border
    p = profile(correctness={"min_frame_agreement": 0.5, "min_consensus_agreement": 0.5,
                             "max_non_borderline_share": 0.0})
    ok = criteria.check_correctness(compare_dirs(a, b), "1gpu", p, borderline=border)
    assert ok.passed and "frame disagreements borderline: 1 of 1" in ok.measured, ok.message
    write_outputs(b, [("r1_chunk_1F1", 0.1), ("r1_chunk_1R2", 0.2), ("r2_chunk_1F2", 0.1), ("r3_chunk_1F1", 0.49)])
    border = criteria.borderline_counts(a, b, 0.02)
    assert (border.frames, border.frames_borderline) == (2, 1) and border.examples, border
    bad = criteria.check_correctness(compare_dirs(a, b), "1gpu", p, borderline=border)
    assert not bad.passed and "frame: 1 disagreement(s) not borderline" in bad.message, bad.message
    assert "not borderline: frame r1_chunk_1F1: score2 0.9 -> 0.1" in bad.message, bad.message
    loose = profile(correctness={"min_frame_agreement": 0.5, "min_consensus_agreement": 0.5,
                                 "max_non_borderline_share": 0.3})
    c = criteria.check_correctness(compare_dirs(a, b), "1gpu", loose, borderline=border)
    assert "frame: 1 disagreement(s) not borderline" not in c.message, "1 of 4 rows is within a 30% allowance"


def test_consistency(tmp_path: Path) -> None:
    one = gate.load_run(make_run(tmp_path / "1"), "1gpu", 1)
    two = gate.load_run(make_run(tmp_path / "2"), "2gpu", 2)
    p = profile(consistency={"min_agreement": 1.0, "max_abs_diff": 0.0})
    assert criteria.check_consistency(one, two, p).passed
    write_outputs(two.outdir, [(f, s + 1e-3) for f, s in FRAMES])
    c = criteria.check_consistency(one, two, p)
    assert not c.passed and "max |score2 difference| 0.001 > 0" in c.message, c.message


def test_restrict_outputs_keeps_only_given_reads(tmp_path: Path) -> None:
    write_outputs(tmp_path / "run")
    out = gate.restrict_outputs(tmp_path / "run", {"r1", "r3"}, tmp_path / "sub")
    frames = (out / PREDICTIONS).read_text().splitlines()
    assert [ln.split("\t")[0] for ln in frames[1:]] == ["r1_chunk_1F1", "r1_chunk_1R2", "r3_chunk_1F1"]
    cons = (out / CONSENSUS).read_text().splitlines()
    assert [ln.split("\t")[0] for ln in cons[1:]] == ["r1_chunk_1", "r3_chunk_1"]


# ----------------------------------------------------------------------------- profiles

def test_shipped_profiles_load_with_the_seed_thresholds() -> None:
    ps = gate.profiles_in(PROFILES)
    assert set(ps) >= {"rtx4090", "h200", "cpu-smoke"}, f"profiles: {sorted(ps)}"
    r = ps["rtx4090"]
    assert r.wall_limit_per_million("1gpu", 1) == 3600 and r.wall_limit_per_million("2gpu", 2) == 1800
    assert (r.data["gpu_utilisation"]["min_pct"], r.data["packing_efficiency"]["min_efficiency"]) == (80.0, 0.90)
    assert r.data["scaling"]["min_efficiency"] * 2 == pytest.approx(1.9)
    assert (r.data["speedup_vs_v1"]["min_ratio"], r.data["speedup_vs_v1"]["v1_wall_s"]) == (4.0, 12600)
    assert r.data["correctness"]["min_consensus_agreement"] == 0.99
    h = ps["h200"]
    assert h.data["mfu_esm"]["min_esm"] == 0.70 and h.data["gpu_utilisation"]["min_pct"] == 95.0
    assert h.data["packing_efficiency"]["min_efficiency"] == 0.97
    assert h.data["speedup_vs_reference"]["min_ratio"] == 12.0 and h.data["speedup_vs_v1"]["min_ratio"] == 4.0
    c = ps["cpu-smoke"]
    assert c.precisions == ["fp32", "fp16"] and c.data["run"]["engine"] == "fast"
    assert c.section("correctness", "fp32")["max_abs_diff"] == 1e-5
    assert c.section("correctness", "fp32")["min_frame_agreement"] == 1.0
    assert c.section("correctness", "fp16")["min_frame_agreement"] == 0.995
    for name, prof in ps.items():
        assert set(k for k in prof.data if isinstance(prof.data[k], dict)) - {"run", "workload", "models", "reference"} \
            <= set(gate.CRITERIA), f"{name}: a section that is no criterion"
    assert h.wall_limit_per_million("1gpu", 1) == 480


def test_profile_typo_is_an_error(tmp_path: Path) -> None:
    text = (PROFILES / "rtx4090.toml").read_text().replace("min_pct = 80.0", "min_pc = 80.0")
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(GateError, match=r"unknown key\(s\) in \[gpu_utilisation\]: min_pc"):
        gate.load_profile(tmp_path / "x.toml")
    (tmp_path / "y.toml").write_text(text.replace("[gpu_utilisation]", "[gpu_utilization]"))
    with pytest.raises(GateError, match=r"unknown section \[gpu_utilization\]"):
        gate.load_profile(tmp_path / "y.toml")
    cpu = (PROFILES / "cpu-smoke.toml").read_text()
    (tmp_path / "z.toml").write_text(cpu.replace("min_frame_agreement = 1.0", "min_frame_agreemnt = 1.0"))
    with pytest.raises(GateError, match=r"unknown key\(s\) in \[correctness\]: fp32.min_frame_agreemnt"):
        gate.load_profile(tmp_path / "z.toml")
    (tmp_path / "w.toml").write_text(cpu.replace("[correctness.fp32]", "[correctness.fp23]"))
    assert "[correctness.fp32]" in cpu and "min_frame_agreement = 1.0" in cpu
    with pytest.raises(GateError, match=r"fp23 \(a precision sub-table"):
        gate.load_profile(tmp_path / "w.toml")


def test_profile_selection() -> None:
    ps = gate.profiles_in(PROFILES)
    assert gate.select_profile(ps, "h200")[0].name == "h200"
    assert gate.select_profile(ps, None, "gpu4090")[0].name == "rtx4090"
    assert gate.select_profile(ps, None, "gpu4090 and not slow", "NVIDIA H200")[0].name == "rtx4090"
    assert gate.select_profile(ps, None, "not gpu4090", "NVIDIA GeForce RTX 4090")[0].name == "rtx4090", \
        "a negated marker selects nothing; the GPU name decides"
    assert gate.select_profile(ps, None, "", "NVIDIA H200 NVL")[0].name == "h200"
    assert gate.select_profile(ps, None, "not gpu", None)[0].name == "cpu-smoke"
    with pytest.raises(GateError, match="no hardware profile matches the detected GPU 'Tesla T4'"):
        gate.select_profile(ps, None, "", "Tesla T4")
    with pytest.raises(GateError, match="selects several hardware profiles"):
        gate.select_profile(ps, None, "gpu4090 or gpuh200")


def test_gpu_configs_follow_detected_gpus() -> None:
    ps = gate.profiles_in(PROFILES)
    ids = lambda p, n: [c for c, _ in gate.gpu_configs(ps[p], n)]  # noqa: E731
    assert ids("rtx4090", 0) == ["1gpu", "2gpu"], "the sign-off's configurations, even without GPUs"
    assert ids("rtx4090", 3) == ["1gpu", "2gpu", "3gpu"]
    assert ids("h200", 8) == ["1gpu", "2gpu", "4gpu", "8gpu"]
    assert ids("cpu-smoke", 2) == ["cpu"]


# ----------------------------------------------------------------------------- baselines

def test_baseline_compatibility(tmp_path: Path) -> None:
    write_outputs(tmp_path / "b")
    manifest = {"format": bl.FORMAT, "chunk_length": 300, "chunking": "original",
                "models": {"fingerprints": {"esm": "e1", "dnabert": "d1", "classifier": "c1"}},
                "workload": {"sha256": "ab" * 32}}
    (tmp_path / "b" / bl.MANIFEST).write_text(json.dumps(manifest))
    b = bl.load_baseline(tmp_path / "b")
    run = json.loads((make_run(tmp_path / "r") / RUN_JSON).read_text())
    assert bl.incompatibilities(b, run, "ab" * 32) == []
    other = json.loads((make_run(tmp_path / "r5", chunk_length=500,
                                 fingerprints={"esm": "e1", "dnabert": "d1", "classifier": "c5"})
                        / RUN_JSON).read_text())
    with pytest.raises(InputError) as ei:
        bl.check_compatible(b, other, "cd" * 32)
    msg = str(ei.value)
    for part in ("chunk length differs: baseline 300, run 500", "classifier model differs: baseline c1, run c5",
                 "input differs"):
        assert part in msg, f"{part!r} missing from {msg}"
    assert bl.find_compatible(tmp_path, run, "ab" * 32).path == tmp_path / "b"
    assert bl.find_compatible(tmp_path, run, "cd" * 32) is None, "never matched on models alone"


def test_user_v1_outputs_without_manifest_load(tmp_path: Path) -> None:
    write_outputs(tmp_path / "v1")
    b = bl.load_baseline(tmp_path / "v1")
    assert b.manifest is None and bl.incompatibilities(b, {}) == []
    (tmp_path / "v1" / PREDICTIONS).unlink()
    with pytest.raises(InputError, match="has no prediction_results.txt"):
        bl.load_baseline(tmp_path / "v1")


# ----------------------------------------------------------------------------- configurations

def test_configurations_one_per_gpu_count_and_precision() -> None:
    ps = gate.profiles_in(PROFILES)
    cpu = gate.configurations(ps["cpu-smoke"], 2)
    assert [(c.config, c.n_gpus, c.precision) for c in cpu] == [("cpu-fp32", 0, "fp32"), ("cpu-fp16", 0, "fp16")]
    assert [(c.config, c.precision) for c in gate.configurations(ps["h200"], 1)] == [("1gpu", "fp16"), ("2gpu", "fp16")]
    assert ps["cpu-smoke"].wall_limit_per_million("cpu-fp16", 0) == 60_000


@pytest.mark.parametrize("n, detected, name, explicit, expected", [
    (1, 0, None, False, "needs 1 GPU(s); none detected"),
    (2, 1, "NVIDIA GeForce RTX 4090", False, "needs 2 GPU(s); 1 detected"),
    (1, 2, "NVIDIA H200", False, "profile rtx4090 is for GPUs matching RTX 4090; this machine has 'NVIDIA H200'"),
    (1, 2, "NVIDIA H200", True, None),                 # --hw-profile rtx4090: judged, with a note
    (2, 2, "NVIDIA GeForce RTX 4090", False, None),
])
def test_cannot_run(n: int, detected: int, name, explicit: bool, expected) -> None:
    prof = gate.profiles_in(PROFILES)["rtx4090"]
    why = gate.cannot_run(prof, n, detected, name, explicit)
    assert (why is None) if expected is None else (expected in (why or "")), why


# ----------------------------------------------------------------------------- the harness's sampler

def test_samples_interpolate_cpu_time() -> None:
    s = _harness(cpu=[(10.0, 1.0), (12.0, 3.0), (14.0, 3.0)])
    assert s.cpu_at(11.0) == pytest.approx(2.0) and s.cpu_at(13.5) == pytest.approx(3.0)
    assert s.cpu_at(5.0) == 1.0 and s.cpu_at(99.0) == 3.0 and _harness().cpu_at(1.0) is None


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_harness_sampler_measures_a_child_process_tree() -> None:
    """A parent that sleeps while its child burns ~0.5 s of CPU: the tree's CPU time holds the
    child's, and there is no NVML without GPUs (said, not faked)."""
    import subprocess
    import sys
    import time

    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass'])")
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = HarnessSampler(proc.pid, [], interval=0.02).start()
    proc.wait()
    time.sleep(0.05)
    s = sampler.stop()
    assert s.gpu_note and not s.gpu, s.gpu_note
    assert s.cpu and s.cpu[-1][1] >= 0.45, f"tree CPU seconds seen: {s.cpu[-1:]}"
    assert tree_cpu_s(proc.pid) is None, "a reaped process has no /proc entry"


def test_harness_sampler_reads_nvml_for_the_run_gpus(monkeypatch) -> None:
    """The NVML branch, with a stand-in pynvml (no GPU here): each sample is (epoch, GPU, util),
    NVML is shut down at the end, and an NVML that cannot start is said, not faked."""
    import subprocess
    import sys
    import time
    import types

    calls: list[str] = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetName=lambda h: "Fake GPU",
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu={"h0": 71, "h1": 93}[h]))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    t0 = time.time()
    sampler = HarnessSampler(proc.pid, [0, 1], interval=0.02, gpu_every=2).start()
    proc.wait()
    s = sampler.stop()
    assert s.gpu_note is None and calls == ["init", "shutdown"], (s.gpu_note, calls)
    assert {g for _, g, _ in s.gpu} == {0, 1} and {u for _, g, u in s.gpu if g == 1} == {93.0}, s.gpu[:4]
    assert all(t0 - 1 <= t <= time.time() for t, _, _ in s.gpu)
    fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("Driver Not Loaded"))
    broken = HarnessSampler(proc.pid, [0], interval=0.02).start().stop()
    assert not broken.gpu and "NVML unavailable to the harness: Driver Not Loaded" in broken.gpu_note


# ----------------------------------------------------------------------------- baseline import

def _reads(d: Path, lengths: dict[str, int]) -> Path:
    p = d / "reads.fa"
    p.write_text("".join(f">{r}\n{'ACGT' * (n // 4)}{'A' * (n % 4)}\n" for r, n in lengths.items()))
    return p


def _v1(d: Path, chunks: dict[str, int]) -> Path:
    """v1.0-like outputs: chunks[read] = number of chunks, each with one kept frame."""
    write_outputs(d, [(f"{r}_chunk_{k}F1", 0.7) for r, n in chunks.items() for k in range(1, n + 1)])
    return d


def test_baseline_import_records_and_tells_the_chunk_length(tmp_path: Path) -> None:
    lengths = {f"r{i}": 450 for i in range(12)} | {"short": 120}
    reads = _reads(tmp_path, lengths)
    v1 = _v1(tmp_path / "v1", {**{f"r{i}": 2 for i in range(12)}, "short": 1})   # 450 nt at 300: 2 chunks
    b = bl.import_v1(v1, reads, tmp_path / "b")
    m = b.manifest
    assert m["origin"] == bl.ORIGIN_IMPORTED and m["chunk_length"] == 300, "told from the ids: 2 chunks of 450 nt"
    assert m["workload"]["sha256"] == bl.sha256_file(reads) and m["workload"]["reads"] == 13
    assert m["source"]["files"][PREDICTIONS]["sha256"] == bl.sha256_file(v1 / PREDICTIONS)
    assert (tmp_path / "b" / CONSENSUS).read_bytes() == (v1 / CONSENSUS).read_bytes()
    assert bl.origin(bl.load_baseline(tmp_path / "b")) == bl.ORIGIN_IMPORTED
    # the gate's compatibility: chunk length and input must match; fingerprints are not asked for
    run = {"chunk_length": 300, "chunking": "original", "models": {"fingerprints": {"esm": "e1"}}}
    assert bl.incompatibilities(b, run, bl.sha256_file(reads)) == []
    assert "chunk length differs: baseline 300, run 500" in bl.incompatibilities(b, {**run, "chunk_length": 500})[0]
    assert "input differs" in bl.incompatibilities(b, run, "0" * 64)[0]


def test_baseline_import_refuses_another_chunk_length(tmp_path: Path) -> None:
    """The 300-vs-500 mix-up, both ways: 2 chunks of a 450-nt read cannot be C=500; twelve
    450-nt reads that never show a 2nd chunk are not C=300."""
    lengths = {f"r{i}": 450 for i in range(12)}
    reads = _reads(tmp_path, lengths)
    v300 = _v1(tmp_path / "v300", {r: 2 for r in lengths})
    with pytest.raises(InputError, match=r"imply another chunk length than 500: 12 read\(s\) have more chunks "
                                         r"than ceil\(L/500\) allows, e.g. r0 \(length 450, chunk 2\)"):
        bl.import_v1(v300, reads, tmp_path / "a", chunk_length=500)
    v500 = _v1(tmp_path / "v500", {r: 1 for r in lengths})
    with pytest.raises(InputError, match=r"another chunk length than 300: none of the 12 reads that have 2\+ "
                                         r"chunks at 300 nt shows a chunk beyond the first"):
        bl.import_v1(v500, reads, tmp_path / "b", chunk_length=300)
    assert bl.import_v1(v500, reads, tmp_path / "c").manifest["chunk_length"] == 500


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / PREDICTIONS).write_text("id\tlabel\n"), "line 1: expected header"),
    (lambda d: (d / CONSENSUS).write_text("Modified_ID\tIs_Virus\nr0_chunk_1\tmaybe\n"),
     "Is_Virus must be True or False"),
    (lambda d: (d / CONSENSUS).write_text("Modified_ID\tIs_Virus\nr0_chunk_1\tTrue\n"),
     "the two files disagree"),
    (lambda d: write_outputs(d, [("stranger_chunk_1F1", 0.7)]), "read 'stranger' (chunk stranger_chunk_1), which is not in the input"),
    (lambda d: write_outputs(d, [("r0_piece_1F1", 0.7)]), "is not READ_chunk_K + F1..R3"),
])
def test_baseline_import_validates_the_format(tmp_path: Path, breakage, message: str) -> None:
    reads = _reads(tmp_path, {"r0": 200, "r1": 200})
    v1 = _v1(tmp_path / "v1", {"r0": 1, "r1": 1})
    breakage(v1)
    with pytest.raises(InputError) as ei:
        bl.import_v1(v1, reads, tmp_path / "b", chunk_length=300)
    assert message in str(ei.value), str(ei.value)


def test_baseline_import_command_line(tmp_path: Path, capsys) -> None:
    from virnucpro.cli import main

    reads = _reads(tmp_path, {"r0": 200})
    v1 = _v1(tmp_path / "v1", {"r0": 1})
    assert main(["baseline", "import", str(v1), "--input", str(reads), "--chunk-length", "300",
                 "-o", str(tmp_path / "b")]) == 0
    assert "imported v1.0 outputs" in capsys.readouterr().out
    assert main(["baseline", "import", str(v1), "--input", str(reads), "--outdir", str(tmp_path / "b")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


# ----------------------------------------------------------------------------- results

def _doc(*rows) -> dict:
    return {"schema_version": res.SCHEMA_VERSION,
            "results": [{"criterion": c, "config": k, "outcome": o, "values": v} for c, k, o, v in rows]}


def test_compare_results_says_which_criterion_moved() -> None:
    prev = _doc(("wall_time", "1gpu", "passed", {"projected_s_per_million": 400.0}),
                ("gpu_utilisation", "1gpu", "passed", {"harness_mean": 96.0}),
                ("correctness", "1gpu", "passed", {"frame_agreement": 0.9995}),
                ("scaling", "2gpu", "passed", {"ratio": 1.95}))
    now = _doc(("wall_time", "1gpu", "passed", {"projected_s_per_million": 460.0}),       # +15%: worse
               ("gpu_utilisation", "1gpu", "passed", {"harness_mean": 96.5}),             # +0.5%: still
               ("correctness", "1gpu", "failed", {"frame_agreement": 0.998}),             # pass -> fail
               ("mfu_esm", "1gpu", "passed", {"mfu_esm": 0.7}))                           # new
    moves = {(m.criterion, m.config): m for m in res.compare_results(prev, now, max_regression_pct=10)}
    assert set(moves) == {("wall_time", "1gpu"), ("correctness", "1gpu"), ("mfu_esm", "1gpu"), ("scaling", "2gpu")}
    w = moves[("wall_time", "1gpu")]
    assert w.regressed and w.change_pct == pytest.approx(15.0) and "worse" in w.note, w
    assert moves[("correctness", "1gpu")].regressed and "passed -> failed" in moves[("correctness", "1gpu")].note
    assert not moves[("mfu_esm", "1gpu")].regressed and moves[("scaling", "2gpu")].note == "not in this run"
    assert not {m.regressed for m in res.compare_results(prev, now) if m.criterion == "wall_time"} - {False}, \
        "without an allowance a figure that moved is reported, not a regression"


def test_results_schema_version_is_checked(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1, "results": []}))
    with pytest.raises(ValueError, match="schema_version 1"):
        res.load_results(tmp_path / "r.json")


def test_the_fp8_side_by_side_profile_loads_and_is_only_chosen_by_path():
    """baselines/profiles/experiments/h200-fp8.toml (issue 19) runs fp16 and fp8 in one session; it is
    never picked by a GPU name or -m among the sign-off profiles."""
    from pathlib import Path
    from virnucpro.perf import gate
    root = Path(__file__).resolve().parent.parent / "baselines" / "profiles"
    prof = gate.load_profile(root / "experiments" / "h200-fp8.toml")
    assert prof.precisions == ["fp16", "fp8"]
    assert prof.section("wall_time", "fp8")["limit_s_per_million_reads"] == {"1": 330}
    assert prof.section("wall_time", "fp16")["limit_s_per_million_reads"] == {"1": 480}
    assert "h200-fp8" not in gate.profiles_in(root)
    chosen, _ = gate.select_profile(gate.profiles_in(root), None, "gpuh200", "NVIDIA H200")
    assert chosen.name == "h200"
