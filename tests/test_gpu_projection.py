"""`virnucpro bench --project`: the projection's arithmetic, by hand."""

from __future__ import annotations

import json

import pytest

from virnucpro.errors import InputError
from virnucpro.perf import gpu_projection as gp

SIMPLE = gp.Measured(gpu="h100", tokens_per_s=1000, tokens_per_read=1.0, rest_share=0.5, startup_s=10,
                     scaling_2gpu=1.8, gemm_share=0.5, fp8_gemm_speedup=2.0, source="by hand")


def test_one_gpu_fp16_is_startup_plus_esm_plus_rest():
    p = gp.project(SIMPLE, "h100", 1, "fp16")
    assert (p.tokens_per_s, p.esm_s, p.rest_s) == (1000, 1000, 500)        # 1e6 tokens / 1000 tok/s; half of it
    assert p.wall_s == 10 + 1000 + 500


def test_two_gpus_divide_the_per_read_work_by_the_measured_scaling():
    assert gp.project(SIMPLE, "h100", 2, "fp16").wall_s == pytest.approx(10 + 1500 / 1.8)
    assert gp.project(SIMPLE, "h100", 8, "fp16").wall_s == pytest.approx(10 + 1500 / (8 * 0.9))


def test_fp8_speeds_up_only_the_gemms_and_leaves_the_rest_at_fp16():
    p = gp.project(SIMPLE, "h100", 1, "fp8")
    assert p.tokens_per_s == pytest.approx(1000 / (0.5 / 2 + 0.5))           # Amdahl: 1.333x
    assert p.esm_s == pytest.approx(750) and p.rest_s == 500


def test_mfu_is_carried_over_by_the_published_peaks():
    p = gp.project(SIMPLE, "rtx4090", 1, "fp16")
    assert p.tokens_per_s == pytest.approx(1000 * 165.2 / 989.4)
    assert gp.PEAKS["rtx4090"].fp8_tflops == pytest.approx(2 * gp.PEAKS["rtx4090"].fp16_tflops, abs=0.2)


def test_the_h200_gate_gives_back_its_own_451_s():
    assert gp.project(gp.H200_GATE, "h200", 1, "fp16").wall_s == pytest.approx(451, abs=0.5)


def test_a_bench_result_is_the_measurement():
    bench = {"gpu": "NVIDIA GeForce RTX 4090", "date": "d", "fast": {
        "esm_tokens_per_s": 20_000.0, "reads": 10_000, "wall_s": 30.0, "stages": {"embed_esm": 20.0, "load_models": 4.0}}}
    m = gp.from_bench(bench, scaling_2gpu=1.9)
    assert (m.gpu, m.tokens_per_s, m.tokens_per_read, m.startup_s, m.scaling_2gpu) == ("rtx4090", 20_000, 40.0, 4.0, 1.9)
    assert m.rest_share == pytest.approx((30 - 4 - 20) / 20)
    p = gp.project(m, "rtx4090", 1, "fp16")   # its own GPU: the run scaled to 1M reads, loading once
    assert p.wall_s == pytest.approx(4 + (30 - 4) * 100)
    with pytest.raises(InputError, match="no GPU run"):
        gp.from_bench({"device": "cpu", "fast": {"esm_tokens_per_s": 5.0, "reads": 1, "wall_s": 1, "stages": {}}})


@pytest.mark.parametrize("name, key", [("NVIDIA H200", "h200"), ("NVIDIA H100 80GB HBM3", "h100"),
                                       ("NVIDIA GeForce RTX 4090", "rtx4090")])
def test_gpu_names_map_to_their_peaks(name, key):
    assert gp.gpu_key(name) == key


def test_bench_project_prints_the_table_and_its_assumptions(run_cli, tmp_path):
    res = run_cli("bench", "--project")
    assert res.code == 0, str(res)
    rows = [line for line in res.out.splitlines() if line.strip().endswith(" s") and "RTX 4090" in line]
    assert len(rows) == 4 and any("H100" in line and line.split()[0] == "8" for line in res.out.splitlines())
    assert "assumptions:" in res.out and "MFU carried over" in res.out and "sources:" in res.out
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"gpu": "NVIDIA H100 80GB HBM3", "fast": {
        "esm_tokens_per_s": 96_958.0, "reads": 100_000, "wall_s": 50.0, "stages": {"embed_esm": 42.0, "load_models": 3.0}}}))
    res = run_cli("bench", "--project", "--from", bench)
    assert res.code == 0 and "96,958 ESM-2 tok/s on one H100" in res.out, str(res)
    assert run_cli("bench", "--project", "--tokens-per-s", "1000").code == 2


def test_a_measured_fp8_speedup_replaces_the_gemm_only_estimate():
    import dataclasses
    m = dataclasses.replace(SIMPLE, fp8_esm_speedup=1.25)
    p16, p8 = gp.project(m, "h100", 1, "fp16"), gp.project(m, "h100", 1, "fp8")
    assert p8.tokens_per_s == pytest.approx(1.25 * p16.tokens_per_s)
    assert any("1.250x the fp16 path" in line for line in gp.projection_lines(m)), gp.projection_lines(m)
