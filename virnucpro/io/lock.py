"""One run at a time per output directory: an exclusive ``flock`` on ``OUTDIR/.virnucpro.lock``.

The run that writes OUTDIR (``predict``'s coordinator, torchrun rank 0, ``classify``) takes it before
it writes anything and keeps it until its outputs are committed; a second run is refused at once with
one line naming the directory and the holder's pid (exit 2), never queued. The kernel drops the lock
when its holder dies, kill -9 included, so a lock file left behind never blocks the next run: only a
live holder does. Worker processes never take it, and a process forked from the holder (DataLoader
workers) closes its copy at once, so only the holder itself keeps the lock alive.

A finished run unlinks the lock file while still holding it. A run that locked the file just before
it was unlinked (it opened it, the holder unlinked and released) finds the path gone or naming
another file, and locks the path afresh: two runs never hold locks on different files of one name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from virnucpro.errors import InputError
from virnucpro.io.paths import Paths

_held: set[int] = set()           # lock file descriptors this process holds
_held_guard = threading.Lock()


def _close_in_child() -> None:
    """In a forked child: close the inherited lock descriptors (never unlock: that would release the
    parent's lock too), so that a child outliving the holder does not keep the directory locked."""
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class OutdirBusy(InputError):
    """Another live run holds the output directory (exit 2)."""


@dataclass
class OutdirLock:
    path: Path
    fd: int | None
    stale_holder: str | None = None   # what a killed holder left in the file ("pid N"), if it was left

    @classmethod
    def acquire(cls, outdir: str | Path, what: str = "-o/--outdir") -> "OutdirLock":
        """Create ``outdir`` if need be and lock it, or raise ``OutdirBusy``."""
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        path = Paths(outdir).lock
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError(f"{path} is a symbolic link: refusing to use it as the lock of {outdir} "
                                     "(remove it)") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd) or "pid unknown"
                os.close(fd)
                raise OutdirBusy(f"{outdir} is in use by another virnucpro run ({holder}); wait for it to "
                                 f"finish or choose another {what}") from None
            if _same_file(fd, path):
                break
            os.close(fd)    # the path was unlinked (or replaced) before we locked: lock the path afresh
        stale = _read(fd) or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        with _held_guard:
            _held.add(fd)
        return cls(path, fd, stale)

    def release(self) -> None:
        """Unlink the lock file (if it is still ours) and drop the lock."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        with _held_guard:
            _held.discard(fd)
        os.close(fd)    # the lock goes with the last descriptor of this open file

    def __enter__(self) -> "OutdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
