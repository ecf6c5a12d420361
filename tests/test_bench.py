"""`virnucpro bench` end to end on CPU with the tiny models: the figures it claims are all there."""

import json

from virnucpro.perf.projection import project_wall_s


def test_bench_runs_both_engines_side_by_side_and_projects(tiny_models, tmp_path, run_cli):
    out = tmp_path / "bench"
    res = run_cli("bench", "--workload", "reads1k", "--models", tiny_models, "--device", "cpu",
                  "--reference-reads", "150", "--token-budget", "2048", "--out", out)
    assert res.code == 0, str(res)
    assert "projection to 1,000,000 reads" in res.out
    b = json.loads((out / "bench.json").read_text())
    fast = b["fast"]
    assert fast["reads"] == 1000 and fast["engine"] == "fast"
    assert b["tuned"]["used"] is False and "no tuned file" in b["tuned"]["reason"], b["tuned"]
    assert 0 < fast["packing_efficiency"] <= 1.0
    load = fast["stages"]["load_models"]
    expected = project_wall_s(fast["wall_s"], load, fast["reads"])
    assert abs(b["projection_1m_reads_s"] - expected) < 0.2, (b["projection_1m_reads_s"], expected)
    side = b["side_by_side"]
    assert side["reference"]["engine"] == "reference" and side["fast"]["engine"] == "fast"
    assert side["reference"]["reads"] == side["fast"]["reads"] == 150
    frame = side["agreement"]["frame"]
    assert frame["n"] == side["reference"]["frames"] > 0, "both engines must score the same frames"
    assert frame["agreement"] >= 0.95, frame
    assert side["speedup_end_to_end"] == round(side["reference"]["wall_s"] / side["fast"]["wall_s"], 2)


def test_bench_offers_fp8_and_refuses_it_on_a_cpu_before_writing_anything(tiny_models, tmp_path, run_cli):
    """bench takes the precisions predict takes; fp8 on a CPU is one line naming the fix (exit 2), with
    no models, workload or output directory written first."""
    assert "fp8" in run_cli("bench", "--help").out
    out = tmp_path / "bench"
    res = run_cli("bench", "--workload", "reads1k", "--models", tmp_path / "models", "--device", "cpu",
                  "--precision", "fp8", "--out", out)
    assert res.code == 2, str(res)
    assert "fp8" in res.err and "--precision fp8 needs" in res.err and "Traceback" not in res.err, res.err
    assert not out.exists() and not (tmp_path / "models").exists(), "bench wrote before refusing"
