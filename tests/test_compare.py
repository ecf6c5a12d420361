"""virnucpro.perf.compare on small hand-written output directories."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from virnucpro.io.paths import CONSENSUS, PREDICTIONS
from virnucpro.perf.compare import compare_dirs, read_frames, register
from virnucpro.errors import InputError

# (frame id, score2); score1 = 1 - score2, label = virus when score2 > score1
FRAMES = [
    ("r1_chunk_1F1", 0.90), ("r1_chunk_1R2", 0.20),
    ("r2_chunk_1F2", 0.10), ("r2_chunk_1R1", 0.30),
    ("r3_chunk_1F1", 0.70),
    ("r3_chunk_2F3", 0.45), ("r3_chunk_2R3", 0.40),
]


def write_run(d: Path, frames: list[tuple[str, float]], consensus: dict[str, bool] | None = None,
              labels: dict[str, str] | None = None) -> Path:
    """Write an output dir the way VirNucPro does; consensus derived from frames unless given."""
    d.mkdir(parents=True, exist_ok=True)
    rows = ["Sequence_ID\tPrediction\tscore1\tscore2"]
    best: dict[str, float] = {}
    for fid, s2 in frames:
        label = (labels or {}).get(fid, "virus" if s2 > 1 - s2 else "others")
        rows.append(f"{fid}\t{label}\t{1 - s2:.7g}\t{s2:.7g}")
        best[fid[:-2]] = max(best.get(fid[:-2], 0.0), s2)
    (d / PREDICTIONS).write_text("\n".join(rows) + "\n")
    if consensus is None:
        consensus = {cid: s >= 1 - s for cid, s in best.items()}
    lines = ["Modified_ID\tIs_Virus"] + [f"{c}\t{v}" for c, v in sorted(consensus.items())]
    (d / CONSENSUS).write_text("\n".join(lines) + "\n")
    return d


def test_identical_dirs_agree_fully(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    b = write_run(tmp_path / "b", FRAMES)
    res = compare_dirs(a, b)
    fr, co = res.modes["frame"], res.modes["consensus"]
    assert (fr.n_both, fr.agree, fr.only_v1, fr.only_v2) == (7, 7, 0, 0), fr
    assert (co.n_both, co.agree) == (4, 4), f"4 chunks expected on both, saw {co.n_both}/{co.agree}"
    assert fr.agreement == 1.0 and co.agreement == 1.0
    assert fr.scores.max_abs == 0.0 and fr.scores.share_within_001 == 1.0
    assert fr.worst == [] and co.worst == [], "identical runs have no disagreement to list"
    assert res.passes(1.0), res.failures(1.0)


def test_flipped_label_and_missing_id_are_counted(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    # v2: r2_chunk_1R1 flips to virus (0.30 -> 0.60), r3_chunk_1F1 is gone, a new frame appears
    changed = [(f, 0.60 if f == "r2_chunk_1R1" else s) for f, s in FRAMES if f != "r3_chunk_1F1"]
    b = write_run(tmp_path / "b", changed + [("r9_chunk_1F1", 0.99)])
    fr = compare_dirs(a, b, mode="frame").modes["frame"]
    assert (fr.n_v1, fr.n_v2, fr.n_both) == (7, 7, 6), fr
    assert (fr.only_v1, fr.only_v2) == (1, 1), f"one id missing on each side, saw {fr.only_v1}/{fr.only_v2}"
    assert fr.missing_examples == {"only_v1": ["r3_chunk_1F1"], "only_v2": ["r9_chunk_1F1"]}
    assert fr.agree == 5 and fr.agreement == pytest.approx(5 / 6)
    assert fr.agreement_counting_missing == pytest.approx(5 / 8), "union of ids is 8"
    assert fr.worst[0].id == "r2_chunk_1R1", f"the flipped frame must rank first: {fr.worst}"
    assert (fr.worst[0].v1_label, fr.worst[0].v2_label) == ("others", "virus")
    assert fr.worst[0].abs_diff == pytest.approx(0.30)


def test_confusion_table(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    # virus->others for r1_chunk_1F1 and r3_chunk_1F1, others->virus for r2_chunk_1F2
    flips = {"r1_chunk_1F1": 0.40, "r3_chunk_1F1": 0.35, "r2_chunk_1F2": 0.80}
    b = write_run(tmp_path / "b", [(f, flips.get(f, s)) for f, s in FRAMES])
    conf = compare_dirs(a, b, mode="frame").modes["frame"].confusion
    # v1 labels: virus = r1F1, r3_1F1 (2); others = the other 5
    assert conf == {"virus": {"virus": 0, "others": 2}, "others": {"virus": 1, "others": 4}}, conf


def test_consensus_mode_labels_and_derived_scores(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    # r3_chunk_2 best score2 0.45 -> 0.55 flips its consensus to True
    b = write_run(tmp_path / "b", [(f, 0.55 if f == "r3_chunk_2F3" else s) for f, s in FRAMES])
    co = compare_dirs(a, b, mode="consensus").modes["consensus"]
    assert (co.n_both, co.agree) == (4, 3), f"4 chunks, 1 flipped; saw {co.n_both}/{co.agree}"
    assert co.confusion["others"]["virus"] == 1
    assert co.worst[0].id == "r3_chunk_2" and co.worst[0].abs_diff == pytest.approx(0.10)
    assert co.scores.n == 4 and co.scores.max_abs == pytest.approx(0.10)


def test_score_statistics(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    deltas = [0.0, 0.005, -0.01, 0.02, 0.0, -0.05, 0.001]  # per FRAMES row, labels unchanged
    b = write_run(tmp_path / "b", [(f, s + d) for (f, s), d in zip(FRAMES, deltas)])
    st = compare_dirs(a, b, mode="frame").modes["frame"].scores
    absd = sorted(abs(d) for d in deltas)
    assert st.n == 7
    assert st.mean_abs == pytest.approx(sum(absd) / 7, abs=1e-6)
    assert st.max_abs == pytest.approx(0.05, abs=1e-6)
    assert st.mean_signed == pytest.approx(sum(deltas) / 7, abs=1e-6)
    assert st.share_within_001 == pytest.approx(5 / 7), "0, .005, .01, 0, .001 are within 0.01"
    assert st.percentiles_abs["p50"] == pytest.approx(absd[3], abs=1e-6)


def test_passes_threshold(tmp_path: Path) -> None:
    frames = [(f"r{i}_chunk_1F1", 0.9) for i in range(100)]
    a = write_run(tmp_path / "a", frames)
    b = write_run(tmp_path / "b", [(f, 0.1 if i == 0 else s) for i, (f, s) in enumerate(frames)])
    res = compare_dirs(a, b)
    assert res.modes["frame"].agreement == pytest.approx(0.99)
    assert res.passes(0.99), f"99/100 agree, threshold 0.99 must pass: {res.failures(0.99)}"
    assert not res.passes(0.995), "99/100 agree, threshold 0.995 must fail"
    assert any("label agreement 99.000% < target 99.500%" in f for f in res.failures(0.995))


def test_missing_ids_fail_even_at_full_agreement(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    b = write_run(tmp_path / "b", FRAMES[:-1])
    res = compare_dirs(a, b, mode="frame")
    assert res.modes["frame"].agreement == 1.0
    assert not res.passes(0.5), "a missing id must fail the comparison"
    assert res.failures(0.5) == ["frame: ids missing: 1 only in v1, 0 only in v2"]


def test_repeated_ids_matched_by_occurrence(tmp_path: Path) -> None:
    frames = [("p_chunk_1F1", 0.9), ("p_chunk_1F1", 0.1)]  # paired reads sharing an id
    a = write_run(tmp_path / "a", frames)
    b = write_run(tmp_path / "b", [("p_chunk_1F1", 0.9), ("p_chunk_1F1", 0.2)])
    fr = compare_dirs(a, b, mode="frame").modes["frame"]
    assert (fr.n_both, fr.agree, fr.repeated_ids["v1"]) == (2, 2, 2), fr
    assert fr.scores.max_abs == pytest.approx(0.1)


@pytest.mark.parametrize("content, where", [
    ("Sequence_ID\tPrediction\tscore1\n", "line 1: expected header"),
    ("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.1\t0.9\ty\n", "line 2: expected 4 tab-separated fields, saw 5"),
    ("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.1\t0.9\nx_chunk_1R1\tmaybe\t0.1\t0.9\n", "line 3: Prediction must be"),
    ("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\t0.1\n", "line 2: expected 4 tab-separated fields, saw 3"),
    ("Sequence_ID\tPrediction\tscore1\tscore2\nx_chunk_1F1\tvirus\tabc\t0.9\n", "line 2: score1 is not a number"),
    ("Sequence_ID\tPrediction\tscore1\tscore2\n\nx_chunk_1F1\tvirus\t0.1\t1.5\n", "line 3: score2 outside [0, 1]"),
    ("", "line 1: empty file"),
])
def test_malformed_frame_file_raises_input_error(tmp_path: Path, content: str, where: str) -> None:
    p = tmp_path / PREDICTIONS
    p.write_text(content)
    with pytest.raises(InputError) as ei:
        read_frames(p)
    msg = str(ei.value)
    assert str(p) in msg and where in msg, f"expected file name and {where!r} in: {msg}"
    assert "\n" not in msg, "the message must be one line"


def test_malformed_consensus_and_missing_file(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    b = write_run(tmp_path / "b", FRAMES)
    (b / CONSENSUS).write_text("Modified_ID\tIs_Virus\nr1_chunk_1\tyes\n")
    with pytest.raises(InputError, match=r"prediction_results_highestscore.csv: line 2: Is_Virus"):
        compare_dirs(a, b)
    (b / CONSENSUS).unlink()
    with pytest.raises(InputError, match="has no prediction_results_highestscore.csv"):
        compare_dirs(a, b)
    assert compare_dirs(a, b, mode="frame").passes(), "frame-only comparison still works"
    with pytest.raises(InputError, match="no such file or directory"):
        compare_dirs(a, tmp_path / "nope")


def test_single_files_compare_their_own_kind(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    b = write_run(tmp_path / "b", FRAMES)
    res = compare_dirs(a / CONSENSUS, b / CONSENSUS)
    assert list(res.modes) == ["consensus"] and res.modes["consensus"].scores is None
    with pytest.raises(InputError, match="different kinds"):
        compare_dirs(a / PREDICTIONS, b / CONSENSUS)


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="virnucpro")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", FRAMES)
    b = write_run(tmp_path / "b", FRAMES)
    c = write_run(tmp_path / "c", FRAMES[1:])
    out = tmp_path / "cmp.json"
    args = _cli(["compare", str(a), str(b), "--json", str(out)])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["modes"]["frame"]["agreement"] == 1.0
    assert "PASS" in capsys.readouterr().out
    args = _cli(["compare", str(a), str(c), "--mode", "frame"])
    assert args.func(args) == 1, "a missing id must give exit 1"
    assert "FAIL: frame: ids missing: 1 only in v1" in capsys.readouterr().out
    (c / PREDICTIONS).write_text("garbage\n")
    args = _cli(["compare", str(a), str(c)])
    with pytest.raises(InputError) as ei:
        args.func(args)
    assert ei.value.exit_code == 2
