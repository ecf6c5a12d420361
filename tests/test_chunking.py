"""Chunking against a literal transcription of the original's arithmetic (spec §2)."""

import math

import pytest

from virnucpro.prep.chunking import chunk_records, chunk_sequence, chunk_spans
from virnucpro.errors import InputError
from virnucpro.io.fasta import Record

from spec_oracle import spec_chunks  # the original's loop, transcribed literally


def lengths_around_multiples():
    out = set(range(1, 12))
    for C in (300, 500):
        for m in range(1, 6):
            out.update(range(m * C - 3, m * C + 4))
    out.update((1300, 1299, 1022, 1024, 2 * 300 + 150))
    return sorted(x for x in out if 0 < x <= 2600)


@pytest.mark.parametrize("C", [300, 500])
def test_matches_original_arithmetic_for_edge_lengths(C):
    for L in lengths_around_multiples():
        seq = "".join("ACGT"[(i * 7 + i // 5) % 4] for i in range(L))
        assert chunk_sequence(seq, C) == spec_chunks(seq, C), f"L={L} C={C}"


@pytest.mark.parametrize("L,C,expected", [
    (501, 500, [(0, 500), (250, 501)]),      # the quirk: a 251-nt last chunk
    (800, 500, [(0, 500), (399, 800)]),      # 401 nt
    (1200, 500, [(0, 500), (399, 899), (798, 1200)]),  # last 402 nt
    (1000, 500, [(0, 500), (500, 1000)]),    # exact multiple: no overlap
    (300, 300, [(0, 300)]),
    (17, 300, [(0, 17)]),                    # short read: one unpadded chunk
    (0, 300, []),
])
def test_documented_cases(L, C, expected):
    assert chunk_spans(L, C) == expected


@pytest.mark.parametrize("C", [300, 500])
def test_fixed_mode_gives_full_chunks_covering_the_read(C):
    for L in lengths_around_multiples():
        spans = chunk_spans(L, C, "fixed")
        assert len(spans) == math.ceil(L / C)
        assert spans[0][0] == 0 and spans[-1][1] == L, (L, spans)
        if L >= C:
            assert all(e - s == C for s, e in spans), (L, spans)
        assert all(a[0] < b[0] for a, b in zip(spans, spans[1:]))


def test_chunk_ids_and_case_kept():
    recs = [Record("r1", "acgt" * 100), Record("r2", "ACG")]
    out = list(chunk_records(recs, 300))
    assert [c[0] for c in out] == ["r1_chunk_1", "r1_chunk_2", "r2_chunk_1"]
    assert out[0][2].islower(), "chunking must keep case; upper-casing happens at translation"
    assert [c[1] for c in out] == [0, 0, 1]


def test_bad_mode_is_an_input_error():
    with pytest.raises(InputError, match="unknown chunking mode"):
        chunk_spans(100, 300, "bogus")
