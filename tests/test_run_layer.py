"""The run layer's parts on their own (no pipeline run): which executor a run gets and what it
starts before the input is read, faults handed down explicitly (never read from the environment),
and the segments worker processes plan from. End-to-end behaviour: tests/test_parallel.py."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from virnucpro.engines.config import EngineConfig
from virnucpro.run import executor as ex
from virnucpro.run.devices import Rank
from virnucpro.run.faults import FaultPlan
from virnucpro.run.rundir import RunDir

PKG = Path(__file__).resolve().parents[1] / "virnucpro"


def options(**kw) -> SimpleNamespace:
    config = kw.pop("engine_config", EngineConfig(precision="fp32"))
    base = dict(engine_config=config, token_budget=1024, segment_reads=None, save_embeddings=False,
                batches_per_unit=None, resume=False, skip_failing_units=False, precision=config.precision,
                stale_s=120.0, outdir=Path("/nonexistent"),
                chunk_length=300, allow_classifier_mismatch=False, faults=None)
    return SimpleNamespace(**{**base, **kw})


def test_no_production_module_reads_a_test_hook_from_the_environment():
    """Faults reach production code only as a FaultPlan argument."""
    hooks = re.compile(r"VIRNUCPRO_TEST_|VIRNUCPRO_FAKE_OOM")
    found = [f"{p.relative_to(PKG.parent)}:{n}" for p in sorted(PKG.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if hooks.search(line)]
    assert not found, f"test hooks read in production code: {found}"


def test_a_fault_plan_comes_from_json_and_refuses_unknown_faults():
    plan = FaultPlan.from_json('{"die_owner": "w1", "die_after": 2, "fake_oom_tokens": 600}')
    assert plan == FaultPlan(die_owner="w1", die_after=2, fake_oom_tokens=600)
    assert not plan.dies_after("w1", 1) and plan.dies_after("w1", 2) and not plan.dies_after("w0", 5)
    with pytest.raises(ValueError, match="die_ownr"):
        FaultPlan.from_json('{"die_ownr": "w1"}')


def test_a_bad_fork_is_pretended_only_in_a_worker_a_fork_server_started():
    from virnucpro.run.spawn import in_bad_fork
    assert in_bad_fork("forkserver", FaultPlan(bad_fork=True)) is True
    assert in_bad_fork("spawn", FaultPlan(bad_fork=True)) is False
    assert in_bad_fork("forkserver", None) is False


@pytest.mark.parametrize("devices, skip, rank, kind", [
    (["cpu"], False, None, ex.InProcess),
    (["cuda:0"], False, None, ex.InProcess),
    (["cuda:0", "cuda:1"], False, None, ex.LocalWorkers),
    (["cpu"], True, None, ex.LocalWorkers),          # skipping a unit needs a worker process to lose
    (["cuda:1"], True, Rank(1, 4, 1), ex.TorchrunRank),
])
def test_one_executor_is_chosen_per_run(devices, skip, rank, kind):
    got = ex.choose_executor(options(skip_failing_units=skip), None, devices, rank)
    assert type(got) is kind
    assert got.in_process == (kind is not ex.LocalWorkers)
    assert got.publishes == (kind is ex.LocalWorkers), "only worker processes plan from published segments"


def test_torchrun_ranks_share_a_launch_token_and_only_rank_0_leads(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-7")
    r0 = ex.choose_executor(options(), None, ["cpu"], Rank(0, 2, 0))
    r1 = ex.choose_executor(options(), None, ["cpu"], Rank(1, 2, 1))
    assert r0.token == r1.token == "TORCHELASTIC_RUN_ID=launch-7"
    assert (r0.leads, r1.leads) == (True, False) and (r0.owner, r1.owner) == ("r0", "r1")
    assert r0.world == 2 and r1.stale_s == 120.0
    fresh = [ex.choose_executor(options(), None, ["cpu"], None).token for _ in range(2)]
    assert fresh[0] != fresh[1], "two runs on one host must not share a token"


def test_a_fresh_run_loads_its_models_before_the_input_is_read_a_resumed_one_does_not(monkeypatch):
    loads = []

    def fake_load(models, device, engine_opts, faults=None):
        loads.append((device, engine_opts["token_budget"], faults))
        return "engine", 0.0

    monkeypatch.setattr(ex, "load_fast_engine", fake_load)
    faults = FaultPlan(fake_oom_tokens=600)
    fresh = ex.choose_executor(options(faults=faults), None, ["cpu"], None)
    fresh.start_early(0.0)
    assert fresh.loading.result() == ("engine", 0.0)
    assert loads == [("cpu", 1024, faults)], "the engine loads with the run's budget and its fault plan"
    assert fresh.budget.tokens == 1024 and fresh.budget.given
    assert fresh.models_loading() is not None and not fresh.models_loading()()

    resumed = ex.choose_executor(options(resume=True), None, ["cpu"], None)
    resumed.start_early(0.0)
    assert resumed.loading is None and resumed.models_loading() is None, "a resumed run's budget is the checkpoints'"
    assert len(loads) == 1


def test_resumed_worker_processes_start_only_their_fork_server_early(monkeypatch):
    started = []
    monkeypatch.setattr(ex, "prestart_workers", lambda: started.append("fork server"))
    workers = ex.choose_executor(options(resume=True), None, ["cpu", "cpu"], None)
    workers.start_early(0.0)
    assert started == ["fork server"] and workers.coordinator is None


def test_run_settings_take_the_scaling_options_out_of_the_engine_options():
    config = EngineConfig(gpu_memory_gib=24.0)
    s = ex.RunSettings.of(options(engine_config=config, token_budget=2048, segment_reads=70,
                                  batches_per_unit=2, save_embeddings=True))
    assert (s.given_budget, s.segment_reads, s.batches_per_unit) == (2048, 70, 2)
    assert s.engine_opts_for(4096) == {"config": config, "keep_features": True, "token_budget": 4096,
                                       "batches_per_unit": 2}


def test_workers_follow_the_published_plan_unit_for_unit(tmp_path):
    """A worker process follows the coordinator's plan (its unit store and per-segment index) instead
    of planning again: the same units, batches and sequences, complete once the last is in."""
    from virnucpro.plan.planner import PlanBuilder, UnitStore, follow
    rng = np.random.default_rng(0)
    nuc = ["ACG" * int(k) for k in rng.integers(10, 60, 300)]
    prot = ["M" * (len(s) // 3) for s in nuc]
    rd = RunDir(tmp_path)
    rd.reset()
    coord = PlanBuilder(512, 2, 2048, UnitStore(rd.plan_dir()), publish=True)
    for a in range(0, 300, 70):
        coord.add_seqs(nuc[a:a + 70], prot[a:a + 70], last=a + 70 >= 300)
    worker = PlanBuilder(512, 2, 2048, UnitStore(rd.plan_dir(), fresh=False))
    follow(worker, threading.Event())
    assert worker.complete and worker.n_units == coord.n_units > 2
    a, b = coord.prep, worker.prep
    assert a.n_items == b.n_items and a.unit_tokens.tolist() == b.unit_tokens.tolist()
    for u in range(a.plan.units.__len__()):
        x, y = a.unit(u), b.unit(u)
        assert x.frames.tolist() == y.frames.tolist() and x.nuc == y.nuc and x.prot == y.prot
        assert [(k, r.tolist()) for k, r in x.items] == [(k, r.tolist()) for k, r in y.items]
    rd.remove_plans()
    assert not rd.plan_dir().exists()
