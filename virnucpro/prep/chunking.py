"""Chunking reads into windows of the classifier's length C (300 or 500 nt).

``original`` (default) reproduces VirNucPro's arithmetic exactly, quirk included:

    n = ceil(L / C); repeat = n*C - L; lower = int(repeat / n); upper = lower + 1
    need = repeat - lower*(n-1)
    shift = [upper]*need + [lower]*(n-1-need) + [0]        # may be longer than n
    move = 0; for k in 0..n-1: a = k*C; chunk = seq[a-move : a-move+C] if a > 1 else seq[a : a+C]
                               move += shift[k]

When ``need > n-1`` the shifts are too small and the last chunk comes out short (C=500, L=501 gives
chunks [0:500] and [250:501], 251 nt). ``fixed`` corrects that: n = ceil(L / C) windows of exactly
C nt (when L >= C) whose starts are spread evenly from 0 to L-C. Sequences with L <= C give one
chunk, the whole sequence, in both modes; L = 0 gives none. Case is kept (upper-casing is later).
Chunk ids are ``{record_id}_chunk_{k+1}``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from virnucpro.errors import InputError

MODES = ("original", "fixed")


def chunk_spans(length: int, chunk_length: int, mode: str = "original") -> list[tuple[int, int]]:
    """(start, end) of each chunk of a sequence of ``length`` nt (ends clipped to ``length``)."""
    C, L = chunk_length, length
    if C <= 0:
        raise InputError(f"chunk length must be positive, not {C}")
    if L <= 0:
        return []
    n = -(-L // C)  # ceil
    if mode == "fixed":
        if n == 1:
            return [(0, L)]
        return [((k * (L - C) + (n - 1) // 2) // (n - 1), (k * (L - C) + (n - 1) // 2) // (n - 1) + C)
                for k in range(n)]
    if mode != "original":
        raise InputError(f"unknown chunking mode {mode!r}; choose one of {', '.join(MODES)}")
    repeat = n * C - L
    lower = repeat // n  # == int(repeat / n) for non-negative ints, without float rounding
    upper = lower + 1
    need = repeat - lower * (n - 1)
    shift = [upper] * need + [lower] * (n - 1 - need) + [0]
    spans = []
    move = 0
    for k in range(n):
        a = k * C
        start = a - move if a > 1 else a
        spans.append((start, min(start + C, L)))
        move += shift[k]
    return spans


def chunk_sequence(seq: str, chunk_length: int, mode: str = "original") -> list[str]:
    """The chunk sequences of one read."""
    return [seq[s:e] for s, e in chunk_spans(len(seq), chunk_length, mode)]


def chunk_records(records: Iterable, chunk_length: int, mode: str = "original") -> Iterator[tuple[str, int, str]]:
    """Yield (chunk_id, read_index, chunk_seq) for records with ``.id``/``.seq``, in input order."""
    for ri, rec in enumerate(records):
        for k, (s, e) in enumerate(chunk_spans(len(rec.seq), chunk_length, mode)):
            yield f"{rec.id}_chunk_{k + 1}", ri, rec.seq[s:e]
