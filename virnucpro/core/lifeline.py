"""Processes that end with the process they work for, and stop when it stops.

- ``die_with_parent(sig, parent)``: Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``): the
  kernel sends ``sig`` to this process when its parent goes, kill -9 included. The parent is the
  *thread* that forked this process: call it only in a child whose parent forked it from a thread
  that lives as long as the child should (a DataLoader's loader, started by the GPU loop's thread).
- ``Lifeline``: a one-way pipe from a coordinator to one worker process. The writer end lives in
  the coordinator only (multiprocessing hands a child just the descriptors it is given), so the
  worker reads end-of-file the moment the coordinator is gone, whatever killed it, on any OS and
  whoever the worker's OS parent is (a fork server outlives the coordinator by design). A message
  on it asks the worker to stop after its current batch.
- ``stop_parent_on_signal(parent)``: in a helper process (a DataLoader's loader) SIGTERM/SIGINT ask
  the parent to stop (it shuts the helper down) instead of killing the helper under it: a loader
  killed by a signal made the GPU loop raise "DataLoader worker ... killed by signal" in the
  middle of a clean stop (issue 16, item 4).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Callable

PR_SET_PDEATHSIG = 1      # <linux/prctl.h>
STOP = b"stop"


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have the kernel send ``sig`` to this process when its parent (thread) ends. ``parent``: the
    pid the parent had; if it is already gone (before the prctl), ``sig`` is sent now. False where
    the OS has no such signal (not Linux): the caller relies on its other checks."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


class Lifeline:
    """The coordinator's end of one worker's lifeline; ``reader`` goes to the worker (pickled with
    its start arguments, before ``close_reader``)."""

    def __init__(self, ctx):
        self.reader, self.writer = ctx.Pipe(duplex=False)

    def close_reader(self) -> None:
        """Once the worker has started (it holds its own copy)."""
        self.reader.close()

    def ask_stop(self) -> None:
        """The worker stops after its current batch (as on SIGTERM)."""
        try:
            self.writer.send_bytes(STOP)
        except OSError:   # the worker is gone
            pass

    def close(self) -> None:
        self.writer.close()


def watch_lifeline(reader, on_stop: Callable[[], None], on_lost: Callable[[], None]) -> threading.Thread:
    """In the worker: a daemon thread that calls ``on_stop()`` for each stop request and
    ``on_lost()`` (which should end the process) once the coordinator is gone."""

    def watch() -> None:
        while True:
            try:
                reader.recv_bytes()
            except (EOFError, OSError):
                on_lost()
                return
            on_stop()

    t = threading.Thread(target=watch, name="lifeline", daemon=True)
    t.start()
    return t


def stop_parent_on_signal(parent: int) -> None:
    """SIGTERM and SIGINT to this (helper) process send SIGTERM to ``parent`` once; the helper goes
    on serving it until the parent shuts it down. (The group's Ctrl-C reaches the parent itself;
    SIGTERM, never SIGINT, is forwarded so that it does not count as the parent's second Ctrl-C.)"""
    asked: list[int] = []

    def handler(signum, frame) -> None:
        if asked:
            return
        asked.append(signum)
        try:
            os.kill(parent, signal.SIGTERM)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
