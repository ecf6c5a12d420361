"""The output files, written from OutputRows, against their plain definitions (the original's
``id[:-2]`` grouping, max score2 >= max score1, float32 ``str()`` scores) on random frames with ties,
repeated keys and frames without a score (units given up on) -- whether the rows were made ahead,
unit by unit while the GPUs work, or all at the end."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from virnucpro.io.outputs import OutputRows
from virnucpro.io.paths import CONSENSUS, PREDICTIONS, READ_SUMMARY, SKIPPED_READS, VIRAL_READS


def plain_files(records, chunks, frames, scores, synthetic=False) -> dict[str, str]:
    """The five files by their definitions, one frame at a time."""
    kept = [(f, s) for f, s in zip(frames, scores.tolist()) if not np.isnan(s[0])]
    pred = "Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(
        f"{f[0]}\t{'virus' if np.float32(b) > np.float32(a) else 'others'}\t{str(np.float32(a))}\t{str(np.float32(b))}\n"
        for f, (a, b) in kept)
    best: dict[str, list[float]] = {}
    for f, (a, b) in kept:
        cur = best.setdefault(f[0][:-2], [a, b])
        cur[0], cur[1] = max(cur[0], a), max(cur[1], b)
    cons = {k: v[1] >= v[0] for k, v in best.items()}
    cons_txt = "Modified_ID\tIs_Virus\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(cons.items()))
    skipped = sorted({chunks[f[1]].read_index for f, s in zip(frames, scores.tolist()) if np.isnan(s[0])})
    rows, viral = [], []
    for i, r in enumerate(records):
        mine = [(f, a, b) for f, (a, b) in kept if chunks[f[1]].read_index == i]
        label = "skipped" if i in skipped else "no_kept_frame" if not mine else \
            ("virus" if any(cons[f[0][:-2]] for f, _, _ in mine) else "others")
        top = str(np.float32(max(b for _, _, b in mine))) if mine else ""
        top_others = str(np.float32(max(a for _, a, _ in mine))) if mine else ""
        rows.append(f"{r.id}\t{len(r.seq)}\t{sum(c.read_index == i for c in chunks)}\t{len(mine)}\t{top}\t"
                    f"{top_others}\t{label}\n")
        if label == "virus":
            viral.append(f">{r.id} max_virus_score={top}\n{r.seq}\n")
    summary = ("# x\n" if synthetic else "") + \
        "read_id\tlength\tn_chunks\tkept_frames\tmax_virus_score\tmax_others_score\tlabel\n" + "".join(rows)
    out = {PREDICTIONS: pred, CONSENSUS: cons_txt, READ_SUMMARY: summary, VIRAL_READS: "".join(viral)}
    if skipped:
        out[SKIPPED_READS] = "read_id\treason\n" + "".join(
            f"{records[i].id}\twork unit failed repeatedly (--skip-failing-units)\n" for i in skipped)
    return out


def random_run(seed: int):
    rng = np.random.default_rng(seed)
    records = [SimpleNamespace(id=f"r{i}", seq="".join(rng.choice(list("ACGTacgtN"), int(rng.integers(50, 400)))))
               for i in range(40)]
    chunks = [SimpleNamespace(id=f"r{i}_chunk_{j}", read_index=i) for i in range(40) for j in range(int(rng.integers(0, 3)))]
    frames = [(f"{c.id}{s}{k}", ci, None, None) for ci, c in enumerate(chunks)
              for s in "FR" for k in (1, 2, 3) if rng.random() < 0.4]
    scores = rng.choice([0.25, 0.5, 0.75, 0.8789939], size=(len(frames), 2)).astype(np.float32)   # ties on purpose
    if len(frames) > 3:   # a key seen again later, not next to its first frames (original groups by id[:-2])
        frames.append((frames[0][0][:-2] + "R9", frames[0][1], None, None))
        scores = np.vstack([scores, [[0.1, 0.9]]]).astype(np.float32)
    return records, chunks, frames, scores


def written(tmp_path, rows: OutputRows, records, chunks, frames, scores) -> tuple[dict, dict[str, str]]:
    counts = rows.write(tmp_path, records, chunks, frames, scores, synthetic=False)
    return counts, {p.name: p.read_text() for p in tmp_path.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize("ahead", ["nothing", "half the units", "everything"])
@pytest.mark.parametrize("seed", range(4))
def test_output_files_match_their_definitions(tmp_path, seed: int, ahead: str) -> None:
    records, chunks, frames, scores = random_run(seed)
    if seed % 2:   # a unit given up on: its frames have no score, their reads are reported
        scores[5:9] = np.nan
    rows = OutputRows()
    if ahead != "nothing":
        idx = np.flatnonzero(~np.isnan(scores[:, 0]))
        units = np.array_split(np.random.default_rng(seed).permutation(idx), 5)   # in any order
        for u in units[: 2 if ahead == "half the units" else 5]:
            rows.add(frames, u, scores[u])
        rows.prepare(records, chunks, frames)
    counts, got = written(tmp_path, rows, records, chunks, frames, scores)
    want = plain_files(records, chunks, frames, scores)
    assert sorted(got) == sorted(want), f"files written {sorted(got)}, expected {sorted(want)}"
    for name in want:
        g, w = got[name].splitlines(), want[name].splitlines()
        bad = next((k for k, (a, b) in enumerate(zip(g, w)) if a != b), None)
        assert g == w, f"seed {seed}, rows made ahead: {ahead}: {name} line {bad}: got {g[bad] if bad is not None else len(g)!r}, " \
                       f"expected {w[bad] if bad is not None else len(w)!r}"
    assert counts["chunks_with_frames"] == len(want[CONSENSUS].splitlines()) - 1
    assert counts["viral_chunks"] == want[CONSENSUS].count("\tTrue\n")
    assert counts["viral_reads"] == want[READ_SUMMARY].count("\tvirus\n") == want[VIRAL_READS].count(">")
    assert counts["no_kept_frame_reads"] == want[READ_SUMMARY].count("\tno_kept_frame\n")


def test_no_frames_gives_headers_only(tmp_path) -> None:
    records = [SimpleNamespace(id="r0", seq="ACGT")]
    counts, got = written(tmp_path, OutputRows(), records, [], [], np.zeros((0, 2), dtype=np.float32))
    assert got[PREDICTIONS] == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    assert got[CONSENSUS] == "Modified_ID\tIs_Virus\n"
    assert got[READ_SUMMARY].splitlines()[1] == "r0\t4\t0\t0\t\t\tno_kept_frame"
    assert got[VIRAL_READS] == "", "no viral read: an empty viral_reads.fa (a workflow's declared output exists)"
    assert counts["chunks_with_frames"] == 0 and counts["viral_reads"] == 0 and counts["no_kept_frame_reads"] == 1


def test_the_read_label_is_by_chunk_not_by_the_reads_best_scores(tmp_path) -> None:
    """README's rule: a read is virus when one of its chunks is viral, even where its best others
    score (another chunk's) is above its best virus score; viral_reads.fa holds it, as read."""
    records = [SimpleNamespace(id="r0", seq="acgtNACGT" * 70), SimpleNamespace(id="r1", seq="ACG" * 100)]
    chunks = [SimpleNamespace(id="r0_chunk_1", read_index=0), SimpleNamespace(id="r0_chunk_2", read_index=0),
              SimpleNamespace(id="r1_chunk_1", read_index=1)]
    frames = [("r0_chunk_1F1", 0, None, None), ("r0_chunk_2F1", 1, None, None), ("r1_chunk_1F1", 2, None, None)]
    scores = np.array([[0.4, 0.6], [0.9, 0.1], [0.7, 0.3]], dtype=np.float32)
    _, got = written(tmp_path, OutputRows(), records, chunks, frames, scores)
    rows = [ln.split("\t") for ln in got[READ_SUMMARY].splitlines()]
    assert rows[0] == ["read_id", "length", "n_chunks", "kept_frames", "max_virus_score", "max_others_score", "label"]
    assert rows[1] == ["r0", "630", "2", "2", "0.6", "0.9", "virus"], rows[1]
    assert rows[2] == ["r1", "300", "1", "1", "0.3", "0.7", "others"], rows[2]
    assert got[VIRAL_READS] == f">r0 max_virus_score=0.6\n{records[0].seq}\n"


def test_the_end_of_run_summary_counts_reads_without_a_kept_frame() -> None:
    import io
    from virnucpro.report import print_summary
    s = {"wall_s": 10.0, "engine": "fast", "precision": "fp32", "device": "cpu", "reads": 200, "chunks": 220,
         "frames": 195, "viral_chunks": 66, "chunks_with_frames": 141, "viral_reads": 62, "no_kept_frame_reads": 70,
         "reads_per_s": 20.0, "frames_per_s": 50.0, "outdir": "o", "stages": {"embed_esm": 6.0}}
    buf = io.StringIO()
    print_summary(s, file=buf)
    text = " ".join(buf.getvalue().split())
    assert "reads without a kept frame" in text and "70 of 200 (35%)" in text, text
    assert "o/viral_reads.fa" in text, text
