"""tools/same_outputs.py: the before/after byte-by-byte check of two source trees' predict outputs.

Two end-to-end runs (50 reads, reference engine, tiny models: ~10 s each) prove the tool says
"identical" for one tree against itself and "different" for a copy whose output format was changed;
the rest exercise the directory comparison (--compare-dirs) on hand-made output directories.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("same_outputs", REPO_ROOT / "tools" / "same_outputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while it executes
    spec.loader.exec_module(module)
    return module


same_outputs = _load_tool()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One work directory for the end-to-end runs: the 50 simulated reads are made once."""
    return tmp_path_factory.mktemp("same_outputs_work")


def run_tool(capsys, *args) -> tuple[int, str, str]:
    code = same_outputs.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_same_tree_is_identical(capsys, tiny_models, work):
    code, out, err = run_tool(capsys, "--before", REPO_ROOT, "--after", REPO_ROOT, "--reads", 50,
                              "--engines", "reference", "--models", tiny_models, "--work", work)
    assert code == 0, out + err
    assert "ALL IDENTICAL" in out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith("   ")}
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "read_summary.tsv",
                 "SYNTHETIC_MODELS.txt", "run.json"):
        assert rows.get(name) == "yes", out
    assert "virnucpro.log" not in rows


def test_changed_tree_differs(capsys, tiny_models, work, tmp_path):
    # A copy of the package whose prediction_results.txt header reads score_2 instead of score2.
    changed = tmp_path / "changed"
    shutil.copytree(REPO_ROOT / "virnucpro", changed / "virnucpro",
                    ignore=shutil.ignore_patterns("__pycache__"))
    edits = 0
    for py in (changed / "virnucpro").rglob("*.py"):
        text = py.read_text()
        if "score1\\tscore2" in text:
            py.write_text(text.replace("score1\\tscore2", "score1\\tscore_2"))
            edits += 1
    assert edits, "no prediction_results.txt header found to change in the package copy"

    code, out, err = run_tool(capsys, "--before", REPO_ROOT, "--after", changed, "--reads", 50,
                              "--engines", "reference", "--models", tiny_models, "--work", work)
    assert code == 1, out + err
    assert "DIFFERENT" in out
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == ["prediction_results.txt"])
    assert line.split()[-1] == "NO"
    assert "prediction_results.txt: line 1: before 'Sequence_ID\\tPrediction\\tscore1\\tscore2' | " \
           "after 'Sequence_ID\\tPrediction\\tscore1\\tscore_2'" in out


def test_tree_without_package_is_refused(capsys, tmp_path):
    code, out, err = run_tool(capsys, "--before", tmp_path, "--after", REPO_ROOT, "--reads", 5,
                              "--work", tmp_path / "w")
    assert code == 2
    assert "no virnucpro/__main__.py" in err


def test_unknown_engine_is_refused(capsys, tmp_path):
    code, out, err = run_tool(capsys, "--before", REPO_ROOT, "--after", REPO_ROOT, "--engines", "fast-fp8",
                              "--work", tmp_path)
    assert code == 2
    assert "unknown engine setting 'fast-fp8'" in err


# ---- --compare-dirs on hand-made output directories --------------------------------------------

def _outdir(path: Path, predictions: str, manifest: dict | None = None, extra: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "prediction_results.txt").write_text(predictions)
    (path / "virnucpro.log").write_text(f"log of {path}\n")                 # never compared
    (path / ".virnucpro-run").mkdir()
    (path / ".virnucpro-run" / "manifest.json").write_text(str(path))      # never compared
    for name, text in (extra or {}).items():
        (path / name).write_text(text)
    if manifest is not None:
        (path / "run.json").write_text(json.dumps(manifest))
    return path


def _manifest(outdir: Path, wall_s: float, **more) -> dict:
    return {"command": [f"/src{wall_s}/virnucpro/__main__.py", "predict"], "date": f"2026-01-0{int(wall_s)}",
            "options": {"outdir": str(outdir), "engine": "reference"},
            "summary": {"wall_s": wall_s, "reads": 3, "outdir": str(outdir),
                        "stages": {"load_models": wall_s}}, **more}


PRED = "Sequence_ID\tPrediction\tscore1\tscore2\nr1_chunk_1F1\tvirus\t0.2\t0.8\nr2_chunk_1F1\tothers\t0.6\t0.4\n"


def test_compare_dirs_identical_ignores_times_and_paths(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outdir(a, PRED, _manifest(a, 1.0))
    _outdir(b, PRED, _manifest(b, 2.0))
    code, out, _ = run_tool(capsys, "--compare-dirs", a, b)
    assert code == 0, out
    assert "ALL IDENTICAL" in out
    assert "virnucpro.log" not in out and "manifest.json" not in out


def test_compare_dirs_reports_first_differing_line(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outdir(a, PRED)
    _outdir(b, PRED.replace("0.6\t0.4", "0.60\t0.40"))
    code, out, _ = run_tool(capsys, "--compare-dirs", a, b)
    assert code == 1
    assert "prediction_results.txt: line 3: before 'r2_chunk_1F1\\tothers\\t0.6\\t0.4' | " \
           "after 'r2_chunk_1F1\\tothers\\t0.60\\t0.40'" in out


def test_compare_dirs_file_written_by_one_tree_only(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outdir(a, PRED)
    _outdir(b, PRED, extra={"skipped_reads.tsv": "read_id\n"})
    code, out, _ = run_tool(capsys, "--compare-dirs", a, b)
    assert code == 1
    assert "skipped_reads.tsv: written by the after tree only" in out


def test_compare_dirs_manifest_difference_is_information_unless_strict(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outdir(a, PRED, _manifest(a, 1.0))
    _outdir(b, PRED, _manifest(b, 2.0, engine_config={"precision": "fp32"}))
    code, out, _ = run_tool(capsys, "--compare-dirs", a, b)
    assert code == 0, out
    assert "no (info)" in out and "added: engine_config.precision" in out
    code, out, _ = run_tool(capsys, "--compare-dirs", a, b, "--strict-manifest")
    assert code == 1


def test_first_difference_binary_and_extra_lines():
    assert same_outputs.first_difference(b"ab\0c", b"ab\0d") == "first difference at byte 3 (sizes 4 / 4)"
    assert same_outputs.first_difference(b"x\n", b"x\ny\n") == "line 2: only after has it: 'y'"
