"""Files written whole or not at all, and the sha256 of a file.

Every file virnucpro writes for someone else to read (outputs, checkpoints, run-directory state,
models, workloads) goes through here: it is written under a temp name in the same directory and
renamed into place only when complete (``os.replace`` is atomic within one file system), so a
killed or failed writer leaves the previous file, or none, never a truncated one. A temp file
that a failed writer made is removed; one that a killed process left is hidden (its name starts
with a dot) and ends in ``.tmp``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def _current_umask() -> int:
    mask = os.umask(0)     # the only way to read it; done once, at import (umask is per process, not per thread)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
FILE_MODE = 0o666 & ~_UMASK    # what open() would have given the file


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, fsync: bool = False) -> Iterator[IO]:
    """A handle on a temp file beside ``path`` (``.NAME.XXXXXXXX.tmp``, unique per writer), renamed
    to ``path`` when the block ends without an exception and removed when it raises. ``mode``:
    ``"w"`` (text, UTF-8, ``\\n`` line ends) or ``"wb"``. ``fsync``: the data are on disk before
    the rename (for a checkpoint that later state relies on)."""
    path = Path(path)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else "utf-8", newline=None if binary else "\n") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)   # mkstemp makes 0600; the file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (on disk before the rename unless ``fsync=False``)."""
    with atomic_write(path, "wb", fsync=fsync) as fh:
        fh.write(data)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """For writers that want a file name rather than a handle (``torch.save``, safetensors): a temp
    path to write, renamed to ``path`` when the block ends without an exception. The temp file is
    ``NAME.tmp`` inside a fresh hidden folder beside ``path`` (``.NAME.XXXXXXXX.tmp/``): unique per
    writer, yet always the same file name, because ``torch.save`` names the archive inside the file
    after it (``NAME.tmp`` -> ``NAME``) and the same model must give the same bytes (stable
    fingerprints of synthetic models)."""
    path = Path(path)
    folder = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(folder) / f"{path.name}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of the file's content, read ``block`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
