"""Reading reads: FASTA (Biopython's rules, parsed a block at a time) or FASTQ (the 4-line form,
``virnucpro.io.fastq``), told apart by content; record id = header up to the first whitespace.

Handles what real sequencing files throw at us: gzip (by magic bytes, any file name), standard
input ('-'), pipes, FIFOs and process substitutions, each read once (``virnucpro.io.source``, which
also hashes the bytes parsed: the input's identity), Windows line endings, lowercase, IUPAC codes
and X (``virnucpro.io.records``), empty records. Problems a user must fix raise ``InputError`` with
one line naming the input and the record; nothing is half-read.

Duplicate record ids (paired reads often share one) crashed the original. We refuse them by
default, naming the first duplicates; ``duplicate_ids="rename"`` keeps every record and renames the
k-th repeat of ``ID`` to ``ID_dupK`` (K = 2, 3, ...), logging how many were renamed.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator

from virnucpro.core.background import gc_paused
from virnucpro.errors import InputError
from virnucpro.io.fastq import fastq_blocks
from virnucpro.io.records import ALLOWED as _ALLOWED  # noqa: F401 - the letter rules, for tests
from virnucpro.io.records import FLAGGED_WORDS, NOT_NUCLEOTIDE as _NOT_NUCLEOTIDE
from virnucpro.io.records import FlagCount, Record, bad_letters
from virnucpro.io.source import InputSource, open_source

log = logging.getLogger(__name__)

# What a damaged (often gzip) file raises while being read.
_READ_ERRORS = (gzip.BadGzipFile, EOFError, OSError, zlib.error)

_BLOCK_CHARS = 1 << 24   # text parsed per block (16 Mi characters): bounded memory for any file size


def iter_fasta(path: str | Path) -> Iterator[Record]:
    """Yield records lazily (FASTA or FASTQ). Raises InputError for an input that is neither."""
    for block in iter_fasta_blocks(path):
        yield from block


def iter_fasta_blocks(path: str | Path | InputSource, progress: Callable[[float], None] | None = None
                      ) -> Iterator[list[Record]]:
    """The records (FASTA or FASTQ, told by the first line) a block of text at a time (lists, in
    input order). ``path``: a path, '-', or an input already opened (``open_source``; the caller
    then closes it). ``progress(fraction)``: after each block, the share of a regular file's bytes
    read so far (of the compressed bytes for gzip; 0.0 for a stream). The reads holding X are
    counted in ``src.flags``."""
    src = path if isinstance(path, InputSource) else open_source(path)
    flags = src.flags
    fh = None
    try:
        first, line_no = "", 0
        try:
            fh = src.text()
            for line in fh:
                line_no += 1
                if line.strip():
                    first = line
                    break
        except _READ_ERRORS as exc:
            raise InputError(_read_error(src, exc)) from None
        if not first:
            raise InputError(f"input is empty: {src}")
        if first.startswith(">"):
            blocks = _fasta_blocks(first, fh, src, flags)
        elif first.startswith("@"):
            blocks = fastq_blocks(first, fh, line_no, str(src), _BLOCK_CHARS, flags)
        else:
            raise InputError(f"not a FASTA or FASTQ file (the first line starts with neither '>' nor '@'): "
                             f"{src}: {first.strip()[:60]!r}")
        try:
            for records in blocks:
                if progress is not None:
                    progress(src.fraction())
                yield records
        except _READ_ERRORS as exc:
            raise InputError(_read_error(src, exc)) from None
    finally:
        if fh is not None:
            fh.close()
        if src is not path:
            src.release()


def _fasta_blocks(first: str, fh, path, flags: FlagCount | None) -> Iterator[list[Record]]:
    for block in _blocks(first, fh):
        records = _two_line_records(block, flags)
        if records is None:
            records = [_record(rec, path) for rec in block[1:].split("\n>")]
            if flags is not None:
                flags.add(records)
        yield records


def _record(rec: str, path) -> Record:
    """One record's text (without its leading '>') parsed by the exact rules."""
    title, seq, nucleotides_only = _title_and_seq(rec)
    rid = title.split(None, 1)[0] if title.strip() else ""
    if not rid:
        raise InputError(f"{path}: a record has an empty header ('>' with no id)")
    if not nucleotides_only:
        raise InputError(f"{path}: record {rid!r} holds characters that are not nucleotide codes: "
                         f"{bad_letters(seq)!r}")
    return Record(rid, seq)


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


