"""The output rows spooled segment by segment (run/rows.py) give the bytes and counts of
``io.outputs.OutputRows`` writing the whole input at once: segments of whole reads, units packing
frames of any segment and finishing in any order, units given up on (--skip-failing-units), rows
made ahead or at the end, consensus files merged in several rounds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from virnucpro.io import outputs
from virnucpro.io.fasta import read_fasta
from virnucpro.plan.planner import segments
from virnucpro.prep.frames import chunk_and_translate
from virnucpro.run import rows as rows_mod
from virnucpro.run.rows import SpooledRows
from virnucpro.run.rundir import RunDir


@pytest.fixture(scope="module")
def reads(synthetic_reads):
    return read_fasta(synthetic_reads(300, 5))


def _units(n_frames: int, rng) -> list[np.ndarray]:
    """The frames cut into units of random size, each unit's frames from anywhere (as FFD packs)."""
    order = rng.permutation(n_frames)
    cuts = np.sort(rng.choice(np.arange(1, n_frames), size=min(n_frames - 1, 17), replace=False))
    return [np.sort(u) for u in np.split(order, cuts)]


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("seed, skip, ahead", [(0, False, "none"), (1, True, "some"), (2, True, "all"),
                                               (3, False, "some")])
def test_spooled_rows_are_the_whole_input_rows(tmp_path, reads, monkeypatch, seed, skip, ahead):
    monkeypatch.setattr(rows_mod, "MERGE_FAN_IN", 2)   # several merge rounds over 5 segments
    rng = np.random.default_rng(seed)
    chunks, frames = chunk_and_translate(reads, 300, "original")
    scores = rng.choice([0.25, 0.5, 0.75, 0.8789939], size=(len(frames), 2)).astype(np.float32)   # ties
    units = _units(len(frames), rng)
    skipped = {1, 4} if skip else set()
    rd = RunDir(tmp_path / "run")
    rd.reset()
    plans = SimpleNamespace(n_units=0, unit_frames=lambda u: units[u])
    spool = SpooledRows.fresh(rd, plans)
    n_chunks = 0
    for a, part, _ in segments(reads, 60):
        ch, fr = chunk_and_translate(part, 300, "original", read_offset=a, chunk_offset=n_chunks)
        spool.add_segment(a, n_chunks, part, ch, fr)
        n_chunks += len(ch)
    plans.n_units = len(units)
    for k in rng.permutation(len(units)).tolist():   # units finish in any order
        if k in skipped:
            rd.skip_unit(k, "test")
        else:
            rd.save_unit(k, units[k], scores[units[k]])
        if ahead == "all" or (ahead == "some" and rng.random() < 0.3):
            spool.catch_up()
    if ahead == "all":
        assert spool.made_ahead == len(frames)
    for k in skipped:
        scores[units[k]] = np.nan
    want_dir, got_dir = tmp_path / "whole", tmp_path / "spooled"
    want_dir.mkdir()
    got_dir.mkdir()
    want = outputs.OutputRows().write(want_dir, reads, chunks, frames, scores, synthetic=True)
    got = spool.write(got_dir, None, synthetic=True)
    assert got == want
    w, g = _files(want_dir), _files(got_dir)
    assert sorted(g) == sorted(w)
    for name in w:
        assert g[name] == w[name], f"{name} differs"
    assert not spool.folder.exists(), "the spool is removed once the files are written"


def test_a_segment_without_scores_for_all_its_frames_is_refused(tmp_path, reads):
    rd = RunDir(tmp_path / "run")
    rd.reset()
    spool = SpooledRows.fresh(rd, SimpleNamespace(n_units=0))
    chunks, frames = chunk_and_translate(reads[:20], 300, "original")
    spool.add_segment(0, 0, reads[:20], chunks, frames)
    from virnucpro.errors import VirnucproError
    with pytest.raises(VirnucproError, match="have no score"):
        spool.write(tmp_path, None, synthetic=False)


def test_describe_unit_names_the_reads_of_its_frames(tmp_path, reads):
    rd = RunDir(tmp_path / "run")
    rd.reset()
    spool = SpooledRows.fresh(rd, SimpleNamespace(n_units=0))
    n_chunks = 0
    all_frames = []
    for a, part, _ in segments(reads, 50):
        ch, fr = chunk_and_translate(part, 300, "original", read_offset=a, chunk_offset=n_chunks)
        spool.add_segment(a, n_chunks, part, ch, fr)
        n_chunks += len(ch)
        all_frames += fr
    picked = np.array([0, len(all_frames) // 2, len(all_frames) - 1])
    want = sorted({all_frames[i][0].rsplit("_chunk_", 1)[0] for i in picked.tolist()})
    assert spool.describe_unit(7, picked) == f"{len(want)} read(s): {', '.join(want)}"
