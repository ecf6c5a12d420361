"""The fast engine (CPU path) against the reference engine, and its telemetry."""

import argparse

import numpy as np
import pandas as pd
import pytest

from virnucpro.perf.compare import compare_dirs
from virnucpro.core.telemetry import read_telemetry


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory, run_cli):
    out = tmp_path_factory.mktemp("engines")
    for name, extra in (("reference", ["--engine", "reference"]),
                        ("fast32", ["--engine", "fast", "--precision", "fp32", "--token-budget", "2048"]),
                        ("fast16", ["--engine", "fast", "--precision", "bf16", "--token-budget", "2048"])):
        res = run_cli("predict", "--sample", "-o", out / name, "--models", tiny_models, "--device", "cpu",
                         "--no-progress", *extra)
        assert res.code == 0, str(res)
    return out


def frames(d):
    return pd.read_csv(d / "prediction_results.txt", sep="\t")


def test_fp32_fast_engine_equals_reference(runs):
    ref, fast = frames(runs / "reference"), frames(runs / "fast32")
    assert ref.Sequence_ID.tolist() == fast.Sequence_ID.tolist(), "frame ids or their order differ"
    diff = np.abs(ref.score2 - fast.score2).max()
    assert diff <= 1e-5, f"fp32 fast engine scores differ from the reference by {diff:.2e}"
    assert (ref.Prediction == fast.Prediction).all()
    assert (runs / "reference" / "prediction_results_highestscore.csv").read_text() == \
        (runs / "fast32" / "prediction_results_highestscore.csv").read_text()


def test_reduced_precision_agreement(runs):
    result = compare_dirs(runs / "reference", runs / "fast16")
    frame = result.modes["frame"]
    assert frame.only_v1 == frame.only_v2 == 0
    assert frame.agreement >= 0.98, f"bf16 per-frame agreement {frame.agreement:.4f} on the tiny models"
    assert frame.scores.mean_abs <= 5e-3, f"mean |score difference| {frame.scores.mean_abs:.2e}"


def test_telemetry_of_a_fast_run(runs):
    ev = read_telemetry(runs / "fast32" / "virnucpro.log")
    kinds = {e["event"] for e in ev}
    assert {"run_start", "plan", "batch", "stage", "summary"} <= kinds, kinds
    batches = [e for e in ev if e["event"] == "batch"]
    assert {b["model"] for b in batches} == {"esm2", "dnabert"}
    for b in batches:
        assert 0 < b["packing_efficiency"] <= 1.0, b
        assert b["tokens"] <= b["budget"], b
        assert b["io_wait_s"] >= 0
    esm = [b for b in batches if b["model"] == "esm2"]
    summary = next(e for e in ev if e["event"] == "summary")
    plan = next(e for e in ev if e["event"] == "plan")
    assert sum(b["tokens"] for b in esm) == plan["esm_tokens"], "every ESM-2 token is in exactly one batch"
    assert summary["packing_efficiency"] == pytest.approx(plan["esm_tokens"] / (plan["batches"] * plan["budget"]))
    assert 0 < summary["packing_efficiency"] <= 1.0
    load = next(e for e in ev if e["event"] == "stage" and e["stage"] == "load_models")
    phases = load["phases"]   # where start-up went: opening the checkpoint is part of the ESM-2 weights
    assert {"cuda_init", "esm_open", "esm_weights", "dnabert_weights", "total"} <= set(phases), phases
    assert 0 <= phases["esm_open"] <= phases["esm_weights"] <= phases["total"], phases
    assert summary["frames"] == len(frames(runs / "fast32"))
    stages = summary["stages"]
    for name in ("chunk_translate", "load_models", "embed_dnabert", "embed_esm", "classify", "write"):
        assert name in stages, f"stage {name} missing from {sorted(stages)}"


def test_compile_worker_pool_is_released_in_the_background():
    """After the warm-up the engine shuts torch.compile's compile-process pool down in a thread (it
    cost ~1.2 s at exit on the H200); the helper must return such a background call and it must finish."""
    from virnucpro.engines.fast import release_compile_workers
    t = release_compile_workers()
    assert t is not None, "torch._inductor.async_compile.shutdown_compile_workers not found: the pool stays until exit"
    try:
        t.result(timeout=30)
    except TimeoutError:
        pass
    assert t.done(), "the compile-pool shutdown did not finish within 30 s"


def test_engine_falls_back_to_eager_kernels_when_triton_fails(tiny_models, monkeypatch, caplog):
    """A GPU Triton cannot compile for must still run (eager kernels, a warning), not fail. Simulated
    on the CPU: the engine believes it chose Triton and the warm-up raises."""
    from virnucpro.engines import fast
    from virnucpro.engines.config import EngineConfig
    from virnucpro.models import esm2_triton, layout
    monkeypatch.setattr(EngineConfig, "kernels_on", lambda self, device_type, triton_ok: "triton")

    def broken(*a, **k):
        raise RuntimeError("no kernel image for this GPU")
    monkeypatch.setattr(esm2_triton, "warm", broken)
    models = layout.resolve(tiny_models, 300)
    with caplog.at_level("WARNING", logger="virnucpro"):
        eng = fast.FastEngine(models, device="cpu", config=EngineConfig(precision="fp32"), token_budget=1024,
                              measure_peak=False)
    assert eng.kernels == "eager" and eng.esm.kernels == "eager"
    assert any("Triton kernels unavailable" in r.message for r in caplog.records), caplog.text


