"""multiprocessing's temp folders of a run, in one folder that a later run removes after a kill -9.

multiprocessing makes a ``pymp-XXXX`` folder in TMPDIR in each process that needs one (the
coordinator, for the fork server's socket; each worker process, for the sockets through which its
DataLoader workers pass tensors) and removes it at a clean exit only: a kill -9 of a two-worker run
left three. Here every such folder of a run is made inside one folder of its own,
``TMPDIR/vnp-mp-XXXXXXXX/`` (``mXXXXXXXX/`` for the coordinator, ``wXXXXXXXX/`` per worker), whose ``.held`` file the coordinator keeps locked (flock) while it lives (and so do the DataLoader
workers it forks itself). At its end the coordinator removes the folder, unless the run killed its
worker processes (``keep_for_sweep``: their DataLoader children may still be exiting and unlinking
their sockets in there); and every run first sweeps the folders whose lock it can take:
their coordinator is dead, since the kernel dropped its lock (also across containers sharing TMPDIR,
unlike a pid test). The names are short because sockets are made in there and a socket path must fit
in 107 bytes: where TMPDIR is too long even for them, multiprocessing keeps its own folders.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "vnp-mp-"
HELD = ".held"
SOCKET_PATH_MAX = 107          # sun_path holds 108 bytes with the terminating NUL
_LISTENER = len("/listener-") + 8   # multiprocessing's socket name in its temp folder

_root: Path | None = None
_held_fd: int | None = None
_keep = False
_worker_held_fd: int | None = None


def use_run_tempdir() -> Path | None:
    """In the coordinator, before multiprocessing makes its own temp folder: sweep stale run folders,
    make this run's and point multiprocessing at a folder inside it. Returns the run folder, or None
    where this process already had a multiprocessing temp folder (left as it is)."""
    global _root, _held_fd
    from multiprocessing import process, util
    cfg = process.current_process()._config
    if _root is not None and cfg.get("tempdir") and _root_of(cfg["tempdir"]) == _root:
        return _root
    if cfg.get("tempdir"):
        return None
    sweep_stale()
    longest = len(os.path.abspath(tempfile.gettempdir())) + len(f"/{PREFIX}XXXXXXXX/wXXXXXXXX") + _LISTENER
    if longest > SOCKET_PATH_MAX:
        return None
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    fd = os.open(root / HELD, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _root, _held_fd = root, fd
    cfg["tempdir"] = tempfile.mkdtemp(prefix="m", dir=root)
    util.Finalize(None, _remove_root, args=(shutil.rmtree, root), exitpriority=-100)   # as multiprocessing's own
    return root


def keep_for_sweep() -> None:
    """The run killed its worker processes: leave its folder to the next run's sweep instead of
    removing it at exit."""
    global _keep
    _keep = True


def worker_tempdir() -> None:
    """In a worker process: its own temp folder (a fork-server child inherits the coordinator's,
    which goes when the coordinator exits while this worker's children may still clean up), inside
    the coordinator's run folder when it has one."""
    from multiprocessing import process
    cfg = process.current_process()._config
    inherited = cfg.pop("tempdir", None)
    root = _root_of(inherited) if inherited else None
    if root is not None and root.is_dir():
        mine = tempfile.mkdtemp(prefix="w", dir=root)   # removed with the run folder
        # held while this worker or any DataLoader child it forks (they inherit the descriptor) lives:
        # a sweep by a concurrent run must not pull the folder from under children still unlinking
        # their sockets after the coordinator is gone
        global _worker_held_fd
        _worker_held_fd = os.open(os.path.join(mine, HELD), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(_worker_held_fd, fcntl.LOCK_EX)
        cfg["tempdir"] = mine


def sweep_stale(tmp: str | Path | None = None) -> list[Path]:
    """Remove the run folders in ``tmp`` (default TMPDIR) whose coordinator and worker processes (with
    their DataLoader children) are all gone; returns them."""
    gone = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            fd = os.open(d / HELD, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:          # not ours to judge (no lock file yet, another user's)
            continue
        held = [fd]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its coordinator lives
            for w in d.glob(f"w*/{HELD}"):                    # ... or one of its workers' processes
                held.append(os.open(w, os.O_RDONLY | os.O_CLOEXEC))
                fcntl.flock(held[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        else:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
        finally:
            for h in held:
                os.close(h)
    return gone


def _root_of(tempdir: str) -> Path | None:
    parent = Path(tempdir).parent
    return parent if parent.name.startswith(PREFIX) else None


def _workers_alive(root: Path) -> bool:
    """Does a worker process of this run (or a DataLoader child of one) still hold its folder's lock?
    (A worker that died, e.g. of a poisoned unit, leaves children that exit after the run.)"""
    for w in root.glob(f"w*/{HELD}"):
        try:
            fd = os.open(w, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False


def _remove_root(rmtree, root: Path) -> None:
    global _root, _held_fd
    if not _keep and not _workers_alive(root):   # else the next run's sweep removes it
        rmtree(root, ignore_errors=True)
    if _held_fd is not None:
        os.close(_held_fd)
    _root, _held_fd = None, None
    from multiprocessing import process
    current = process.current_process()
    if current is not None:
        current._config["tempdir"] = None
