"""The input's bytes, read once: a file, '-' (standard input), a pipe, a FIFO or a process
substitution (``<(zcat reads.fq.gz)``), gzip detected from its first bytes whatever the name.

An input is opened once and read front to back in one pass: a pipe cannot be read twice. (An
earlier reader read the first bytes, closed and reopened the file, so a process substitution lost
its start and a FIFO waited for a second writer forever; a checksum thread opened the file by name
again, so deleting the input mid-run was an internal error.) The bytes are hashed as the parser
reads them: the input's identity (size, sha256) is that of the bytes parsed; for a compressed input,
of its compressed bytes, as a checksum of the file would give. A regular file's size and mtime at
the end of the read are compared with those at the start: a file changed while it was read
(truncated, appended to, rewritten) is refused, since the reads parsed are not the file's reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import stat
import sys
from pathlib import Path

from virnucpro.errors import InputError
from virnucpro.io.records import FlagCount

log = logging.getLogger(__name__)

STDIN = "-"
_READ_BYTES = 1 << 20   # bytes asked of the input per read


class InputSource(io.RawIOBase):
    """The input opened once (``open_source``). A raw stream of its bytes that hashes and counts them
    as they are read; ``text()`` is the decoded text (decompressed first if gzip); ``finish()`` reads
    what is left, checks that a regular file did not change, and gives the identity."""

    def __init__(self, name: str, fh, start: os.stat_result | None, owned: bool = True):
        super().__init__()
        self.name = name                 # for messages: the path, or "standard input"
        self._fh, self._owned = fh, owned   # owned: closed by release()
        self._start = start              # a regular file's stat at the start; None for a stream
        # the bytes a regular file should give: all from where it is read (0, unless stdin is a
        # file something already read from)
        self._expect = start.st_size - os.lseek(fh.fileno(), 0, os.SEEK_CUR) if start is not None else None
        self._hash = hashlib.sha256()
        self.size = 0                    # bytes read so far
        self.flags = FlagCount()         # the parser's count of reads holding X
        self._head = self._read_exactly(2)
        self.gzipped = self._head == b"\x1f\x8b"

    def __str__(self) -> str:
        return self.name

    # the raw stream ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:   # the bytes read to detect gzip (already hashed)
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        n = self._fh.readinto(b) or 0
        if n:
            self._hash.update(memoryview(b)[:n])
            self.size += n
        return n

    def _read_exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self._fh.read(n - len(out))
            if not data:
                break
            out += data
        self._hash.update(out)
        self.size += len(out)
        return out

    def close(self) -> None:
        """Kept open when the text layers above it close (``finish`` reads on); ``release`` closes."""

    def release(self) -> None:
        """Close the input (standard input's descriptor stays open)."""
        if self._owned:
            self._fh.close()
        super().close()

    # what the reader uses ---------------------------------------------------------------------
    def text(self) -> io.TextIOBase:
        """The input as text (UTF-8, undecodable bytes replaced, any line ending read as '\\n')."""
        buf: io.BufferedIOBase = io.BufferedReader(self, _READ_BYTES)
        if self.gzipped:
            buf = gzip.GzipFile(fileobj=buf, mode="rb")
        return io.TextIOWrapper(buf, encoding="utf-8", errors="replace", newline=None)

    def fraction(self) -> float:
        """The share of a regular file's bytes read so far (0.0 for a stream of unknown length)."""
        return min(1.0, self.size / max(1, self._expect)) if self._expect is not None else 0.0

    def changed(self) -> str | None:
        """Why a regular file is not what it was at the start (size or mtime), or None."""
        if self._start is None or self.closed:
            return None
        a, b = self._start, os.fstat(self._fh.fileno())
        if (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns) and self.size <= self._expect:
            return None
        what = f"size {a.st_size:,} -> {b.st_size:,} bytes" if a.st_size != b.st_size else "modified"
        return (f"{self.name} changed while it was read ({what}; {self.size:,} bytes read): the reads "
                "parsed are not the file's; rerun once the file is complete and left alone")

    def finish(self) -> dict:
        """After the parser's last record: read what is left (normally nothing), refuse a regular
        file that changed, and return the identity {size, sha256} of every byte read."""
        buf = bytearray(_READ_BYTES)
        while self.readinto(buf):
            pass
        why = self.changed()
        if why is None and self._start is not None and self.size != self._expect:
            why = (f"{self.name} changed while it was read ({self._expect:,} bytes at the start, {self.size:,} "
                   "read): rerun once the file is complete and left alone")
        if why is not None:
            raise InputError(why)
        if self._start is not None and os.fstat(self._fh.fileno()).st_nlink == 0:
            log.warning("%s was deleted while it was read; the run goes on with the %s bytes read", self.name,
                        f"{self.size:,}")
        return {"size": self.size, "sha256": self._hash.hexdigest()}


def is_stream(path: str | Path) -> bool:
    """Whether the input is standard input, a pipe, a FIFO or a device (not a regular file): it
    can be read once only (checked by name, without opening it: opening a FIFO would wait)."""
    if str(path) == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_source(path: str | Path) -> InputSource:
    """Open the input once: ``-`` is standard input. InputError for what a user must fix."""
    if str(path) == STDIN:
        return _open_stdin()
    p = Path(path)
    try:
        fh = open(p, "rb", buffering=0)
    except FileNotFoundError:
        raise InputError(f"input file not found: {p}") from None
    except IsADirectoryError:
        raise InputError(f"input is a directory, expected a FASTA or FASTQ file: {p}") from None
    except OSError as exc:
        raise InputError(f"cannot open the input {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fh.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"input is a directory, expected a FASTA or FASTQ file: {p}")
        return InputSource(str(p), fh, st if stat.S_ISREG(st.st_mode) else None)
    except BaseException:
        fh.close()
        raise


def _open_stdin() -> InputSource:
    stdin = sys.stdin
    if stdin is None:
        raise InputError("input '-': this process has no standard input")
    try:
        if stdin.isatty():
            raise InputError("input '-' is standard input, but it is a terminal: pipe the reads in "
                             "(e.g. zcat reads.fq.gz | virnucpro predict - -o OUTDIR)")
        fh, owned = open(stdin.fileno(), "rb", buffering=0, closefd=False), True
    except (AttributeError, OSError, ValueError):   # replaced by an object without a descriptor
        fh, owned = getattr(stdin, "buffer", stdin), False
        if not hasattr(fh, "readinto"):
            raise InputError("input '-': standard input cannot be read") from None
    st = os.fstat(fh.fileno()) if _has_fileno(fh) else None
    return InputSource("standard input", fh, st if st is not None and stat.S_ISREG(st.st_mode) else None, owned)


def _has_fileno(fh) -> bool:
    try:
        fh.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False
