"""Six-frame translation and frame selection, as the original does it (spec §3), vectorised.

Per chunk (upper-cased): frame f in {0,1,2} reads codons at i = f, f+3, ... while i < len-2. A codon
not in the standard 64-codon table (N, IUPAC, U, gaps) is dropped silently: no residue, no gap.
Frames F1..F3 are the forward frames 0..2, R1..R3 those of the reverse complement (A<->T, C<->G,
other symbols unchanged, reversed). A frame is kept when its protein is non-empty and holds no '*'.
The kept nucleotide is, with p = len(protein), ``seq[f : f + 3p + 1]`` (forward) or
``rc[f : f + 3p + 1]`` (reverse): 3p+1 bases, clipped at the chunk end (quirk kept).

``translate_chunks`` processes a batch of chunks with flat numpy arrays (no per-codon Python);
``six_frame_kept_naive`` is the plain per-codon reading of the spec, kept as documentation and as
the oracle for tests.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from Bio.Data.CodonTable import unambiguous_dna_by_id

TAGS = ("F1", "F2", "F3", "R1", "R2", "R3")
_BASES = "ACGT"
_STANDARD = unambiguous_dna_by_id[1]
CODON_TABLE: dict[str, str] = {**_STANDARD.forward_table, **{c: "*" for c in _STANDARD.stop_codons}}
assert len(CODON_TABLE) == 64

# 2-bit codes for A C G T; 4 marks any other symbol (its codons are dropped).
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(_BASES):
    _CODE[ord(_b)] = _i
_COMPLEMENT_CODE = np.array([3, 2, 1, 0, 4], dtype=np.uint8)  # A<->T, C<->G, other stays other
# amino-acid byte for codon index 16*a + 4*b + c
_AA = np.frombuffer(
    "".join(CODON_TABLE[a + b + c] for a in _BASES for b in _BASES for c in _BASES).encode(), dtype=np.uint8)
_STOP = ord("*")
_RC_TRANS = str.maketrans("ACGT", "TGCA")


class KeptFrame(NamedTuple):
    chunk_index: int   # index into the batch of chunks given to translate_chunks
    tag: str           # F1 F2 F3 R1 R2 R3
    nucleotide: str    # the 3p+1-nt slice (upper-case) that DNABERT-S embeds
    protein: str       # stop-free translation that ESM-2 embeds


def reverse_complement(seq: str) -> str:
    """A<->T, C<->G, other symbols unchanged, reversed (the original's rule; expects upper case)."""
    return seq.translate(_RC_TRANS)[::-1]


def _frame_proteins(codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, f: int):
    """Translate frame f of every chunk laid end to end in ``codes``.

    Returns (aa bytes of all valid codons, valid-codon count per chunk, has-stop per chunk)."""
    n_codons = np.maximum((lengths - f) // 3, 0)                     # [n_chunks]
    total = int(n_codons.sum())
    seg = np.repeat(np.arange(len(lengths)), n_codons)               # [total] chunk of each codon
    first = np.cumsum(n_codons) - n_codons                           # [n_chunks]
    t = np.arange(total) - np.repeat(first, n_codons)                # codon number within chunk
    pos = starts[seg] + f + 3 * t                                    # [total] first base of codon
    c0, c1, c2 = codes[pos], codes[pos + 1], codes[pos + 2]
    valid = (c0 < 4) & (c1 < 4) & (c2 < 4)
    aa = _AA[(c0[valid].astype(np.int64) << 4) | (c1[valid].astype(np.int64) << 2) | c2[valid]]
    vseg = seg[valid]
    n_valid = np.bincount(vseg, minlength=len(lengths))
    n_stop = np.bincount(vseg[aa == _STOP], minlength=len(lengths))
    return aa.tobytes(), n_valid, n_stop > 0


def translate_chunks(chunks: Sequence[str]) -> list[KeptFrame]:
    """Kept frames of a batch of chunks, ordered by chunk then F1 F2 F3 R1 R2 R3."""
    if not chunks:
        return []
    upper = [c.upper() for c in chunks]
    buf = "".join(upper).encode("ascii", "replace")
    codes = _CODE[np.frombuffer(buf, dtype=np.uint8)]
    lengths = np.fromiter((len(c) for c in upper), dtype=np.int64, count=len(upper))
    starts = np.cumsum(lengths) - lengths
    rc_codes = _COMPLEMENT_CODE[codes[::-1]]
    rc_starts = len(codes) - starts - lengths        # chunk j, reversed, sits here in rc_codes

    kept: list[tuple[int, int, str]] = []            # (chunk, frame 0..5, protein)
    for frame in range(6):
        f = frame % 3
        src, st = (codes, starts) if frame < 3 else (rc_codes, rc_starts)
        aa, n_valid, has_stop = _frame_proteins(src, st, lengths, f)
        offsets = np.cumsum(n_valid) - n_valid
        for j in np.flatnonzero((n_valid > 0) & ~has_stop).tolist():
            o = int(offsets[j])
            kept.append((j, frame, aa[o:o + int(n_valid[j])].decode("ascii")))
    kept.sort(key=lambda x: (x[0], x[1]))

    out: list[KeptFrame] = []
    rc_cache: dict[int, str] = {}
    for j, frame, protein in kept:
        f, p = frame % 3, len(protein)
        if frame < 3:
            nuc = upper[j][f:f + 3 * p + 1]
        else:
            rc = rc_cache.get(j)
            if rc is None:
                rc = rc_cache[j] = reverse_complement(upper[j])
            nuc = rc[f:f + 3 * p + 1]
        out.append(KeptFrame(j, TAGS[frame], nuc, protein))
    return out


def six_frame_kept(seq: str) -> list[tuple[str, str, str]]:
    """(tag, nucleotide, protein) of the kept frames of one chunk."""
    return [(k.tag, k.nucleotide, k.protein) for k in translate_chunks([seq])]


def translate_frame_naive(seq: str, f: int) -> str:
    """Per-codon reading of the spec: codons at f, f+3, ... while i < len-2; unknown codons dropped."""
    out = []
    i = f
    while i < len(seq) - 2:
        aa = CODON_TABLE.get(seq[i:i + 3])
        if aa is not None:
            out.append(aa)
        i += 3
    return "".join(out)


def six_frame_kept_naive(seq: str) -> list[tuple[str, str, str]]:
    """The spec, written plainly (slow; the oracle for tests)."""
    seq = seq.upper()
    rc = reverse_complement(seq)
    kept = []
    for num in range(1, 7):
        src, f = (seq, num - 1) if num <= 3 else (rc, num - 4)
        protein = translate_frame_naive(src, f)
        if protein and "*" not in protein:
            p = len(protein)
            nuc = seq[num - 1:num + 3 * p] if num <= 3 else rc[num - 4:num - 3 + 3 * p]
            kept.append((TAGS[num - 1], nuc, protein))
    return kept