@pytest.fixture(scope="module")
def cpu_engine(tiny_models):
    """(models, a fast engine on the CPU with a 512-token budget, the 300-nt classifier)."""
    from virnucpro.engines import fast
    from virnucpro.engines.config import EngineConfig
    from virnucpro.models import layout
    from virnucpro.models.classifier import load_classifier
    models = layout.resolve(tiny_models, 300)
    eng = fast.FastEngine(models, device="cpu", config=EngineConfig(precision="fp32", loader_workers=0),
                          token_budget=512, measure_peak=False)
    return models, eng, load_classifier(models.classifier, 300, False)[0]


def random_frames(seed: int, n: int = 300) -> tuple[list[str], list[str]]:
    """``n`` random frames: nucleotides of 60-300 nt and proteins a third as long."""
    rng = np.random.default_rng(seed)
    nuc = ["".join(rng.choice(list("ACGT"), int(k))) for k in rng.integers(60, 300, n)]
    return nuc, ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), len(s) // 3)) for s in nuc]


def test_engine_hands_on_units_in_order_each_before_the_next_starts(cpu_engine):
    """The loop hands a unit on once the next batch is queued (its scores come back meanwhile); a
    new unit counts as started only after every earlier unit was handed on (so a worker lost in it
    loses no other), and every batch is accounted once."""
    from virnucpro.plan.planner import PlanBuilder
    from virnucpro.core.telemetry import Telemetry
    models, eng, clf = cpu_engine
    nuc, prot = random_frames(0)
    plans = PlanBuilder(512, 2, 2048)
    plans.add_seqs(nuc, prot, last=True)
    prep = plans.prep
    log: list[tuple[str, int]] = []
    scores_of: dict[int, np.ndarray] = {}

    def on_unit(u, frames, scores, info):
        log.append(("done", u))
        scores_of[u] = scores
        assert scores.shape == (len(frames), 2) and np.isfinite(scores).all()

    tel = Telemetry()
    n_units = len(prep.plan.units)
    assert n_units > 3, "the test needs several units"
    totals = eng.run(prep, clf, tel, iter(range(n_units)), on_unit, on_unit_start=lambda u: log.append(("start", u)))
    assert [e for e in log if e[0] == "done"] == [("done", u) for u in range(n_units)]
    for u in range(1, n_units):
        assert log.index(("done", u - 1)) < log.index(("start", u)), f"unit {u} started before unit {u - 1} was handed on"
    assert tel.counts.get("batch") == prep.n_items, f"{tel.counts.get('batch')} batch events for {prep.n_items} batches"
    assert not [e for e in tel.events if e["event"] in tel.LOG_ONLY], "per-batch events are kept only in the log"
    assert totals["units"] == n_units and totals["frames"] == len(nuc)
    assert totals["esm_tokens"] == sum(len(p) + 2 for p in prot) == prep.esm_tokens


def test_engine_goes_on_with_units_planned_during_the_pass(cpu_engine):
    """``more()`` extends a pass with the units planned meanwhile (no second pass, no GPU pause):
    every unit once, in order, with the scores of a run over the finished plan."""
    from virnucpro.plan.planner import PlanBuilder
    from virnucpro.core.telemetry import Telemetry
    _, eng, clf = cpu_engine
    nuc, prot = random_frames(1)
    plans = PlanBuilder(512, 2, 2048)
    plans.add_seqs(nuc[:150], prot[:150], last=False)
    first = plans.snapshot()
    n1 = len(first.plan.units)
    asked: list[int] = []

    def more():
        asked.append(len(done))
        if len(asked) > 1:
            return None
        plans.add_seqs(nuc[150:], prot[150:], last=True)   # "planned while the GPU worked"
        return plans.snapshot(), iter(range(n1, plans.n_units))

    done: dict[int, np.ndarray] = {}
    totals = eng.run(first, clf, Telemetry(), iter(range(n1)),
                     lambda u, frames, scores, info: done.setdefault(u, scores.copy()), more=more)
    n = plans.n_units
    assert n1 >= 1 and n > n1, "the test needs units in both segments"
    assert list(done) == list(range(n)), f"units handed on {list(done)}, expected 0..{n - 1} in order"
    assert len(asked) == 2, f"more() asked {len(asked)} times: once per used-up source"
    assert totals["frames"] == len(nuc) and totals["units"] == n
    again: dict[int, np.ndarray] = {}
    eng.run(plans.prep, clf, Telemetry(), iter(range(n)), lambda u, frames, scores, info: again.setdefault(u, scores))
    for u in range(n):
        np.testing.assert_allclose(done[u], again[u], rtol=0, atol=1e-6, err_msg=f"unit {u}")


