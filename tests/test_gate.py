"""virnucpro.perf.gate and virnucpro.perf.baseline on crafted run directories: every criterion's pass and
fail path, profile validation and selection, baseline compatibility — no pipeline, no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnucpro.perf import baseline as bl
from virnucpro.perf import gate
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


def test_gpu_util_checks_every_gpu(tmp_path: Path) -> None:
    samples = [{"event": "gpu_sample", "t": 50.0 + i, "gpu": g, "util_pct": u}
               for i in range(4) for g, u in ((0, 97), (1, 60))]
    run = gate.load_run(make_run(tmp_path / "r", gpu_util_mean=85.0, events=samples), "2gpu", 2)
    check = gate.check_gpu_util(run, profile(gpu_util={"min_pct": 80}))
    assert not check.passed and "GPU 1: 60.0%" in check.message, check.message
    good = gate.load_run(make_run(tmp_path / "g", gpu_util_mean=97.0, events=samples[::2]), "1gpu", 1)
    assert gate.check_gpu_util(good, profile(gpu_util={"min_pct": 80})).passed
    none = gate.load_run(make_run(tmp_path / "n"), "1gpu", 1)
    c = gate.check_gpu_util(none, profile(gpu_util={"min_pct": 80}))
    assert not c.passed and "no GPU utilisation in the telemetry" in c.message, c.message


@pytest.mark.parametrize("eff, passed, text", [
    (0.93, True, "93.00%"), (0.85, False, "85.00%"), (3.58, False, "outside 0..100%"),
    (None, False, "no packing efficiency"),
])
def test_packing(tmp_path: Path, eff, passed: bool, text: str) -> None:
    run = gate.load_run(make_run(tmp_path / "r", packing_efficiency=eff), "1gpu", 1)
    check = gate.check_packing(run, profile(packing={"min_efficiency": 0.9}))
    assert check.passed is passed and text in check.message, check.message


def test_mfu(tmp_path: Path) -> None:
    p = profile(mfu={"min_esm": 0.7})
    assert gate.check_mfu(gate.load_run(make_run(tmp_path / "a", mfu_esm=0.72), "1gpu", 1), p).passed
    low = gate.check_mfu(gate.load_run(make_run(tmp_path / "b", mfu_esm=0.46), "1gpu", 1), p)
    assert not low.passed and "46.0%" in low.message, low.message


def test_scaling(tmp_path: Path) -> None:
    one = gate.load_run(make_run(tmp_path / "1"), "1gpu", 1, wall_s=200.0)
    two = gate.load_run(make_run(tmp_path / "2"), "2gpu", 2, wall_s=104.0)
    p = profile(scaling={"min_efficiency": 0.95})
    c = gate.check_scaling(one, two, p)
    assert c.passed and "1.92x" in c.measured and ">= 1.90x" in c.target, c.message
    slow = gate.load_run(make_run(tmp_path / "3"), "2gpu", 2, wall_s=107.0)
    assert not gate.check_scaling(one, slow, p).passed, "200/107 = 1.87x < 1.9x"
    # the report says where a shortfall comes from: GPU work vs the part that does not divide
    one_b = gate.load_run(make_run(tmp_path / "5", busy_s_per_worker={"w0": 180.0}), "1gpu", 1, wall_s=200.0)
    two_b = gate.load_run(make_run(tmp_path / "6", busy_s_per_worker={"w0": 89.0, "w1": 91.0}), "2gpu", 2, wall_s=107.0)
    c = gate.check_scaling(one_b, two_b, p)
    assert not c.passed and c.values["work_ratio"] == pytest.approx(180 / 91), c.values
    assert "180.0 s -> 91.0 s (1.98x)" in c.message and "20.0 s -> 16.0 s" in c.message, c.message
    lost = gate.load_run(make_run(tmp_path / "4", workers_lost=2), "2gpu", 2, wall_s=100.0)
    c = gate.check_scaling(one, lost, p)
    assert not c.passed and "2 worker process(es) died" in c.message, \
        f"a 2-GPU run whose workers died must not pass scaling: {c.message}"


def test_speedup_against_known_v1(tmp_path: Path) -> None:
    p = profile(speedup={"source": "known", "v1_wall_s": 12600, "v1_gpus": 2, "v1_reads": 1_000_000,
                         "min_ratio": 4.0})
    assert gate.v1_from_known(p, 1).wall_s == 12600, "v1 on fewer GPUs: no slower than its timing"
    assert gate.v1_from_known(p, 4).wall_s == 6300, "v1 on more GPUs: assumed to scale perfectly"
    # 10,000 reads, wall 30 s, fixed 5 s -> 1M projection 5 + 25 x 100 = 2505 s -> 5.03x
    run = gate.load_run(make_run(tmp_path / "r", reads=10_000, stages={"load_models": 5.0}, wall_s=30.0),
                        "2gpu", 2, wall_s=30.0)
    c = gate.check_speedup(run, gate.v1_from_known(p, 2), p)
    assert c.passed and c.values["ratio"] == pytest.approx(12600 / 2505), c.message
    slow = gate.load_run(make_run(tmp_path / "s", reads=10_000, wall_s=40.0, stages={"load_models": 5.0}),
                         "2gpu", 2)
    slow_c = gate.check_speedup(slow, gate.v1_from_known(p, 2), p)
    assert not slow_c.passed, f"(40-5) x 100 + 5 = 3505 s -> 3.6x < 4x: {slow_c.message}"


def test_speedup_against_measured_reference(tmp_path: Path) -> None:
    p = profile(speedup={"source": "measured", "min_ratio": 12.0}, reference={"subsample_reads": 100})
    ref = gate.load_run(make_run(tmp_path / "ref", reads=100, wall_s=50.0, stages={"load_models": 10.0}),
                        "reference", 1, wall_s=50.0)
    run = gate.load_run(make_run(tmp_path / "run", reads=1000, wall_s=20.0), "1gpu", 1, wall_s=20.0)
    # both logs carry 40,000 ESM-2 tokens -> factor 1: reference 10 + 40 x 1 = 50 s; 50/20 = 2.5x
    v1 = gate.v1_from_reference(ref, run)
    assert v1.wall_s == pytest.approx(50.0) and "ESM-2 tokens" in v1.how
    c = gate.check_speedup(run, v1, p)
    assert not c.passed and "2.50x" in c.measured, c.message


def test_correctness_pass_fail_and_score_bounds(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_outputs(a)
    write_outputs(b, [(f, s + 0.02) for f, s in FRAMES])
    p = profile(correctness={"min_frame_agreement": 0.99, "min_consensus_agreement": 0.99,
                             "max_mean_abs_diff": 0.01})
    c = gate.check_correctness(compare_dirs(a, b), "1gpu", p)
    assert not c.passed and "mean |d| 0.02 violates <= 0.01" in c.message, c.message
    assert "frame 100.000%" in c.measured, "labels agree; only scores moved"
    write_outputs(b, [(f, 1 - s) for f, s in FRAMES])
    flipped = gate.check_correctness(compare_dirs(a, b), "1gpu", p)
    assert "frame: label agreement 0.000% < target 99.000%" in flipped.message, flipped.message
    write_outputs(b)
    assert gate.check_correctness(compare_dirs(a, b), "1gpu", p).passed


def test_consistency(tmp_path: Path) -> None:
    one = gate.load_run(make_run(tmp_path / "1"), "1gpu", 1)
    two = gate.load_run(make_run(tmp_path / "2"), "2gpu", 2)
    p = profile(consistency={"min_agreement": 1.0, "max_abs_diff": 0.0})
    assert gate.check_consistency(one, two, p).passed
    write_outputs(two.outdir, [(f, s + 1e-3) for f, s in FRAMES])
    c = gate.check_consistency(one, two, p)
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
    assert (r.data["gpu_util"]["min_pct"], r.data["packing"]["min_efficiency"]) == (80.0, 0.90)
    assert r.data["scaling"]["min_efficiency"] * 2 == pytest.approx(1.9)
    assert (r.data["speedup"]["min_ratio"], r.data["speedup"]["v1_wall_s"]) == (4.0, 12600)
    assert r.data["correctness"]["min_consensus_agreement"] == 0.99
    h = ps["h200"]
    assert h.data["mfu"]["min_esm"] == 0.70 and h.data["gpu_util"]["min_pct"] == 95.0
    assert h.data["packing"]["min_efficiency"] == 0.97 and h.data["speedup"]["min_ratio"] == 12.0
    assert h.wall_limit_per_million("1gpu", 1) == 480


def test_profile_typo_is_an_error(tmp_path: Path) -> None:
    text = (PROFILES / "rtx4090.toml").read_text().replace("min_pct = 80.0", "min_pc = 80.0")
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(GateError, match=r"unknown key\(s\) in \[gpu_util\]: min_pc"):
        gate.load_profile(tmp_path / "x.toml")
    (tmp_path / "y.toml").write_text(text.replace("[gpu_util]", "[gpu_utilisation]"))
    with pytest.raises(GateError, match=r"unknown section \[gpu_utilisation\]"):
        gate.load_profile(tmp_path / "y.toml")


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
