"""EngineConfig: filled from options and (for experiments) the environment in one place, the CLI; written
into run.json; part of the resume identity. Models and engines never read the environment."""

import argparse
import json
import re
from pathlib import Path

import pytest

from virnucpro.cli import ENGINE_ENV, engine_config_from_env
from virnucpro.engines.config import EngineConfig, ProfileSpec
from virnucpro.errors import InputError

PKG = Path(__file__).resolve().parents[1] / "virnucpro"
# The one environment read below the CLI that is not an engine setting: where the model files are
# ($VIRNUCPRO_MODELS, documented with --models).
ALLOWED = {("models/layout.py", "VIRNUCPRO_MODELS")}


def test_models_and_engines_never_read_the_environment():
    found = []
    for sub in ("models", "engines"):
        for path in sorted((PKG / sub).rglob("*.py")):
            rel = path.relative_to(PKG).as_posix()
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\b(environ|getenv)\b", line):
                    names = set(re.findall(r"VIRNUCPRO_\w+|ENV_VAR", line)) or {"?"}
                    if not all((rel, "VIRNUCPRO_MODELS" if nm == "ENV_VAR" else nm) in ALLOWED for nm in names):
                        found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "environment reads inside models/ or engines/ (fill an EngineConfig field in cli.py):\n" + \
        "\n".join(found)


def args(**kw):
    return argparse.Namespace(**{"precision": None, **kw})   # no --precision given


def test_the_environment_fills_only_the_experiment_fields():
    assert engine_config_from_env(args(), {}) == EngineConfig(), "no --precision: auto, by device"
    assert EngineConfig().resolved("cuda").precision == "fp16" and EngineConfig().resolved("cpu").precision == "fp32"
    cfg = engine_config_from_env(args(precision="bf16", no_compile=True, gpu_memory_gib=24.0),
                                 {"VIRNUCPRO_ESM_GELU": "exact", "VIRNUCPRO_DNABERT_COMPILE": "1",
                                  "VIRNUCPRO_TORCH_PROFILE": "/tmp/x.json:5"})
    assert cfg == EngineConfig(precision="bf16", esm_kernels="eager", gelu="exact", dnabert_compile=True,
                               gpu_memory_gib=24.0, profile=ProfileSpec("/tmp/x.json", 5, 30))
    assert set(ENGINE_ENV) == {"VIRNUCPRO_ESM_GELU", "VIRNUCPRO_DNABERT_COMPILE", "VIRNUCPRO_TORCH_PROFILE"}
    for gone in ("VIRNUCPRO_ESM_KERNELS", "VIRNUCPRO_ESM_RESIDUAL", "VIRNUCPRO_WEIGHT_COPY", "VIRNUCPRO_DNA_BATCHES"):
        assert engine_config_from_env(args(), {gone: "x"}) == EngineConfig(), f"{gone} still changes the engine"


@pytest.mark.parametrize("env, match", [({"VIRNUCPRO_ESM_GELU": "tanh"}, "exact, tanh-epilogue"),
                                        ({"VIRNUCPRO_DNABERT_COMPILE": "yes"}, "VIRNUCPRO_DNABERT_COMPILE"),
                                        ({"VIRNUCPRO_TORCH_PROFILE": "t.json:x:3"}, "PATH")])
def test_a_bad_switch_is_an_input_error(env, match):
    with pytest.raises(InputError, match=match):
        engine_config_from_env(args(), env)


def test_identity_holds_the_fields_that_change_the_numbers():
    a = EngineConfig(precision="fp16")
    assert a.identity() == {"precision": "fp16", "esm_kernels": "auto", "gelu": "tanh-epilogue",
                            "dnabert_compile": False}
    same = a.replace(gpu_memory_gib=24.0, loader_workers=0, profile=ProfileSpec("t.json"))
    assert same.identity() == a.identity(), "memory cap, loader processes and profiling change no number"
    assert a.replace(gelu="exact").identity() != a.identity()
    assert json.loads(json.dumps(a.to_json())) == a.to_json()


def test_run_json_holds_the_config_and_resume_refuses_another(tiny_models, tmp_path, run_cli, monkeypatch):
    out = tmp_path / "run"
    cmd = ("predict", "--sample", "-o", out, "--models", tiny_models, "--device", "cpu", "--engine", "fast",
           "--precision", "fp32", "--token-budget", "2048", "--no-progress")
    monkeypatch.delenv("VIRNUCPRO_ESM_GELU", raising=False)
    res = run_cli(*cmd)
    assert res.code == 0, str(res)
    # run.json holds the settings the run used: the loader's, which no option gave, resolved too
    assert json.loads((out / "run.json").read_text())["engine_config"] == \
        EngineConfig(precision="fp32").resolved("cpu").to_json() == \
        EngineConfig(precision="fp32", loader_workers=2, loader_prefetch=4).to_json()
    before = (out / "prediction_results.txt").read_bytes()

    res = run_cli(*cmd, "--resume", "--no-compile")
    assert res.code == 2 and "engine configuration" in res.err and '"esm_kernels": "eager"' in res.err, str(res)
    monkeypatch.setenv("VIRNUCPRO_ESM_GELU", "exact")
    res = run_cli(*cmd, "--resume")
    assert res.code == 2 and "engine configuration" in res.err, str(res)
    assert (out / "prediction_results.txt").read_bytes() == before, "a refused resume touched the outputs"

    monkeypatch.delenv("VIRNUCPRO_ESM_GELU")
    res = run_cli(*cmd, "--resume")
    assert res.code == 0, f"the same settings must resume: {res}"
    assert (out / "prediction_results.txt").read_bytes() == before
