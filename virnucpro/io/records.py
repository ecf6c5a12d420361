"""A read record, and which letters it may hold: what the original VirNucPro processes, minus what
looks like protein.

The original parses any letter (Biopython) and drops, while translating, every codon that is not in
the 64-codon table (spec §3, virnucpro.prep.translate): N, IUPAC ambiguity codes, X, gaps. We accept
the IUPAC nucleotide codes (any case), the gap symbols ``- . *`` and X (an unknown or masked base,
written by some maskers and assemblers), and process them exactly so. X is counted: the run warns
how many reads hold it. Any other letter (E F I J L O P Q Z, digits, ...) makes the record look like
protein or like something else than reads: it is refused, naming the record and the letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    id: str     # the header up to its first whitespace
    seq: str


# Letters a nucleotide record may hold: IUPAC nucleotide codes (any case), gap symbols, and X.
ALLOWED = frozenset(b"ACGTURYSWKMBDHVNXacgturyswkmbdhvnx-.*")
NOT_NUCLEOTIDE = re.compile("[^" + re.escape(bytes(sorted(ALLOWED)).decode()) + "]")
# Accepted but counted: letters no 'plain' nucleotide file holds (their codons are dropped).
FLAGGED = ("X", "x")
FLAGGED_WORDS = "X (an unknown or masked base)"


def flagged(seq: str) -> bool:
    return any(c in seq for c in FLAGGED)


def bad_letters(seq: str) -> str:
    """The letters of ``seq`` that are refused (sorted, at most 10), for the error line."""
    bad = set(seq.encode("ascii", "replace")) - ALLOWED
    return "".join(sorted(chr(b) for b in bad))[:10]


class FlagCount:
    """Reads holding a flagged letter, counted block by block (``joined``: the block's sequences
    joined, when the caller has them; searched once, the records only when it holds one)."""

    def __init__(self):
        self.reads = 0
        self.example: str | None = None

    def add(self, records, joined: str | None = None) -> None:
        if joined is None:
            joined = "".join(r.seq for r in records)
        if not flagged(joined):   # str's substring search: a regex took 5x longer (0.25 s per 45 M bases)
            return
        hits = [r.id for r in records if flagged(r.seq)]
        self.reads += len(hits)
        if self.example is None and hits:
            self.example = hits[0]
