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
import os
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

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

_BLOCK_CHARS = 1 << 22   # text parsed per block (4 Mi characters): bounded memory for any file size (a
                         # block's text, lines and records are ~4x its size while parsed)


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
    return RecordStream(path, duplicate_ids, background=False, keep=True).result()


ID_BUCKETS = 256   # the exact duplicate check's spool: ids by hash into this many buckets


class _IdSpool:
    """Every record id with its index, in an unnamed temporary file (gone with the process, kill -9
    included), grouped by a hash of the id into ``ID_BUCKETS`` buckets per block; ``repeats()``
    reads back one bucket at a time (~1/256 of the ids in memory) and finds every repeat exactly.
    Memory per block: its bucket offsets (2 KiB)."""

    def __init__(self, folder: Path | None):
        import tempfile
        self.fh = tempfile.TemporaryFile(dir=folder)
        self.size = 0
        self.blocks: list[tuple[int, np.ndarray]] = []   # (file offset, bucket offsets [ID_BUCKETS + 1])

    def add(self, first: int, ids: list[str]) -> None:
        bucket = np.fromiter((hash(i) % ID_BUCKETS for i in ids), np.int64, len(ids))
        order = np.argsort(bucket, kind="stable")   # file order within a bucket
        parts = [f"{first + j}\t{ids[j]}\n".encode() for j in order.tolist()]
        sizes = np.fromiter((len(x) for x in parts), np.int64, len(parts))
        ends = np.concatenate([[0], np.cumsum(sizes)])
        offsets = ends[np.searchsorted(bucket[order], np.arange(ID_BUCKETS + 1))]
        os.pwrite(self.fh.fileno(), b"".join(parts), self.size)
        self.blocks.append((self.size, offsets))
        self.size += int(ends[-1])

    def repeats(self) -> list[tuple[int, str]]:
        """(index, id) of every record whose id an earlier record has, in file order."""
        out: list[tuple[int, str]] = []
        fd = self.fh.fileno()
        for k in range(ID_BUCKETS):
            seen: set[str] = set()
            for base, off in self.blocks:
                n = int(off[k + 1] - off[k])
                if not n:
                    continue
                for line in os.pread(fd, n, base + int(off[k])).decode().split("\n")[:-1]:
                    i, rid = line.split("\t", 1)
                    if rid in seen:
                        out.append((int(i), rid))
                    else:
                        seen.add(rid)
        out.sort()
        return out

    def close(self) -> None:
        self.fh.close()


class _HashSet:
    """A set of 64-bit hashes in sorted numpy arrays of doubling sizes (8 bytes a member; a block
    checked with one binary search per array)."""

    def __init__(self):
        self.levels: list = []

    def contains(self, h):
        hit = np.zeros(len(h), dtype=bool)
        for level in self.levels:
            i = np.minimum(np.searchsorted(level, h), len(level) - 1)
            hit |= level[i] == h
        return hit

    def add(self, h) -> None:
        new = np.sort(np.asarray(h, dtype=np.int64))
        while self.levels and len(self.levels[-1]) <= len(new):
            new = np.sort(np.concatenate([self.levels.pop(), new]), kind="mergesort")
        self.levels.append(new)