def _two_line_records(block: str, flags: FlagCount | None = None) -> list[Record] | None:
    """The records of a block when every one is a header line and one line of nucleotide codes (the
    common case, checked in bulk); None for anything else, which the record-by-record rules handle."""
    lines = block.split("\n")
    if lines[-1] == "":
        lines.pop()
    heads, seqs = lines[0::2], lines[1::2]
    if len(heads) != len(seqs) or any(h[:1] != ">" for h in heads) or any(q[:1] == ">" for q in seqs):
        return None
    joined = "".join(seqs)
    if _NOT_NUCLEOTIDE.search(joined):
        return None
    titles = [h[1:].rstrip() for h in heads]
    if not all(titles):
        return None
    records = [Record(t.split(None, 1)[0], q) for t, q in zip(titles, seqs)]
    if flags is not None:
        flags.add(records, joined)
    return records


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


def _read_error(path, exc: Exception) -> str:  # path: a path or an InputSource (its name)
    return f"{path}: corrupt or truncated file, cannot read it ({type(exc).__name__}: {exc}); is the gzip complete?"


def read_fasta(path: str | Path, duplicate_ids: str = "error") -> list[Record]:
    """Read all records, checking ids. ``duplicate_ids``: "error" (default) or "rename"."""
    return RecordStream(path, duplicate_ids, background=False).result()


class _IdCheck:
    """Record ids checked block by block, in file order: with "rename", the k-th repeat of ``ID``
    becomes ``ID_dupK`` (counting further while ``ID_dupK`` was already seen), exactly as one pass
    over the whole file; with "error", the duplicates are collected for one error at the end."""

    def __init__(self, path, duplicate_ids: str):
        self.path, self.mode = path, duplicate_ids
        self.seen: dict[str, int] = {}
        self.dups: list[str] = []

    def block(self, records: list[Record]) -> list[Record]:
        ids = {r.id: 1 for r in records}
        if len(ids) == len(records) and self.seen.keys().isdisjoint(ids):   # the usual case
            self.seen.update(ids)
            return records
        out: list[Record] = []
        for r in records:
            k = self.seen.get(r.id, 0) + 1
            self.seen[r.id] = k
            if k == 1:
                out.append(r)
                continue
            self.dups.append(r.id)
            if self.mode == "rename":
                new_id = f"{r.id}_dup{k}"
                while new_id in self.seen:  # a record literally named ID_dupK exists: count further
                    k += 1
                    new_id = f"{r.id}_dup{k}"
                self.seen[new_id] = 1
                out.append(Record(new_id, r.seq))
            else:
                out.append(r)
        return out

    def finish(self, records: list[Record]) -> None:
        """The checks that need the whole file."""
        if not records:
            raise InputError(f"no records in {self.path}")
        if not any(r.seq for r in records):
            raise InputError(f"every record in {self.path} has an empty sequence")
        if self.dups:
            uniq = list(dict.fromkeys(self.dups))
            if self.mode == "error":
                raise InputError(
                    f"{self.path}: {len(self.dups)} duplicate record id(s), e.g. {', '.join(uniq[:3])}; "
                    "ids must be unique (use --duplicate-ids rename to suffix repeats with _dupK)")
            log.warning("renamed %d duplicate record ids (e.g. %s -> %s_dup2)", len(self.dups), uniq[0], uniq[0])
        _warn_empty(records)


