"""How worker processes start: from a fork server that imported torch and the engine while the
coordinator read its input, or as fresh interpreters (spawn).

The fork server saves ~3 s of start-up per worker against a fresh interpreter. It never runs
torch ops, so forking it is safe (forking a process that ran OpenMP work is not).
``VIRNUCPRO_START_METHOD=spawn`` (an operator setting) starts fresh interpreters instead. The server
must not import torch._inductor: on an H200 that initialised CUDA in the server, and a child forked
after that cannot use CUDA; a worker that finds itself so exits ``BAD_FORK_EXIT`` and the
coordinator starts its replacement with spawn (docs/multi-gpu.md, "How the work is cut and shared").
"""

from __future__ import annotations

import os

from virnucpro.run.faults import FaultPlan

# What the fork server imports before it forks workers (worker_process holds the workers' entry point).
PRELOAD = ["virnucpro.run.worker_process", "virnucpro.engines.fast", "virnucpro.models.classifier", "esm"]


def start_method() -> str:
    """``forkserver`` (the default) or ``spawn``: ``VIRNUCPRO_START_METHOD``, where this platform has it."""
    import multiprocessing as mp
    wanted = os.environ.get("VIRNUCPRO_START_METHOD", "forkserver")
    return wanted if wanted in mp.get_all_start_methods() else "spawn"


def worker_context(method: str | None = None):
    """The multiprocessing context that starts workers."""
    import multiprocessing as mp
    method = method or start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart_workers() -> None:
    """Start the fork server now, so that it imports torch while this process reads the input."""
    if start_method() == "forkserver":
        worker_context()
        from multiprocessing import forkserver
        forkserver.ensure_running()


def in_bad_fork(method: str | None, faults: FaultPlan | None = None) -> bool:
    """This process was forked from one that had initialised CUDA (it cannot use CUDA itself).
    ``faults.bad_fork`` pretends so in a worker that a fork server started (``method``)."""
    if faults is not None and faults.bad_fork and method == "forkserver":
        return True
    try:
        import torch
        return bool(torch.cuda._is_in_bad_fork())
    except Exception:   # private API: absent in another torch
        return False