class _IdCheck:
    """Record ids checked block by block, in file order, in memory that does not grow with the input
    (docs/benchmarks.md#memory).

    "error" (the default) is exact: the ids go to an unnamed spool file (``_IdSpool``) and ``finish``
    finds every repeat there, naming the first ones as one pass over the whole file would.
    "rename" must decide as it reads (the k-th repeat of ``ID`` becomes ``ID_dupK``, counting further
    while ``ID_dupK`` was already seen): it keeps a 64-bit hash per id (8 bytes a read, ``_HashSet``)
    and an exact count per repeated id. The trade-off: a read whose id's hash equals an earlier,
    different id's would be renamed as a repeat -- for n reads a chance of about n^2 / 2^65 (3e-6
    for 10 M reads, 3e-4 for 100 M); and the counts grow with the number of repeated ids."""

    def __init__(self, path, duplicate_ids: str, spool_dir: Path | None = None):
        self.path, self.mode = path, duplicate_ids
        self.n = self.n_empty = 0
        self.spool = _IdSpool(spool_dir) if duplicate_ids == "error" else None
        self.hashes = _HashSet() if duplicate_ids == "rename" else None
        self.counts: dict[str, int] = {}            # rename: occurrences of each repeated id so far
        self.renamed: list[str] = []                # rename: the first few repeated ids
        self.n_renamed = 0

    def block(self, records: list[Record]) -> list[Record]:
        first = self.n
        self.n += len(records)
        self.n_empty += sum(1 for r in records if not r.seq)
        if self.spool is not None:
            self.spool.add(first, [r.id for r in records])
            return records
        h = np.fromiter((hash(r.id) for r in records), np.int64, len(records))
        earlier = self.hashes.contains(h)
        if not earlier.any() and len(np.unique(h)) == len(h):   # the usual case
            self.hashes.add(h)
            return records
        out: list[Record] = []
        here: set[int] = set()   # this block's hashes so far
        added: list[int] = []
        known = self.hashes.contains

        def seen(hr: int) -> bool:
            return hr in here or bool(known(np.array([hr], np.int64))[0])

        for r, hr, before in zip(records, h.tolist(), earlier.tolist()):
            if not (before or hr in here):
                here.add(hr)
                added.append(hr)
                out.append(r)
                continue
            k = self.counts.get(r.id, 1) + 1
            self.counts[r.id] = k
            self.n_renamed += 1
            if len(self.renamed) < 3 and r.id not in self.renamed:
                self.renamed.append(r.id)
            new_id = f"{r.id}_dup{k}"
            while seen(hash(new_id)):   # a record literally named ID_dupK exists: count further
                k += 1
                new_id = f"{r.id}_dup{k}"
            here.add(hash(new_id))
            added.append(hash(new_id))
            out.append(Record(new_id, r.seq))
        self.hashes.add(np.asarray(added, dtype=np.int64))
        return out

    def finish(self) -> None:
        """The checks that need the whole file."""
        try:
            if not self.n:
                raise InputError(f"no records in {self.path}")
            if self.n_empty == self.n:
                raise InputError(f"every record in {self.path} has an empty sequence")
            if self.spool is not None:
                dups = [rid for _, rid in self.spool.repeats()]
                if dups:
                    uniq = list(dict.fromkeys(dups))
                    raise InputError(
                        f"{self.path}: {len(dups)} duplicate record id(s), e.g. {', '.join(uniq[:3])}; "
                        "ids must be unique (use --duplicate-ids rename to suffix repeats with _dupK)")
            elif self.n_renamed:
                first = self.renamed[0]
                log.warning("renamed %d duplicate record ids (e.g. %s -> %s_dup2)", self.n_renamed, first, first)
            if self.n_empty:
                log.warning("%d record(s) have an empty sequence; they yield no chunks", self.n_empty)
        finally:
            self.close()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


@dataclass
class _Block:
    """A block of records read and not yet taken: in memory, or spilled (offset, bytes) to the spool."""
    n: int
    records: list[Record] | None
    spilled: tuple[int, int] | None = None


