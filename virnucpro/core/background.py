"""A call running in a daemon thread whose result (or exception) the caller collects later."""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Any, Callable, Iterator

# Threads of a run hand the interpreter lock over within 0.1 ms instead of Python's 5 ms (set for the
# length of `predict` and in worker processes): a thread that copies weights or waits for the GPU
# releases the lock in every call into torch and, beside a thread busy in Python (reading, chunking),
# waited up to 5 ms each time to get it back -- on an H200 host ESM-2's weights took 5.7 s instead of
# ~1 s while the input was read (docs/benchmarks.md#h200-startup; on a CPU 40x slower, #cpu-gil).
GIL_SWITCH_S = 1e-4


class Background:
    """``fn(*args)`` started now in a daemon thread (a failing input ends the command at once, not
    after the call); ``result()`` waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "background"):
        self._done = threading.Event()
        self._value: Any = None
        self._exc: BaseException | None = None
        threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True).start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._exc = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError(f"still running after {timeout} s")
        if self._exc is not None:
            raise self._exc
        return self._value


_gc_lock = threading.Lock()
_gc_pauses = 0         # gc_paused blocks open now, in any thread
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (as it was after the last such block,
    in any thread, ends: the input's reader thread and the GPU loop overlap). While the GPUs work,
    the host holds millions of small objects (reads, chunks, frames, output rows); each full
    collection walks all of them with the interpreter lock held (up to 0.14 s on cpu-dev, five per
    50,000-read run), and the thread that feeds the GPU waits meanwhile. The run makes no garbage
    cycles worth collecting; reference counting frees the rest as usual."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