def test_a_profile_window_traces_the_chosen_batches(cpu_engine, tmp_path, monkeypatch):
    """EngineConfig.profile (VIRNUCPRO_TORCH_PROFILE=PATH:FIRST:COUNT) writes a gzipped Chrome trace of
    those batches."""
    import gzip
    import json

    from virnucpro.cli import engine_config_from_env
    from virnucpro.plan.planner import PlanBuilder
    from virnucpro.core.telemetry import Telemetry
    _, eng, clf = cpu_engine
    nuc, prot = random_frames(2, 80)
    plans = PlanBuilder(512, 2, 2048)
    plans.add_seqs(nuc, prot, last=True)
    assert plans.prep.n_items >= 4, "the test needs a few batches"
    args = argparse.Namespace(precision="fp32")
    config = engine_config_from_env(args, {"VIRNUCPRO_TORCH_PROFILE": f"{tmp_path}/trace.json:2:2"})
    assert (config.profile.first, config.profile.count) == (2, 2)
    monkeypatch.setattr(eng, "config", eng.config.replace(profile=config.profile))
    eng.run(plans.prep, clf, Telemetry(), iter(range(plans.n_units)), lambda *a: None)
    written = list(tmp_path.glob("trace.cpu-*.json.gz"))
    assert len(written) == 1, f"expected one trace, found {sorted(p.name for p in tmp_path.iterdir())}"
    events = json.loads(gzip.decompress(written[0].read_bytes()))["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events), "no operator in the trace"


def test_a_bad_profile_spec_is_an_input_error():
    from virnucpro.cli import engine_config_from_env
    from virnucpro.errors import InputError
    with pytest.raises(InputError, match="PATH"):
        engine_config_from_env(argparse.Namespace(precision="fp16"), {"VIRNUCPRO_TORCH_PROFILE": "/tmp/t.json:x:3"})


def test_every_dnabert_batch_runs_under_the_engines_attention_backends(cpu_engine, monkeypatch):
    """The loop's DNABERT-S batches run inside ``dnabert.sdpa_backends(engine device)`` (on a GPU:
    no cuDNN attention, whose per-shape plans idled the GPU ~45 ms each, docs/benchmarks.md#exp-cudnn-attention), and the ESM-2
    batches do not need it."""
    import contextlib
    from virnucpro.plan.planner import PlanBuilder
    from virnucpro.models import dnabert
    from virnucpro.core.telemetry import Telemetry
    models, eng, clf = cpu_engine
    entered: list[str] = []
    real = dnabert.sdpa_backends

    @contextlib.contextmanager
    def recording(device):
        entered.append(str(device))
        with real(device):
            yield

    monkeypatch.setattr(dnabert, "sdpa_backends", recording)
    nuc, prot = random_frames(1, 120)
    plans = PlanBuilder(512, 2, 2048)
    plans.add_seqs(nuc, prot, last=True)
    prep = plans.prep
    eng.run(prep, clf, Telemetry(), iter(range(len(prep.plan.units))), lambda *a: None)
    n_dna = sum(1 for u in range(plans.n_units) for kind, _ in prep.unit(u).items if kind == "dna")
    assert entered == ["cpu"] * n_dna, f"expected {n_dna} DNABERT-S batches under sdpa_backends('cpu'), saw {entered}"


def test_loader_batches_are_pinned_by_the_dataloaders_pinning(monkeypatch):
    """Batches travel as DnaBatch/EsmBatch dataclasses; the DataLoader's pinning thread (torch's
    ``pin_memory``) must pin each of their tensors, as it pinned the dict values before, or the loop's
    non-blocking copies would wait for the GPU. Pinning is simulated (a CPU build cannot pin)."""
    import torch
    from torch.utils.data._utils.pin_memory import pin_memory

    from virnucpro.engines.fast.loader import DnaBatch, EsmBatch
    pinned: list[int] = []

    def fake_pin(self):
        pinned.append(id(self))
        return self.clone()
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    t = lambda *v: torch.tensor(v)   # noqa: E731
    for batch in (DnaBatch(3, t(1, 2), t(5, 6), t(2, 2), t(0, 1)), EsmBatch(4, t(1), t(0, 5, 2), t(0, 3), t(0, 1, 2), 3, t(7, 9))):
        tensors = {k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
        got = pin_memory(batch)
        assert type(got) is type(batch) and got.unit == batch.unit and got.kind == batch.kind
        assert {id(v) for v in tensors.values()} <= set(pinned), f"{type(batch).__name__}: a tensor was not pinned"
        for k, v in tensors.items():
            assert getattr(got, k) is not v and torch.equal(getattr(got, k), v), k
    assert EsmBatch(0, t(1), t(1), t(1), t(1), 7).pin_memory().max_len == 7