class RecordStream:
    """A FASTA or FASTQ input read by a background thread (``background=False``: in the constructor), so that
    the records read so far can be worked on while the rest is read. ``result()`` waits for the end
    and raises the InputError the file earned -- some checks (duplicate ids with "error", no records,
    only empty sequences) can only fail at the end.

    ``keep=True``: every record stays in ``records`` (ids already final: duplicates renamed as they
    come), which ``result()`` returns. ``keep=False`` (a fast run): the records are taken in order,
    a segment at a time (``take``), and let go of once taken; memory holds at most ``window``
    records read ahead of the taker, the rest are spilled to an unnamed file in ``spool_dir`` (read
    back when taken): the input is read to its end at full speed (its identity, the manifest a
    killed run resumes from) in memory that does not grow with it."""

    def __init__(self, path: str | Path, duplicate_ids: str = "error", background: bool = True,
                 pause_while: Callable[[], bool] | None = None, pause_after: int = 0, keep: bool = True,
                 window: int = 1 << 17, spool_dir: Path | None = None):
        """``pause_while()``: once ``pause_after`` records are read, reading waits while it is true
        (e.g. while this process loads models: reading further would only slow that down)."""
        if duplicate_ids not in ("error", "rename"):
            raise InputError(f"duplicate_ids must be 'error' or 'rename', not {duplicate_ids!r}")
        self.path, self.duplicate_ids = path, duplicate_ids
        self.keep, self.window, self.spool_dir = keep, window, spool_dir
        self.records: list[Record] = []   # keep=True: every record
        self.n_read = 0                   # records read so far
        self.fraction = 0.0              # of the file read so far (0.0 until done for a stream)
        self.name = str(path)            # for messages: the path, or "standard input"
        self.identity: dict | None = None   # once read: {size, sha256} of the bytes parsed (io.source)
        self.flags = FlagCount()         # reads holding X
        self.read_s: float | None = None  # once done
        self.error: BaseException | None = None
        self._done = False
        self._cond = threading.Condition()
        self._pause_while, self._pause_after = pause_while, pause_after
        self._blocks: deque[_Block] = deque()   # keep=False: read, not yet taken
        self._in_memory = 0                      # records of _blocks in memory
        self._spill = None                       # the spool file, once needed
        self._spill_size = 0
        self._taken: list[Record] = []           # the taker's records from _taken_first on
        self._taken_first = 0
        if background:
            threading.Thread(target=self._read, name="read-fasta", daemon=True).start()
        else:
            self._read()

    def _read(self) -> None:
        t = time.perf_counter()
        src = None
        check = None
        try:
            src = open_source(self.path)   # once: a pipe or standard input cannot be read twice
            self.name, self.flags = src.name, src.flags
            check = _IdCheck(src.name, self.duplicate_ids, self.spool_dir)
            with gc_paused():   # millions of small objects and no cycles: the collector's passes cost a quarter of the time
                for block in iter_fasta_blocks(src, self._progress):
                    self._add(check.block(block))
                    while self._pause_while is not None and self.n_read >= self._pause_after \
                            and self._pause_while():
                        time.sleep(0.02)
            self.identity = src.finish()   # refuses a file that changed while it was read
            self.fraction = 1.0
            check.finish()
            if self.flags.reads:
                log.warning("%d read(s) hold %s, e.g. %s: their codons are dropped, as the original VirNucPro "
                            "does", self.flags.reads, FLAGGED_WORDS, self.flags.example)
        except BaseException as exc:  # noqa: BLE001 - raised in the consumers' threads by result()
            changed = src.changed() if src is not None and isinstance(exc, (InputError, *_READ_ERRORS)) else None
            self.error = InputError(changed) if changed else exc   # a truncated file: that is the cause
        finally:
            if check is not None:
                check.close()
            if src is not None:
                src.release()
            with self._cond:
                self.read_s = time.perf_counter() - t
                self._done = True
                self._cond.notify_all()

    def _add(self, block: list[Record]) -> None:
        if self.keep:
            with self._cond:
                self.records.extend(block)
                self.n_read += len(block)
                self._cond.notify_all()
            return
        entry = _Block(len(block), block)
        if self._in_memory + len(block) > self.window:   # far ahead of the taker: to disk
            import pickle
            import tempfile
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(dir=self.spool_dir)
            data = pickle.dumps(([r.id for r in block], [r.seq for r in block]), protocol=pickle.HIGHEST_PROTOCOL)
            os.pwrite(self._spill.fileno(), data, self._spill_size)
            entry = _Block(len(block), None, (self._spill_size, len(data)))
            self._spill_size += len(data)
        with self._cond:
            self._blocks.append(entry)
            self._in_memory += len(block) if entry.records is not None else 0
            self.n_read += len(block)
            self._cond.notify_all()

    def take(self, a: int, b: int) -> list[Record]:
        """Records ``a`` to ``b`` (at most ``b``; they must have been read). With ``keep=False`` they
        are taken in order: the records before ``a`` are let go of, and cannot be taken again."""
        if self.keep:
            return self.records[a:b]
        if a < self._taken_first:
            raise ValueError(f"records from {self._taken_first} on only: {a} was let go of")
        while self._taken_first + len(self._taken) < b:
            with self._cond:
                if not self._blocks:
                    break
                entry = self._blocks.popleft()
                if entry.records is not None:
                    self._in_memory -= entry.n
            self._taken.extend(entry.records if entry.records is not None else self._unspill(entry))
        del self._taken[:a - self._taken_first]
        self._taken_first = a
        return self._taken[:b - a]

    def _unspill(self, entry: _Block) -> list[Record]:
        import pickle
        off, n = entry.spilled
        ids, seqs = pickle.loads(os.pread(self._spill.fileno(), n, off))   # our own bytes, this process's
        return [Record(i, q) for i, q in zip(ids, seqs)]

    def close(self) -> None:
        """Let go of the spool (also when the stream is dropped: the file has no name)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

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
            return self._cond.wait_for(lambda: self.n_read > n or self._done, timeout)

    def result(self, timeout: float | None = None) -> list[Record] | None:
        """Once the whole input is read and checked: every record (``keep=True``), else None."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"{self.name}: still reading after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.records if self.keep else None

    def expected_reads(self) -> int:
        """All reads once done; before, the reads so far scaled by the share of the file read (the
        reads so far for a stream of unknown length)."""
        n = self.n_read
        if self._done or not n or self.fraction <= 0.0:
            return n
        return int(n / max(self.fraction, 1e-9))
