"""What a laptop user gets: ``--engine auto`` on a CPU is the fast engine at fp32 (scores within
1e-5 of the reference engine's), both engines' progress bars move during the run, and -t/--threads
bounds torch's CPU threads and the input loader's processes (recorded in run.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from virnucpro.engines.config import EngineConfig
from virnucpro.options import CPU_BATCHES_PER_UNIT, PredictOptions, choose_engine
from virnucpro.run.executor import worker_threads


class RecordingBar:
    """Stands in for core.progress.progress_bar: keeps every 'completed' the run reports."""
    bars: list["RecordingBar"] = []

    def __init__(self, enabled: bool):
        self.enabled, self.completed, self.total = enabled, [], None
        RecordingBar.bars.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description, total=None, completed=0, **fields):
        self.total = total
        self.completed.append(completed)
        return 0

    def update(self, task, completed=None, total=None, **fields):
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed.append(completed)

    def moved(self) -> list:
        """The values reported strictly between the start and the end."""
        return sorted({c for c in self.completed if 0 < c < self.total})


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory, run_cli, synthetic_reads) -> dict:
    """The same reads with ``--engine auto -t 1`` and ``--engine reference``, progress recorded."""
    import virnucpro.pipeline as pipeline
    import virnucpro.run.fast as fast
    reads = synthetic_reads(40, 3)
    base = tmp_path_factory.mktemp("cpu_engine")
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "progress_bar", RecordingBar)
    mp.setattr(fast, "progress_bar", RecordingBar)
    threads_before = torch.get_num_threads()
    done = {}
    try:
        for name, extra in (("auto", ["-t", "1", "--token-budget", "256"]), ("reference", ["--engine", "reference"])):
            RecordingBar.bars = []
            res = run_cli("predict", reads, "-o", base / name, "--models", tiny_models, "--device", "cpu",
                          "--progress", *extra)
            assert res.code == 0, str(res)
            done[name] = base / name
            done[name + ":bar"] = next(b for b in RecordingBar.bars if b.enabled and b.total)
    finally:
        mp.undo()
    done["threads_after"], done["threads_before"] = torch.get_num_threads(), threads_before
    return done


def scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "prediction_results.txt", sep="\t")


def test_auto_on_a_cpu_is_the_fast_engine_at_fp32(runs):
    m = json.loads((runs["auto"] / "run.json").read_text())
    assert (m["engine"], m["precision"]) == ("fast", "fp32"), (m["engine"], m["precision"])


def test_its_scores_are_within_1e5_of_the_reference_engines(runs):
    a, r = scores(runs["auto"]), scores(runs["reference"])
    assert a.Sequence_ID.tolist() == r.Sequence_ID.tolist() and len(a) >= 20
    worst = float(np.abs(a[["score1", "score2"]].to_numpy() - r[["score1", "score2"]].to_numpy()).max())
    assert worst <= 1e-5, f"fast fp32 vs reference: scores differ by up to {worst:.2e}"


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_the_progress_bar_moves_during_the_run(runs, engine):
    bar = runs[f"{engine}:bar"]
    assert bar.completed[-1] == bar.total, f"{engine}: the bar ends at {bar.completed[-1]} of {bar.total}"
    assert len(bar.moved()) >= 3, f"{engine}: the bar showed only {bar.moved()} between 0 and {bar.total}"


def test_threads_bound_torch_and_the_loader_and_are_recorded(runs):
    m = json.loads((runs["auto"] / "run.json").read_text())
    assert m["options"]["threads"] == 1 and m["machine"]["torch_threads"] == 1, (m["options"], m["machine"])
    assert m["options"]["engine_config"]["loader_workers"] == 0, m["options"]["engine_config"]
    assert runs["threads_after"] == runs["threads_before"], "the run left this process's thread count changed"
    r = json.loads((runs["reference"] / "run.json").read_text())
    assert r["options"]["threads"] is None and r["machine"]["torch_threads"] == runs["threads_before"]


def test_engine_precision_and_units_chosen_per_device():
    opts = PredictOptions(input=Path("x"), outdir=Path("o"))
    name, cpu = choose_engine(opts, "cpu")
    assert (name, cpu.precision, cpu.batches_per_unit) == ("fast", "fp32", CPU_BATCHES_PER_UNIT)
    name, gpu = choose_engine(opts, "cuda")
    assert (name, gpu.precision, gpu.batches_per_unit) == ("fast", "fp16", None)
    _, given = choose_engine(PredictOptions(input=Path("x"), outdir=Path("o"), engine_config=EngineConfig(precision="bf16"),
                                            batches_per_unit=4),
                             "cpu")
    assert (given.precision, given.batches_per_unit) == ("bf16", 4), "what the user gave stays"
    _, small = choose_engine(opts, "cpu", esm_bytes=5 << 20)
    assert small.batches_per_unit is None, "a small ESM-2 on a CPU keeps the default batches per unit"
    _, big = choose_engine(opts, "cpu", esm_bytes=5 << 30)
    assert big.batches_per_unit == CPU_BATCHES_PER_UNIT, "the 3B on a CPU: one batch per unit"
    assert choose_engine(PredictOptions(input=Path("x"), outdir=Path("o"), engine="reference"), "cpu")[0] == "reference"


def test_threads_are_shared_by_the_worker_processes():
    assert worker_threads(8, ["cpu"] * 2) == 4
    assert worker_threads(1, ["cpu"] * 3) == 1
    assert worker_threads(8, ["cuda:0", "cuda:1"]) == 4
    assert worker_threads(None, ["cuda:0"]) is None


def test_threads_below_one_is_a_usage_error(tmp_path, tiny_models, run_cli):
    inp = tmp_path / "in.fa"
    inp.write_text(">r\n" + "GCC" * 50 + "\n")
    res = run_cli("predict", inp, "-o", tmp_path / "out", "--models", tiny_models, "-t", "0")
    assert res.code == 2 and res.err.strip().splitlines()[-1].startswith("virnucpro: error: -t/--threads"), str(res)
    assert not (tmp_path / "out").exists()
