"""A rerun into an output directory that holds an earlier run: refused with one line that offers
--force (or --resume), nothing of the earlier run replaced or deleted; --force replaces it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from virnucpro.io.paths import EMBEDDINGS, Paths

OPEN_SEQ = "GCC" * 50   # every frame kept
RESULTS = ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv", "viral_reads.fa",
           "run.json")


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``out``: its bytes and modification time (ns)."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file()}


def one_error_line(res) -> str:
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("virnucpro: WARNING")]
    assert res.code == 2 and len(lines) == 1 and lines[0].startswith("virnucpro: error:"), str(res)
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_models, tmp_path_factory, run_cli) -> dict:
    """A finished fast run with saved embeddings (checkpoints, results, embeddings/)."""
    base = tmp_path_factory.mktemp("rerun")
    inp = base / "in.fa"
    inp.write_text("".join(f">r{i}\n{OPEN_SEQ}\n" for i in range(6)))
    out = base / "done"
    args = ["predict", inp, "-o", out, "--models", tiny_models, "--device", "cpu", "--no-progress",
            "--token-budget", "1024", "--save-embeddings"]
    res = run_cli(*args)
    assert res.code == 0, str(res)
    assert (out / EMBEDDINGS / "index.tsv").is_file()
    return {"out": out, "args": args}


def copy_of(finished, tmp_path) -> tuple[Path, list]:
    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    args = list(finished["args"])
    args[args.index(finished["out"])] = out
    return out, args


def test_a_rerun_into_a_finished_run_is_refused_and_changes_nothing(finished, tmp_path, run_cli):
    out, args = copy_of(finished, tmp_path)
    before = snapshot(out)
    line = one_error_line(run_cli(*args))
    assert str(out) in line and "--force" in line and "--resume" in line, line
    for name in ("prediction_results.txt", "run.json", "embeddings/"):
        assert name in line, f"the line should name {name}: {line}"
    assert snapshot(out) == before, "a refused rerun changed the earlier run's files"
    line = one_error_line(run_cli(*[a for a in args if a != "--save-embeddings"], "--engine", "reference"))
    assert "--force" in line and snapshot(out) == before, "the reference engine's rerun too"


def test_an_unfinished_runs_checkpoints_are_kept_for_resume(finished, tmp_path, run_cli):
    out, args = copy_of(finished, tmp_path)
    for name in (*RESULTS, f"{EMBEDDINGS}/index.tsv"):   # as a killed run leaves it: units and parts
        (out / name).unlink()
    before = snapshot(out)
    line = one_error_line(run_cli(*args))
    assert "checkpoints of an unfinished run" in line and "--resume" in line and "--force" in line, line
    assert snapshot(out) == before
    res = run_cli(*args, "--resume")
    assert res.code == 0, str(res)
    for name in (RESULTS[0], f"{EMBEDDINGS}/index.tsv"):
        assert (out / name).read_bytes() == (finished["out"] / name).read_bytes(), name


def test_force_replaces_the_earlier_run(finished, tmp_path, run_cli):
    out, args = copy_of(finished, tmp_path)
    res = run_cli(*[a for a in args if a != "--save-embeddings"], "--force")
    assert res.code == 0, str(res)
    assert not Paths(out).embeddings.exists(), "--force without --save-embeddings: the earlier features go"
    for name in RESULTS:
        assert (out / name).is_file()
    assert (out / RESULTS[0]).read_bytes() == (finished["out"] / RESULTS[0]).read_bytes()


def test_an_empty_or_unrelated_directory_is_not_an_earlier_run(tmp_path, tiny_models, run_cli):
    inp = tmp_path / "in.fa"
    inp.write_text(f">r1\n{OPEN_SEQ}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "virnucpro.log").write_text("a failed run's log\n")
    res = run_cli("predict", inp, "-o", out, "--models", tiny_models, "--device", "cpu", "--no-progress")
    assert res.code == 0, str(res)
    assert (out / "notes.txt").read_text() == "mine"
