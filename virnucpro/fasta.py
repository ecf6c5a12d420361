"""FASTA reading: Biopython's FASTA rules, parsed a block at a time; record id = header up to the first whitespace.

Handles what real sequencing files throw at us: gzip (by magic bytes, any file name), Windows line
endings, lowercase, IUPAC codes, empty records. Problems a user must fix raise ``InputError`` with
one line naming the file and the record; nothing is half-read.

Duplicate record ids (paired reads often share one) crashed the original. We refuse them by
default, naming the first duplicates; ``duplicate_ids="rename"`` keeps every record and renames the
k-th repeat of ``ID`` to ``ID_dupK`` (K = 2, 3, ...), logging how many were renamed.
"""

from __future__ import annotations

import gzip
import io
import zlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from virnucpro.background import gc_paused
from virnucpro.errors import InputError

log = logging.getLogger(__name__)

# What a damaged (often gzip) file raises while being read.
_READ_ERRORS = (gzip.BadGzipFile, EOFError, OSError, zlib.error)

# Letters a nucleotide FASTA may hold: IUPAC nucleotide codes (any case) plus gap symbols.
_ALLOWED = frozenset(b"ACGTURYSWKMBDHVNacgturyswkmbdhvn-.*")


@dataclass(frozen=True)
class Record:
    id: str
    seq: str


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file (gzip detected by magic bytes)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if p.is_dir():
        raise InputError(f"input is a directory, expected a FASTA file: {p}")
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace", newline=None)
    return open(p, encoding="utf-8", errors="replace", newline=None)


_BLOCK_CHARS = 1 << 24   # text parsed per block (16 Mi characters): bounded memory for any file size
_NOT_NUCLEOTIDE = re.compile("[^" + re.escape(bytes(sorted(_ALLOWED)).decode()) + "]")


def iter_fasta(path: str | Path) -> Iterator[Record]:
    """Yield records lazily. Raises InputError for a file that is not FASTA."""
    fh = open_text(path)
    try:
        first = ""
        try:
            for line in fh:
                if line.strip():
                    first = line
                    break
        except _READ_ERRORS as exc:
            raise InputError(_read_error(path, exc)) from None
        if not first:
            raise InputError(f"input file is empty: {path}")
        if not first.startswith(">"):
            raise InputError(
                f"not a FASTA file (first line does not start with '>'): {path}: {first.strip()[:60]!r}")
        try:
            for block in _blocks(first, fh):
                simple = _two_line_records(block)
                if simple is not None:
                    yield from simple
                    continue
                for rec in block[1:].split("\n>"):
                    title, seq, nucleotides_only = _title_and_seq(rec)
                    rid = title.split(None, 1)[0] if title.strip() else ""
                    if not rid:
                        raise InputError(f"{path}: a record has an empty header ('>' with no id)")
                    if not nucleotides_only:
                        bad = set(seq.encode("ascii", "replace")) - _ALLOWED
                        shown = "".join(sorted(chr(b) for b in bad))[:10]
                        raise InputError(
                            f"{path}: record {rid!r} holds characters that are not nucleotide codes: {shown!r}")
                    yield Record(rid, seq)
        except _READ_ERRORS as exc:
            raise InputError(_read_error(path, exc)) from None
    finally:
        fh.close()


def _blocks(first: str, fh) -> Iterator[str]:
    """The file's text from its first record on, in blocks of whole records (each starts with '>').
    ``first``: the first line (it starts with '>'), already read. Parsed with string methods a block
    at a time (Biopython's line-by-line parser was the slowest part of reading short reads)."""
    buf = first
    while True:
        chunk = fh.read(_BLOCK_CHARS)
        buf += chunk
        cut = len(buf) if not chunk else buf.rfind("\n>") + 1   # complete records end before a '>' line
        if cut > 0 and buf[:cut].strip():
            yield buf[:cut]
        buf = buf[cut:]
        if not chunk:
            return


def _two_line_records(block: str) -> list[Record] | None:
    """The records of a block when every one is a header line and one line of nucleotide codes (the
    common case, checked in bulk); None for anything else, which the record-by-record rules handle."""
    lines = block.split("\n")
    if lines[-1] == "":
        lines.pop()
    heads, seqs = lines[0::2], lines[1::2]
    if len(heads) != len(seqs) or any(h[:1] != ">" for h in heads) or any(q[:1] == ">" for q in seqs):
        return None
    if _NOT_NUCLEOTIDE.search("".join(seqs)):
        return None
    titles = [h[1:].rstrip() for h in heads]
    if not all(titles):
        return None
    return [Record(t.split(None, 1)[0], q) for t, q in zip(titles, seqs)]


def _title_and_seq(rec: str) -> tuple[str, str, bool]:
    """One record's text without its leading '>' -> (title, sequence, whether the sequence holds
    nucleotide codes only), title and sequence exactly as Biopython's SimpleFastaParser gives them
    (sequence lines right-stripped, joined, spaces and carriage returns removed), then tabs removed too."""
    header, _, body = rec.partition("\n")
    seq = body.replace("\n", "")
    if not _NOT_NUCLEOTIDE.search(seq):
        return header.rstrip(), seq, True
    # whitespace (or worse) in the sequence lines: the exact rule, then the check again
    seq = "".join(line.rstrip() for line in body.split("\n")).replace(" ", "").replace("\r", "")
    seq = seq.replace("\t", "")
    return header.rstrip(), seq, not _NOT_NUCLEOTIDE.search(seq)


def _read_error(path, exc: Exception) -> str:
    return f"{path}: corrupt or truncated file, cannot read it ({type(exc).__name__}: {exc}); is the gzip complete?"


def read_fasta(path: str | Path, duplicate_ids: str = "error") -> list[Record]:
    """Read all records, checking ids. ``duplicate_ids``: "error" (default) or "rename"."""
    if duplicate_ids not in ("error", "rename"):
        raise InputError(f"duplicate_ids must be 'error' or 'rename', not {duplicate_ids!r}")
    with gc_paused():   # millions of small objects and no cycles: the collector's passes cost a quarter of the time
        records = list(iter_fasta(path))
    if not records:
        raise InputError(f"no FASTA records in {path}")
    if not any(r.seq for r in records):
        raise InputError(f"every record in {path} has an empty sequence")
    if len({r.id for r in records}) == len(records):   # the usual case: no duplicate ids
        return _warn_empty(records)
    seen: dict[str, int] = {}
    dups: list[str] = []
    out: list[Record] = []
    for r in records:
        k = seen.get(r.id, 0) + 1
        seen[r.id] = k
        if k == 1:
            out.append(r)
            continue
        dups.append(r.id)
        if duplicate_ids == "rename":
            new_id = f"{r.id}_dup{k}"
            while new_id in seen:  # a record literally named ID_dupK exists: count further
                k += 1
                new_id = f"{r.id}_dup{k}"
            seen[new_id] = 1
            out.append(Record(new_id, r.seq))
    if dups:
        uniq = list(dict.fromkeys(dups))
        if duplicate_ids == "error":
            raise InputError(
                f"{path}: {len(dups)} duplicate record id(s), e.g. {', '.join(uniq[:3])}; "
                "ids must be unique (use --duplicate-ids rename to suffix repeats with _dupK)")
        log.warning("renamed %d duplicate record ids (e.g. %s -> %s_dup2)", len(dups), uniq[0], uniq[0])
    return _warn_empty(out)


def _warn_empty(records: list[Record]) -> list[Record]:
    n_empty = sum(1 for r in records if not r.seq)
    if n_empty:
        log.warning("%d record(s) have an empty sequence; they yield no chunks", n_empty)
    return records
