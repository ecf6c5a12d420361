"""Output sets that never mix (virnucpro.io.outset, issue 16 item 2): a run killed, or refused by a full
disk, at any step of its write stage leaves either the old complete set or the new complete set, never
prediction_results.txt of one run beside read_summary.tsv / run.json of another; readers (compare,
classify, the gate) refuse a set whose commit record is missing with one line; the next run into the
directory finishes (or drops) what a killed writer left.

The steps are ``outset.STEPS``. Faults come from a ``FaultPlan``: ``die_in_write`` (os._exit, as a
kill -9, in a subprocess) and ``full_in_write`` (an OSError ENOSPC, in this process).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from run_helpers import LAUNCHER, env_with
from virnucpro.errors import InputError
from virnucpro.io import outset
from virnucpro.io.outset import STEPS, OutputSet, require_complete, status
from virnucpro.io.paths import (CONSENSUS, PREDICTIONS, READ_SUMMARY, RUN_JSON, SKIPPED_READS, STAGING_DIRNAME,
                                SYNTHETIC_NOTE)
from virnucpro.run.faults import FAULT_EXIT, FaultPlan

SET = (PREDICTIONS, CONSENSUS, READ_SUMMARY, SYNTHETIC_NOTE)
BEFORE_UNSET = ("stage", "staged")                 # the old set still whole, the new one not yet
MID_SWAP = ("clear", "move", "moving", "commit")   # no commit record in OUTDIR: readers refuse


class Killed(BaseException):
    """What a kill does to the writer, in this process: it stops there, nothing cleans up."""


def killer(at: str):
    def hook(step: str) -> None:
        if step == at:
            raise Killed(step)
    return hook


def write_set(outdir: Path, tag: str, extra: tuple[str, ...] = (), on_step=None) -> None:
    """A toy output set whose every file says which run wrote it."""
    oset = OutputSet(outdir, on_step)
    stage = oset.begin()
    for name in (*SET, *extra):
        (stage / name).write_text(f"{tag}\n")
    oset.commit({"run": tag})


def which_set(outdir: Path, names=SET) -> str:
    """'old' or 'new' when every file of the set (and run.json) comes from that run; fails on a mix."""
    tags = {(outdir / n).read_text().strip() for n in names}
    tags.add(json.loads((outdir / RUN_JSON).read_text())["run"])
    assert len(tags) == 1, f"a mixed output set: {tags}"
    return tags.pop()


# ------------------------------------------------------------------- the protocol, step by step

@pytest.mark.parametrize("step", STEPS)
def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_set(tmp_path, step):
    out = tmp_path / "out"
    out.mkdir()
    write_set(out, "old", extra=(SKIPPED_READS,))   # the new set has no skipped_reads.tsv
    with pytest.raises(Killed):
        write_set(out, "new", on_step=killer(step))
    if step in MID_SWAP:
        assert status(out) == "incomplete"
        with pytest.raises(InputError, match="incomplete output set"):
            require_complete(out)
    else:
        assert status(out) == "complete"
        assert which_set(out) == ("new" if step == "cleanup" else "old")
    OutputSet(out).recover()       # what the next run does first, under the lock
    assert not (out / STAGING_DIRNAME).exists()
    assert status(out) == "complete"
    got = which_set(out)
    assert got == ("old" if step in BEFORE_UNSET else "new")
    assert (out / SKIPPED_READS).exists() == (got == "old"), "a file of the old set left beside the new one"


def test_the_commit_record_lists_the_files_and_comes_last(tmp_path):
    write_set(tmp_path, "one")
    record = json.loads((tmp_path / RUN_JSON).read_text())
    assert record["output_set"]["files"] == {n: 4 for n in SET}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*SET, RUN_JSON])


def test_a_set_whose_staging_was_never_complete_is_dropped_and_the_old_one_kept(tmp_path):
    write_set(tmp_path, "old")
    stage = OutputSet(tmp_path).begin()
    (stage / PREDICTIONS).write_text("half of a new run\n")
    assert OutputSet(tmp_path).recover() == "removed"
    assert which_set(tmp_path) == "old"


@pytest.mark.parametrize("kind, files, expected", [
    ("foreign", [PREDICTIONS, CONSENSUS], "foreign"),                       # the original VirNucPro's outputs
    ("legacy", [PREDICTIONS, CONSENSUS, RUN_JSON, "virnucpro.log"], "legacy"),   # an earlier virnucpro's
    ("killed", [PREDICTIONS, "virnucpro.log"], "incomplete"),
    ("killed-mid-swap", [PREDICTIONS, f"{STAGING_DIRNAME}/{RUN_JSON}"], "incomplete"),
])
def test_what_readers_accept(tmp_path, kind, files, expected):
    for f in files:
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_text("{}\n" if f.endswith(".json") else "x\n")
    assert status(tmp_path) == expected


# ----------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def inputs(synthetic_reads, tmp_path_factory):
    """Two inputs: the old set's and the new one's (different reads, so every file differs)."""
    return synthetic_reads(40, 11), synthetic_reads(40, 12)


def predict_args(reads: Path, out: Path, models: Path, *extra: str) -> list[str]:
    """A reference-engine run; --force: it replaces the set already in ``out``."""
    return ["predict", str(reads), "-o", str(out), "--models", str(models), "--device", "cpu", "--no-progress",
            "--engine", "reference", "--force", *extra]


@pytest.fixture(scope="module")
def sets(inputs, tiny_models, tmp_path_factory, run_cli) -> dict[str, Path]:
    """The old set (with --save-embeddings) and the new one, each made by a clean run."""
    made = {}
    for tag, reads, extra in (("old", inputs[0], ("--save-embeddings",)), ("new", inputs[1], ())):
        out = tmp_path_factory.mktemp(f"outset_{tag}") / "out"
        res = run_cli(*predict_args(reads, out, tiny_models, *extra))
        assert res.code == 0, str(res)
        made[tag] = out
    return made


def same_as(out: Path, sets: dict[str, Path]) -> str:
    """Which clean run's set ``out`` holds: every file byte-identical to that run's ('old'/'new')."""
    names = {p.name for p in sets["old"].iterdir() if p.is_file()} - {"virnucpro.log", RUN_JSON}
    found = set()
    for tag, ref in sets.items():
        if all((out / n).is_file() and (out / n).read_bytes() == (ref / n).read_bytes() for n in names
               if (ref / n).exists()):
            found.add(tag)
    assert len(found) == 1, f"{out} holds neither clean run's set whole: {sorted(p.name for p in out.iterdir())}"
    tag = found.pop()
    assert json.loads((out / RUN_JSON).read_text())["input"]["path"] == json.loads(
        (sets[tag] / RUN_JSON).read_text())["input"]["path"], "run.json of another run than the files"
    has_embeddings = (out / "embeddings" / "index.tsv").exists()
    assert has_embeddings == (tag == "old"), "embeddings of the other run"
    return tag


def fault_cmd(faults: dict, *args: str) -> list[str]:
    return [sys.executable, str(LAUNCHER), json.dumps(faults), *args]


KILL_STEPS = [s if s in ("staged", "moving", "cleanup") else pytest.param(s, marks=pytest.mark.slow) for s in STEPS]


@pytest.mark.parametrize("step", KILL_STEPS)
def test_a_run_killed_in_its_write_stage_never_leaves_a_mix(sets, inputs, tiny_models, tmp_path, run_cli, step):
    out = tmp_path / "out"
    shutil.copytree(sets["old"], out)
    proc = subprocess.run(fault_cmd({"die_in_write": step}, *predict_args(inputs[1], out, tiny_models)),
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == FAULT_EXIT, proc.stderr
    if step in MID_SWAP:
        res = run_cli("compare", out, sets["new"])
        assert res.code == 2 and len(res.err_lines()) == 1 and "incomplete output set" in res.err, str(res)
    else:
        assert same_as(out, sets) == ("new" if step == "cleanup" else "old")
    # the next run into the directory (here a failing one: a missing input) first finishes or drops
    # what the killed one left, under the lock
    res = run_cli(*predict_args(tmp_path / "no-such.fa", out, tiny_models))
    assert res.code == 2, str(res)
    assert not (out / STAGING_DIRNAME).exists()
    assert same_as(out, sets) == ("old" if step in BEFORE_UNSET else "new")


@pytest.mark.parametrize("step", STEPS)
def test_a_full_disk_in_the_write_stage_never_leaves_a_mix(sets, inputs, tiny_models, tmp_path, run_cli, step):
    out = tmp_path / "out"
    shutil.copytree(sets["old"], out)
    res = run_cli(*predict_args(inputs[1], out, tiny_models), faults=FaultPlan(full_in_write=step))
    assert res.code == 3, str(res)
    errors = [ln for ln in res.err_lines() if not ln.startswith("virnucpro: WARNING")]
    assert len(errors) == 1 and errors[0].startswith("virnucpro: error: no space left on the device"), str(res)
    assert "--resume" not in errors[0], "the reference engine keeps no checkpoint to resume from"
    if step in MID_SWAP:
        assert status(out) == "incomplete"
    else:
        assert same_as(out, sets) == ("new" if step == "cleanup" else "old")
        if step in BEFORE_UNSET:
            assert not (out / STAGING_DIRNAME).exists(), "a set that was never whole is removed at once"
    OutputSet(out).recover()
    assert same_as(out, sets) == ("old" if step in BEFORE_UNSET else "new")


def test_readers_refuse_an_uncommitted_set_with_one_line(sets, tiny_models, tmp_path, run_cli):
    from virnucpro.perf import gate
    out = tmp_path / "out"
    shutil.copytree(sets["old"], out)
    (out / RUN_JSON).unlink()      # as after the 'clear' step
    res = run_cli("compare", out, sets["old"])
    assert res.code == 2 and len(res.err_lines()) == 1 and "incomplete output set" in res.err, str(res)
    res = run_cli("compare", out / PREDICTIONS, sets["old"] / PREDICTIONS)
    assert res.code == 2 and "incomplete output set" in res.err, str(res)
    res = run_cli("classify", out, "-o", tmp_path / "re", "--models", tiny_models)
    assert res.code == 2 and len(res.err_lines()) == 1 and "incomplete output set" in res.err, str(res)
    assert not (tmp_path / "re").exists()
    with pytest.raises(gate.GateError, match="cpu: the run wrote no manifest .*: its output set was never committed"):
        gate.load_run(out, "cpu", 0)
    assert run_cli("compare", sets["old"], sets["old"]).code == 0


def test_classify_commits_its_set_too(sets, tiny_models, tmp_path, run_cli):
    out = tmp_path / "re"
    res = run_cli("classify", sets["old"], "-o", out, "--models", tiny_models)
    assert res.code == 0, str(res)
    assert status(out) == "complete"
    assert sorted(json.loads((out / RUN_JSON).read_text())["output_set"]["files"]) == [PREDICTIONS, CONSENSUS]
    assert (out / PREDICTIONS).read_bytes() == (sets["old"] / PREDICTIONS).read_bytes()


def test_a_fast_run_killed_mid_swap_is_finished_by_resume(inputs, tiny_models, tmp_path, run_cli):
    """--resume after a kill while the outputs were being moved: the complete staged set goes into
    place, nothing is computed again, the outputs are those of an uninterrupted run."""
    fast = ("--engine", "fast", "--token-budget", "1024", "--save-embeddings")
    clean = tmp_path / "clean"
    res = run_cli("predict", inputs[0], "-o", clean, "--models", tiny_models, "--device", "cpu", "--no-progress", *fast)
    assert res.code == 0, str(res)
    out = tmp_path / "out"
    args = ["predict", str(inputs[0]), "-o", str(out), "--models", str(tiny_models), "--device", "cpu",
            "--no-progress", *fast]
    proc = subprocess.run(fault_cmd({"die_in_write": "moving"}, *args), env=env_with(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == FAULT_EXIT, proc.stderr
    assert status(out) == "incomplete"
    res = run_cli(*args, "--resume")
    assert res.code == 0, str(res)
    assert "moved into place" in res.err, str(res)
    for name in (PREDICTIONS, CONSENSUS, READ_SUMMARY, "embeddings/index.tsv", "embeddings/part-00000.npz"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert outset.committed_record(out) is not None