class RecordStream:
    """A FASTA or FASTQ input read by a background thread (``background=False``: in the constructor), so that
    the records read so far can be worked on while the rest is read. ``records`` grows block by
    block (ids already final: duplicates renamed as they come); ``result()`` waits for the end and
    returns the checked list, or raises the InputError the file earned -- some checks (duplicate ids
    with "error", no records, only empty sequences) can only fail at the end."""

    def __init__(self, path: str | Path, duplicate_ids: str = "error", background: bool = True,
                 pause_while: Callable[[], bool] | None = None, pause_after: int = 0):
        """``pause_while()``: once ``pause_after`` records are read, reading waits while it is true
        (e.g. while this process loads models: reading further would only slow that down)."""
        if duplicate_ids not in ("error", "rename"):
            raise InputError(f"duplicate_ids must be 'error' or 'rename', not {duplicate_ids!r}")
        self.path, self.duplicate_ids = path, duplicate_ids
        self.records: list[Record] = []
        self.fraction = 0.0              # of the file read so far (0.0 until done for a stream)
        self.name = str(path)            # for messages: the path, or "standard input"
        self.identity: dict | None = None   # once read: {size, sha256} of the bytes parsed (io.source)
        self.flags = FlagCount()         # reads holding X
        self.read_s: float | None = None  # once done
        self.error: BaseException | None = None
        self._done = False
        self._cond = threading.Condition()
        self._pause_while, self._pause_after = pause_while, pause_after
        if background:
            threading.Thread(target=self._read, name="read-fasta", daemon=True).start()
        else:
            self._read()

    def _read(self) -> None:
        t = time.perf_counter()
        src = None
        try:
            src = open_source(self.path)   # once: a pipe or standard input cannot be read twice
            self.name, self.flags = src.name, src.flags
            check = _IdCheck(src.name, self.duplicate_ids)
            with gc_paused():   # millions of small objects and no cycles: the collector's passes cost a quarter of the time
                for block in iter_fasta_blocks(src, self._progress):
                    block = check.block(block)
                    with self._cond:
                        self.records.extend(block)
                        self._cond.notify_all()
                    while self._pause_while is not None and len(self.records) >= self._pause_after \
                            and self._pause_while():
                        time.sleep(0.02)
            self.identity = src.finish()   # refuses a file that changed while it was read
            self.fraction = 1.0
            check.finish(self.records)
            if self.flags.reads:
                log.warning("%d read(s) hold %s, e.g. %s: their codons are dropped, as the original VirNucPro "
                            "does", self.flags.reads, FLAGGED_WORDS, self.flags.example)
        except BaseException as exc:  # noqa: BLE001 - raised in the consumers' threads by result()
            changed = src.changed() if src is not None and isinstance(exc, (InputError, *_READ_ERRORS)) else None
            self.error = InputError(changed) if changed else exc   # a truncated file: that is the cause
        finally:
            if src is not None:
                src.release()
            with self._cond:
                self.read_s = time.perf_counter() - t
                self._done = True
                self._cond.notify_all()

    def _progress(self, fraction: float) -> None:
        self.fraction = fraction

    @property
    def done(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        return self._done and self.error is not None

    def wait(self, n: int, timeout: float | None = None) -> bool:
        """Wait until more than ``n`` records are read or the file is done; True if either."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.records) > n or self._done, timeout)

    def result(self, timeout: float | None = None) -> list[Record]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"{self.name}: still reading after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.records

    def expected_reads(self) -> int:
        """All reads once done; before, the reads so far scaled by the share of the file read (the
        reads so far for a stream of unknown length)."""
        n = len(self.records)
        if self._done or not n or self.fraction <= 0.0:
            return n
        return int(n / max(self.fraction, 1e-9))


def _warn_empty(records: list[Record]) -> list[Record]:
    n_empty = sum(1 for r in records if not r.seq)
    if n_empty:
        log.warning("%d record(s) have an empty sequence; they yield no chunks", n_empty)
    return records
