"""A worker's whole job, the same in the ``predict`` process (one worker, a torchrun rank) and in a
worker process: passes of the engine's loop over claimed units, each finished unit checkpointed off
the GPU loop's thread, until every unit of the (possibly still growing) plan is done.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import numpy as np

from virnucpro.core.telemetry import Telemetry, peak_gpu_mem_gib
from virnucpro.run.claims import HEARTBEAT_S, ClaimSource, all_done, wait_for_claimable
from virnucpro.run.faults import FAULT_EXIT, FaultPlan
from virnucpro.core.files import atomic_bytes
from virnucpro.run.rundir import RunDir

log = logging.getLogger(__name__)

MAX_PENDING_WRITES = 3      # checkpoints (with --save-embeddings: ~70 MB of pinned features each) queued
                            # for the writer thread; beyond that the GPU loop waits for the oldest


class WorkerTelemetry(Telemetry):
    """Telemetry whose every event names the worker; its clock is the run's (wall-clock aligned)."""

    def __init__(self, worker: str, run_epoch: float | None = None):
        super().__init__()
        self.worker = worker
        if run_epoch is not None:
            self.t0 = time.perf_counter() - (time.time() - run_epoch)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("worker", self.worker)
        return super().emit(event, **fields)


def load_fast_engine(models, device: str, engine_opts: dict, faults: FaultPlan | None = None):
    """(the fast engine of this worker, seconds it took to load). A fault plan's fake out-of-memory
    limit is the engine's own argument (only passed when set)."""
    from virnucpro.engines import make_engine
    t = time.perf_counter()
    fake_oom = {"fake_oom_tokens": faults.fake_oom_tokens} if faults and faults.fake_oom_tokens else {}
    engine = make_engine("fast", models, device, **engine_opts, **fake_oom)   # engine_opts carry its EngineConfig
    return engine, time.perf_counter() - t


def work(engine, plans, classifier, tel: Telemetry, rd: RunDir, owner: str, stop: threading.Event,
         stale_s: float | None = None, on_progress: Callable[[int, int], None] | None = None,
         faults: FaultPlan | None = None) -> dict:
    """A worker's whole job: passes of the engine's loop over claimed units until every unit is done
    (or ``stop``). ``plans``: a PlanBuilder (the plan may still be growing: a pass runs the units known
    when it starts, and goes on with the units planned meanwhile without pausing the GPU). Between
    passes, waits for new units or units held by others; takes over released claims, and with
    ``stale_s``, claims whose heartbeat stopped. ``faults``: what a test injects. Returns the
    summed totals."""
    faults = faults or FaultPlan()
    totals: dict[str, Any] = {}
    done_here: list[int] = []
    beat_stop = threading.Event()
    sources: list[ClaimSource] = []

    def heartbeat() -> None:
        while not beat_stop.wait(HEARTBEAT_S):
            for s in sources:
                s.touch()

    beat = threading.Thread(target=heartbeat, name="claim-heartbeat", daemon=True)
    beat.start()
    t_start = tel.now()
    from concurrent.futures import ThreadPoolExecutor
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
    pending: list = []
    try:
        while not stop.is_set():
            while not plans.wait(0, 0.5) and not stop.is_set():   # the first units (or an empty plan)
                pass
            prep = plans.snapshot()
            n_units = len(prep.plan.units)
            sources[:] = [ClaimSource(rd, owner, n_units, stop)]

            def more() -> tuple | None:
                """The units planned since the pass (or its last extension) began, if any."""
                nonlocal n_units
                if stop.is_set() or plans.error is not None or plans.n_units <= n_units:
                    return None
                grown = plans.snapshot()
                n_units = len(grown.plan.units)
                sources.append(ClaimSource(rd, owner, n_units, stop))
                return grown, sources[-1]

            def save(u: int, frames: np.ndarray, scores: np.ndarray, features: np.ndarray | None) -> None:
                if faults.disk_full_owner == owner:
                    import errno
                    raise OSError(errno.ENOSPC, "No space left on device", str(rd.unit_path(u)))
                if features is not None:   # --save-embeddings: the part before the unit (its commit point)
                    from virnucpro.io.outputs import save_embedding_part
                    save_embedding_part(rd.root, u, frames, features)   # in the run dir until the outputs' commit
                rd.save_unit(u, frames, scores)
                for s in list(sources):
                    if s.holds(u):
                        s.finished(u)
                done_here.append(u)
                if faults.dies_after(owner, len(done_here)):
                    os._exit(FAULT_EXIT)

            def on_unit(u: int, frames: np.ndarray, scores: np.ndarray, info: dict) -> None:
                for f in [f for f in pending if f.done()]:   # a failed write stops the run now
                    pending.remove(f)
                    f.result()
                rd.mark_computed(u)
                pending.append(writer.submit(save, u, frames, scores, info.get("features")))   # off the GPU loop
                while len(pending) > MAX_PENDING_WRITES:   # storage slower than the GPUs: wait, do not pile up
                    pending.pop(0).result()
                if faults.unit_delay:
                    time.sleep(faults.unit_delay)

            def on_unit_start(u: int) -> None:
                rd.mark_started(u)
                if faults.poison_unit == u:
                    os._exit(FAULT_EXIT)

            t = engine.run(prep, classifier, tel, sources[0], on_unit, on_progress=on_progress, stop=stop,
                           on_unit_start=on_unit_start, more=more)
            for f in pending:
                f.result()
            pending.clear()
            for s in sources:
                s.release_all()                    # units dropped by a stop go back to the pool
            add_totals(totals, t)
            if t.get("stopped") or not wait_for_claimable(rd, plans, n_units, stop, stale_s):
                break
    finally:
        writer.shutdown(wait=True)
        beat_stop.set()
        for s in sources:
            s.release_all()
    totals["units"] = len(done_here)
    totals["unit_list"] = done_here
    totals["t_start"], totals["t_end"] = round(t_start, 4), round(tel.now(), 4)   # on the run's clock
    totals["stopped"] = stop.is_set() and not all_done(rd, plans)
    return totals


