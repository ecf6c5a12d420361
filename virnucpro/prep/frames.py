"""Reads -> chunks -> kept frames: the original's chunking (``chunking``) and six-frame translation
(``translate``) in one call, for a whole input or one segment of it."""

from __future__ import annotations

from dataclasses import dataclass

from virnucpro.prep.chunking import chunk_records
from virnucpro.prep.translate import translate_chunks


@dataclass
class Chunk:
    id: str
    read_index: int
    seq: str


def chunk_and_translate(records, chunk_length: int, mode: str, batch: int = 65536, read_offset: int = 0,
                        chunk_offset: int = 0):
    """All chunks, and the kept frames as (frame_id, chunk index, nucleotide, protein). For a
    segment of a larger input: ``read_offset`` is its first read's index, ``chunk_offset`` the
    number of chunks before it (indices come out global)."""
    chunks = [Chunk(cid, ri + read_offset, s) for cid, ri, s in chunk_records(records, chunk_length, mode)]
    frames: list[tuple[str, int, str, str]] = []
    for b in range(0, len(chunks), batch):
        part = chunks[b:b + batch]
        for k in translate_chunks([c.seq for c in part]):
            ci = b + k.chunk_index
            frames.append((chunks[ci].id + k.tag, ci + chunk_offset, k.nucleotide, k.protein))
    return chunks, frames
