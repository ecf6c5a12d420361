"""`virnucpro tune` and the tuned files predict reads: the sweep runs end to end on a CPU with the tiny
models and writes a file keyed by the device; predict uses it for what its command line left open
and records it in run.json; an option given wins; a file for another device is never used; a damaged
one is one warning line; --no-tuned ignores it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from virnucpro.engines import tuned
from virnucpro.engines.tuned import DeviceKey, device_key, read_tuned, tuned_path, write_tuned
from virnucpro.perf import tune
from virnucpro.perf.tune import Measured, Point


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def tuned_dir(home: Path) -> Path:
    return home / "virnucpro" / "tuned"


VALUES = {"token_budget": 2048, "dna_budget": 4096, "loader_workers": 0, "loader_prefetch": 3, "precision": None}


def predict(run_cli, models, out, *extra):
    res = run_cli("predict", "--sample", "-o", out, "--models", models, "--device", "cpu", "--no-progress", *extra)
    assert res.code == 0, str(res)
    return res, json.loads((out / "run.json").read_text())


# -- the sweep ------------------------------------------------------------------------------------

def test_tune_sweeps_every_step_and_writes_a_tuned_file_keyed_by_the_device(tiny_models, tmp_path, config_home,
                                                                              run_cli):
    out = tmp_path / "tune"
    res = run_cli("tune", "--models", tiny_models, "--device", "cpu", "--quick", "--apply", "--max-drift", "10", "--reads", "60",
                  "--precisions", "fp32,bf16", "--max-seconds", "300", "-o", out)
    assert res.code == 0, str(res)
    result = json.loads((out / "tune.json").read_text())
    steps = [r["step"] for r in result["rows"]]
    assert steps[0] == "reference-start" and "end" in steps, steps
    assert {"token_budget", "dna_budget", "loader_workers", "precision"} <= set(steps), steps
    assert result["skipped"] == [], result["skipped"]
    ref = result["reference"]
    assert ref["dna_budget"] == 262144 and ref["loader_workers"] == 2 and ref["precision"] == "fp32"
    # each step's chosen point carries the earlier steps' choices
    chosen = {r["step"]: r for r in result["rows"] if r["chosen"]}
    assert chosen["dna_budget"]["token_budget"] == chosen["token_budget"]["token_budget"]
    assert chosen["loader_workers"]["dna_budget"] == chosen["dna_budget"]["dna_budget"]
    # bf16 is measured and reported, never chosen without --allow-precision-change
    bf16 = [r for r in result["rows"] if r["precision"] == "bf16"]
    assert bf16 and not any(r["chosen"] for r in bf16) and "not chosen" in bf16[0]["note"], bf16
    assert result["values"]["precision"] is None and result["chosen"]["precision"] == "fp32"
    # the file: named and keyed by this device, the chosen values, read back as predict reads it
    key = device_key("cpu")
    path = tuned_path(tuned_dir(config_home), key)
    assert result["tuned_file"] == str(path) and path.is_file()
    t = read_tuned(path, key)
    assert t.values == result["values"] == {k: result["chosen"][k] if k != "precision" else None
                                            for k in tuned.VALUE_FIELDS}
    assert t.data["virnucpro_version"] and t.data["torch_version"] and t.data["date"]
    assert t.data["figures"]["drift"] == result["drift"]
    lines = (out / "tune.tsv").read_text().splitlines()
    assert lines[0].startswith("step\ttoken_budget") and len(lines) == len(result["rows"]) + 1
    assert "tok/s (median)" in res.out and "drift" in res.out and str(path) in res.out
    assert (out / "tune.png").is_file()


def test_tune_no_apply_and_the_time_budget_skips_steps(tiny_models, tmp_path, config_home, run_cli):
    out = tmp_path / "tune"
    res = run_cli("tune", "--models", tiny_models, "--device", "cpu", "--quick", "--reads", "30", "--no-apply",
                  "--max-seconds", "0.5", "-o", out)
    assert res.code == 0, str(res)
    result = json.loads((out / "tune.json").read_text())
    assert set(result["skipped"]) == {"token_budget", "dna_budget", "loader_workers", "loader_prefetch"}
    assert "estimated sweep" in res.out and "skipped" in res.out
    assert result["values"]["token_budget"] == result["reference"]["token_budget"], "nothing measured: the defaults"
    assert "tuned_file" not in result and not tuned_dir(config_home).exists(), "--no-apply writes no tuned file"


def test_a_step_keeps_its_value_inside_the_noise_and_never_picks_an_oom_point():
    base = Point(8192, 262144, 2, 4, "fp16")

    def m(budget, tok_s, oom=0):
        runs = tok_s if isinstance(tok_s, list) else [tok_s]
        return Measured("token_budget", Point(budget, 262144, 2, 4, "fp16"),
                        [{"tokens_per_s": t, "wall_s": 1.0, "io_wait_s": 0.0, "oom_retries": oom,
                          "peak_gpu_mem_gib": None} for t in runs])
    win, why = tune._pick([m(4096, 990.0), m(8192, 1000.0), m(16384, 1005.0)], base, 0.01)
    assert win.point == base and "within" in why, (win.point, why)
    win, _ = tune._pick([m(8192, 1000.0), m(16384, 1050.0)], base, 0.01)
    assert win.point.token_budget == 16384
    win, _ = tune._pick([m(8192, 1000.0), m(16384, 2000.0, oom=1)], base, 0.01)
    assert win.point == base, "a point that ran out of memory is never chosen"
    win, why = tune._pick([m(8192, [1000.0, 1000.0, 1000.0]), m(16384, [700.0, 1100.0, 1300.0])], base, 0.01)
    assert win.point == base and "noise" in why, "a better median whose slowest repeat is no faster: noise"
    win, _ = tune._pick([m(8192, [1000.0, 1010.0, 990.0]), m(16384, [1040.0, 1050.0, 1060.0])], base, 0.01)
    assert win.point.token_budget == 16384


def test_the_device_key_names_model_and_memory():
    h100 = DeviceKey("cuda", "NVIDIA H100 80GB HBM3", 80.0)
    assert h100.slug == "nvidia-h100-80gb-hbm3-80gib"
    assert DeviceKey("cuda", "NVIDIA H100 80GB HBM3", 24.0, emulated=True).slug == "nvidia-h100-80gb-hbm3-24gib"
    assert DeviceKey("cuda", "NVIDIA H100 80GB HBM3", 23.5).slug.endswith("-23p5gib")
    cpu = device_key("cpu", 24)
    assert cpu.memory_gib == 24.0 and cpu.emulated and cpu.slug.startswith("cpu-") and cpu.slug.endswith("-24gib")
    assert not h100.same_device(DeviceKey("cuda", "NVIDIA H100 80GB HBM3", 24.0).to_json())
    assert not h100.same_device(DeviceKey("cuda", "NVIDIA H200", 80.0).to_json())


# -- predict and the tuned file ---------------------------------------------------------------------

def test_predict_uses_the_tuned_file_and_records_it(tiny_models, tmp_path, config_home, run_cli):
    path = write_tuned(tuned_dir(config_home), device_key("cpu"), dict(VALUES), {"date": "2026-12-07"})
    _, run = predict(run_cli, tiny_models, tmp_path / "out")
    t = run["tuned"]
    assert t["used"] and t["path"] == str(path), t
    assert t["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert t["applied"] == {k: v for k, v in VALUES.items() if v is not None}, t
    assert run["options"]["token_budget"] == 2048 and run["options"]["dna_budget"] == 4096
    cfg = run["engine_config"]
    assert cfg["loader_workers"] == 0 and cfg["loader_prefetch"] == 3 and cfg["precision"] == "fp32", cfg


def test_an_option_given_wins_over_the_tuned_file(tiny_models, tmp_path, config_home, run_cli):
    write_tuned(tuned_dir(config_home), device_key("cpu"), dict(VALUES, precision="bf16"), {})
    _, run = predict(run_cli, tiny_models, tmp_path / "out", "--token-budget", "4096", "--loader-workers", "1",
                     "--precision", "fp32")
    t = run["tuned"]
    assert t["explicit"] == {"token_budget": 4096, "loader_workers": 1, "precision": "fp32"}, t
    assert t["applied"] == {"dna_budget": 4096, "loader_prefetch": 3}, t
    assert run["options"]["token_budget"] == 4096 and run["engine_config"]["loader_workers"] == 1
    assert run["engine_config"]["precision"] == "fp32" and run["options"]["dna_budget"] == 4096


def test_a_tuned_file_for_another_device_is_never_used(tiny_models, tmp_path, config_home, run_cli):
    here = device_key("cpu")
    other = DeviceKey("cpu", here.model, here.memory_gib + 8)   # same CPU, other memory: another file name
    write_tuned(tuned_dir(config_home), other, dict(VALUES), {})
    planted = tuned_path(tuned_dir(config_home), here)           # this device's name, another device inside
    planted.write_text(tuned_path(tuned_dir(config_home), other).read_text())
    res, run = predict(run_cli, tiny_models, tmp_path / "out")
    assert not run["tuned"]["used"] and "another device" in run["tuned"]["reason"], run["tuned"]
    assert run["options"]["token_budget"] is None and run["engine_config"]["loader_workers"] == 2
    warned = [line for line in res.err_lines() if "tuned file" in line]
    assert len(warned) == 1 and "ignored" in warned[0], res.err


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 1, "values": {}}),
                                     "__VALUES__token_budget=-5"])
def test_a_damaged_tuned_file_is_one_warning_and_the_defaults(tiny_models, tmp_path, config_home, run_cli, content):
    key = device_key("cpu")
    path = write_tuned(tuned_dir(config_home), key, dict(VALUES), {})
    if content.startswith("__VALUES__"):
        data = json.loads(path.read_text())
        data["values"]["token_budget"] = -5
        content = json.dumps(data)
    path.write_text(content)
    res, run = predict(run_cli, tiny_models, tmp_path / "out")
    warned = [line for line in res.err_lines() if "tuned file" in line]
    assert len(warned) == 1 and warned[0].startswith("virnucpro: WARNING: tuned file"), res.err
    assert "Traceback" not in res.err
    assert run["tuned"]["used"] is False and run["options"]["token_budget"] is None
    assert run["engine_config"]["loader_workers"] == 2 and run["engine_config"]["loader_prefetch"] == 4


def test_no_tuned_ignores_the_file(tiny_models, tmp_path, config_home, run_cli):
    write_tuned(tuned_dir(config_home), device_key("cpu"), dict(VALUES), {})
    _, run = predict(run_cli, tiny_models, tmp_path / "out", "--no-tuned")
    assert run["tuned"] == {"used": False, "reason": "--no-tuned"}
    assert run["options"]["token_budget"] is None and run["engine_config"]["loader_workers"] == 2


def test_resume_keeps_the_checkpoints_budgets_whatever_the_tuned_file_says(tiny_models, tmp_path, config_home,
                                                                            run_cli):
    out = tmp_path / "out"
    write_tuned(tuned_dir(config_home), device_key("cpu"), dict(VALUES), {})
    _, first = predict(run_cli, tiny_models, out)
    before = (out / "prediction_results.txt").read_bytes()
    write_tuned(tuned_dir(config_home), device_key("cpu"), dict(VALUES, token_budget=8192, dna_budget=8192), {})
    _, again = predict(run_cli, tiny_models, out, "--resume")
    assert set(again["tuned"]["skipped"]) == {"token_budget", "dna_budget"}, again["tuned"]
    assert (out / "prediction_results.txt").read_bytes() == before


def test_a_quick_or_drifting_sweep_writes_no_tuned_file(tiny_models, tmp_path, config_home, run_cli):
    """On an H100 --quick's 300-read points chose no loader processes at 1.49x while the reference drifted
    +9.3%, and wrote that into the tuned file predict would then use. --quick now only reports unless
    --apply; a drift beyond --max-drift (here any drift at all) is never written."""
    res = run_cli("tune", "--models", tiny_models, "--device", "cpu", "--quick", "--reads", "30",
                  "--precisions", "fp32", "--max-seconds", "120", "-o", tmp_path / "q")
    assert res.code == 0, str(res)
    assert "not written (--quick without --apply)" in res.out and not tuned_dir(config_home).exists()
    res = run_cli("tune", "--models", tiny_models, "--device", "cpu", "--quick", "--apply", "--max-drift", "0",
                  "--reads", "30", "--precisions", "fp32", "--max-seconds", "120", "-o", tmp_path / "d")
    assert res.code == 0, str(res)
    result = json.loads((tmp_path / "d" / "tune.json").read_text())
    if result["drift"] == 0:
        pytest.skip("the reference did not drift at all this time (nothing to refuse)")
    assert "tuned_file" not in result and "drifted" in result["not_written"], result.get("not_written")
    assert "not written (the reference drifted" in res.out and not tuned_dir(config_home).exists()


def test_the_choice_must_hold_side_by_side_at_the_end():
    """A step's winner is picked against its incumbent; the chosen point must still beat the defaults
    by more than --min-gain when both alternate at the end, else the defaults are what tune keeps."""
    ref, fast = Point(65536, 262144, 2, 4, "fp16"), Point(32768, 262144, 2, 4, "fp16")

    def m(point, *tps):
        return Measured("end", point, [{"tokens_per_s": t, "oom_retries": 0} for t in tps])

    ok, why = tune._confirmed(m(ref, 90254), m(fast, 90744), 0.01)   # the H100 24 GiB run: 1.005x
    assert not ok and "defaults kept" in why and "1.005x" in why, why
    ok, why = tune._confirmed(m(ref, 90000, 90100), m(fast, 95000, 94800), 0.01)
    assert ok and "confirmed" in why, why
    ok, _ = tune._confirmed(m(ref), m(fast, 1.0), 0.01)
    assert not ok