def add_totals(acc: dict, t: dict) -> None:
    """Sum the numeric totals ``t`` into ``acc`` (the run's window, t_start/t_end, excepted)."""
    for k, v in t.items():
        if k in ("t_start", "t_end"):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            acc[k] = acc.get(k, 0) + v


class Stop(threading.Event):
    """A run's (or a worker's) stop; ``signum``: the signal that asked for it first (None: the run
    stopped itself, or its coordinator asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None


def install_stop_handlers(stop: threading.Event, forward_to: int | None = None) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (finish the current batch, leave a resumable state); a second
    SIGINT (Ctrl-C) interrupts at once. ``forward_to``: a worker process's coordinator, sent SIGTERM
    once, so that a signal to any process of a run stops the whole run (the coordinator's own stop
    request comes through the worker's lifeline, not as a signal, and is not sent back). The note
    goes to the log file only: the command ends with one line naming the signal. Returns a
    function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen: list[int] = []

    def handler(signum, frame):
        seen.append(signum)
        if signum == signal.SIGINT and seen.count(signal.SIGINT) > 1:
            raise KeyboardInterrupt
        if len(seen) > 1:   # e.g. the group's SIGTERM, then a loader's or a worker's forwarded one
            return
        if isinstance(stop, Stop) and stop.signum is None:
            stop.signum = signum
        log.info("signal %s: stopping after the current batch (rerun with --resume to continue)",
                 signal.Signals(signum).name)
        stop.set()
        if forward_to is not None:
            try:
                os.kill(forward_to, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for s in old:
        signal.signal(s, handler)
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def finish_worker(rd: RunDir, owner: str, device: str, engine, totals: dict, tel: Telemetry) -> dict:
    """Write the worker's totals for the coordinator and emit its ``worker_summary``."""
    stats = {"worker": owner, "device": device, **totals, "mfu_esm": getattr(engine, "mfu_esm", None),
             "peak_tflops": getattr(engine, "peak_tflops", None),
             "peak_gpu_mem_gib": peak_gpu_mem_gib(device)}
    busy = totals.get("busy_s", 0.0)
    tel.emit("worker_summary", busy_s=round(busy, 4), units=totals.get("units", 0),
             tokens_per_s=round(totals.get("esm_tokens", 0) / busy, 1) if busy else None,
             esm_tokens=totals.get("esm_tokens", 0), device=device)
    atomic_bytes(rd.workers / f"{owner}.json", json.dumps(stats, default=str).encode())
    return stats


