"""Consensus and per-read summary, vectorised, against their plain definitions (the original's
``id[:-2]`` grouping, max score2 >= max score1) on random frames, ties and repeated keys included."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from virnucpro.outputs import consensus
from virnucpro.pipeline import _read_summary


def plain_consensus(frame_ids, scores):
    best: dict[str, list[float]] = {}
    for fid, (s1, s2) in zip(frame_ids, scores.tolist()):
        cur = best.setdefault(fid[:-2], [s1, s2])
        cur[0], cur[1] = max(cur[0], s1), max(cur[1], s2)
    return [(k, v[1] >= v[0]) for k, v in sorted(best.items())]


def plain_read_summary(records, chunks, frames, scores, cons, skipped):
    rows = []
    for i, r in enumerate(records):
        mine = [(f, s) for f, s in zip(frames, scores[:, 1].tolist()) if chunks[f[1]].read_index == i]
        k = len(mine)
        label = "skipped" if i in skipped else "no_kept_frame" if k == 0 else \
            ("virus" if any(cons.get(f[0][:-2]) for f, _ in mine) else "others")
        rows.append((r.id, len(r.seq), sum(c.read_index == i for c in chunks), k,
                     max(s for _, s in mine) if mine else None, label))
    return rows


def random_run(seed: int):
    rng = np.random.default_rng(seed)
    records = [SimpleNamespace(id=f"r{i}", seq="A" * int(rng.integers(50, 400))) for i in range(40)]
    chunks = [SimpleNamespace(id=f"r{i}_chunk_{j}", read_index=i) for i in range(40) for j in range(int(rng.integers(0, 3)))]
    frames = [(f"{c.id}{s}{k}", ci, None, None) for ci, c in enumerate(chunks)
              for s in "FR" for k in (1, 2, 3) if rng.random() < 0.4]
    scores = rng.choice([0.25, 0.5, 0.75], size=(len(frames), 2)).astype(np.float32)   # ties on purpose
    if len(frames) > 3:   # a key seen again later, not next to its first frames (original groups by id[:-2])
        frames.append((frames[0][0][:-2] + "R9", frames[0][1], None, None))
        scores = np.vstack([scores, [[0.1, 0.9]]]).astype(np.float32)
    return records, chunks, frames, scores


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_consensus_and_read_summary_match_their_definitions(seed: int) -> None:
    records, chunks, frames, scores = random_run(seed)
    ids = [f[0] for f in frames]
    cons = consensus(ids, scores)
    assert cons == plain_consensus(ids, scores), f"seed {seed}: consensus differs from its definition"
    skipped = {3} if seed % 2 else set()
    got = _read_summary(records, chunks, frames, scores, dict(cons), skipped)
    want = plain_read_summary(records, chunks, frames, scores, dict(cons), skipped)
    assert got == want, f"seed {seed}: first differing row " + str(next((g, w) for g, w in zip(got, want) if g != w))


def test_consensus_of_no_frames_is_empty() -> None:
    assert consensus([], np.zeros((0, 2), dtype=np.float32)) == []
