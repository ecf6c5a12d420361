"""Kept-frame load of a workload: how many frames the embedders will see per read, at a chunk length
(``virnucpro reads synth --stats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass
class KeptFrameStats:
    """Kept-frame load of a workload at one chunk length (what the embedders will see)."""

    chunk_length: int
    reads: int = 0
    chunks: int = 0
    kept_frames: int = 0
    reads_with_kept: int = 0

    @property
    def frames_per_read(self) -> float:
        return self.kept_frames / self.reads if self.reads else 0.0

    @property
    def fraction_reads_with_kept(self) -> float:
        return self.reads_with_kept / self.reads if self.reads else 0.0

    def add(self, sequences: list[str]) -> None:
        """Chunk and six-frame translate ``sequences`` (one batch) and count kept frames."""
        from virnucpro.prep.chunking import chunk_sequence
        from virnucpro.prep.translate import translate_chunks

        chunks: list[str] = []
        owner: list[int] = []
        for r, seq in enumerate(sequences):
            pieces = chunk_sequence(seq, self.chunk_length)
            chunks.extend(pieces)
            owner.extend([r] * len(pieces))
        kept = translate_chunks(chunks)
        per_read = np.bincount(np.array([owner[k.chunk_index] for k in kept], dtype=np.int64),
                               minlength=len(sequences))
        self.reads += len(sequences)
        self.chunks += len(chunks)
        self.kept_frames += int(per_read.sum())
        self.reads_with_kept += int((per_read > 0).sum())

    def line(self) -> str:
        return (f"kept frames at chunk length {self.chunk_length}: {self.kept_frames:,} from "
                f"{self.chunks:,} chunks; {self.frames_per_read:.3f} per read; "
                f"{100 * self.fraction_reads_with_kept:.1f}% of reads have >= 1")


def kept_frame_stats(reads: Iterable[tuple[str, str]], chunk_length: int = 300,
                     batch: int = 20_000) -> KeptFrameStats:
    """Kept-frame statistics of (id, sequence) reads, chunked at ``chunk_length``."""
    stats = KeptFrameStats(chunk_length)
    pending: list[str] = []
    for _, seq in reads:
        pending.append(seq)
        if len(pending) >= batch:
            stats.add(pending)
            pending = []
    if pending:
        stats.add(pending)
    return stats
