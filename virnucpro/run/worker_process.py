"""A worker process: its entry point (``worker_main``), what it is handed (``WorkerSpec``), and its
exit codes, which tell the coordinator what happened.

A worker starts before the coordinator has read the input: it loads its models, waits for the
manifest that carries its run's token (its log records wait in memory meanwhile), plans from the
plan the coordinator publishes, and runs ``virnucpro.run.worker.work``.

A worker lives only as long as its coordinator: its lifeline (``virnucpro.core.lifeline``) reads
end-of-file the moment the coordinator is gone (kill -9 included) and the worker exits at once,
what it had in flight redone by --resume; its loaders die with it (parent-death signal). SIGTERM or
SIGINT to a worker or to one of its loaders stops the whole run cleanly (the coordinator is told).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virnucpro.core.lifeline import die_with_parent, watch_lifeline
from virnucpro.run.faults import FaultPlan
from virnucpro.run.rundir import RunDir
from virnucpro.run.spawn import in_bad_fork
from virnucpro.run.worker import Stop, WorkerTelemetry, finish_worker, install_stop_handlers, load_fast_engine, work

log = logging.getLogger(__name__)

STOPPED_EXIT = 3            # a worker that stopped on SIGTERM/SIGINT, leaving a resumable state
BAD_FORK_EXIT = 4           # a worker forked from a process that had initialised CUDA: restart it with spawn
STORAGE_EXIT = 5            # a worker's write was refused (disk full, read-only, no permission): not retried
ORPHAN_EXIT = 6             # the coordinator is gone: nobody would collect the work (no one sees this code)


@dataclass
class WorkerSpec:
    """What a spawned worker needs (picklable): it loads its models, then follows the plan the
    coordinator publishes in the run directory (its units' batches and sequences)."""
    owner: str
    device: str
    chunk_length: int                   # (which classifier)
    models: Any                         # layout.ModelSet
    allow_classifier_mismatch: bool
    engine_opts: dict                   # make_engine's arguments: the EngineConfig, budget, ...
    outdir: Path
    log_file: Path
    run_epoch: float
    threads: int | None = None
    stale_s: float | None = None
    env: dict | None = None             # the coordinator's environment and working directory when it
    cwd: str | None = None              # started the worker (a fork server's may be older)
    run_token: str | None = None        # the manifest of this run carries it (an older one in OUTDIR does not)
    start_method: str | None = None     # how the coordinator started it (forkserver | spawn)
    faults: FaultPlan | None = None     # what a test injects (None in a real run)
    coordinator_pid: int | None = None  # told when a signal stops this worker
    lifeline: Any = None                # the reader end of this worker's lifeline (a multiprocessing Connection)


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a spawned worker process; exits 0 (all done), STOPPED_EXIT, or 1 (error)."""
    if spec.env is not None:
        os.environ.clear()
        os.environ.update(spec.env)
    if spec.cwd is not None:
        os.chdir(spec.cwd)
    stop = Stop()
    install_stop_handlers(stop, forward_to=spec.coordinator_pid)
    if spec.lifeline is not None:
        watch_lifeline(spec.lifeline, stop.set, _orphaned)
    if spec.start_method == "spawn":   # its parent is the coordinator (a fork server's child has the server)
        die_with_parent(signal.SIGKILL, spec.coordinator_pid)
    if in_bad_fork(spec.start_method, spec.faults):   # the coordinator says so (once) and restarts it with spawn
        os._exit(BAD_FORK_EXIT)
    import multiprocessing as mp
    from virnucpro.core.mptemp import worker_tempdir
    worker_tempdir()   # a multiprocessing temp dir of its own, inside the run's (removed even after kill -9)
    if "fork" in mp.get_all_start_methods():   # a spawned child defaults to spawn: loader workers
        mp.set_start_method("fork", force=True)  # would re-import torch (seconds) on every pass
    from virnucpro.core.background import GIL_SWITCH_S
    sys.setswitchinterval(GIL_SWITCH_S)      # the GPU loop gets the interpreter lock back at once
    log_ready = DeferredLog(spec.log_file)   # until the coordinator has checked the input and made OUTDIR
    try:
        totals = run_worker(spec, stop, log_ready)
    except KeyboardInterrupt:   # a second Ctrl-C: the coordinator got it too and ends the run
        logging.shutdown()
        os._exit(STOPPED_EXIT)
    except BaseException as exc:  # noqa: BLE001 - the coordinator needs an exit code; the log the traceback
        from virnucpro.errors import is_environment_error
        if is_environment_error(exc):   # retrying cannot help: the coordinator stops the run with one line
            try:   # the traceback to the log file only (INFO): the terminal gets the coordinator's line
                log.info("worker %s: a write was refused", spec.owner, exc_info=True)
                logging.shutdown()
            except OSError:   # the log's disk is the full one
                pass
            os._exit(STORAGE_EXIT)
        log.exception("worker %s failed", spec.owner)
        # the traceback reaches the run's log once its manifest exists (for a bad input the
        # coordinator writes none and stops this worker instead)
        if not log_ready.done and wait_for_own_manifest(RunDir(spec.outdir), threading.Event(),
                                                        spec.run_token) is not None:
            log_ready.open()
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    os._exit(STOPPED_EXIT if totals.get("stopped") else 0)


class DeferredLog:
    """A worker starts before the coordinator has read the input (and made OUTDIR): its log records
    wait in memory until the run's manifest exists, then go to the run's log file in order."""

    def __init__(self, log_file: Path):
        import logging.handlers
        self.log_file, self.done = log_file, False
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1)
        root = logging.getLogger("virnucpro")
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.INFO)
        root.addHandler(self.buffer)
        root.propagate = False

    def open(self) -> None:
        """The log file may be written now: set it up and hand it the records kept so far."""
        from virnucpro.core.telemetry import setup_logging
        kept, self.buffer.buffer = list(self.buffer.buffer), []
        setup_logging(self.log_file, False)
        root = logging.getLogger("virnucpro")
        for record in kept:
            root.handle(record)
        self.done = True


def _orphaned() -> None:
    """The coordinator is gone (its end of the lifeline closed): end now. The checkpoints written
    are whole (temp file + rename); the units in flight are redone by --resume."""
    try:
        log.info("the coordinating process is gone; this worker exits")
    finally:
        os._exit(ORPHAN_EXIT)


def run_worker(spec: WorkerSpec, stop: threading.Event, log_ready: DeferredLog | None = None) -> dict:
    import torch
    from virnucpro.models.classifier import load_classifier
    from virnucpro.plan.planner import PlanBuilder, UnitStore, follow
    if spec.threads:
        torch.set_num_threads(spec.threads)
    tel = WorkerTelemetry(spec.owner, spec.run_epoch)
    t0, entered = time.perf_counter(), tel.now()   # entered: seconds after the run's start (spawn + imports)
    eo = spec.engine_opts
    # the models load with this process to themselves (the interpreter lock too): the coordinator
    # reads, chunks, translates and plans the input and publishes the plan unit by unit
    engine, engine_s = load_fast_engine(spec.models, spec.device, spec.engine_opts, spec.faults)
    clf, _ = load_classifier(spec.models.classifier, spec.chunk_length, spec.allow_classifier_mismatch)
    rd = RunDir(spec.outdir)
    manifest = wait_for_own_manifest(rd, stop, spec.run_token)
    if manifest is None:
        return finish_worker(rd, spec.owner, spec.device, engine, {"stopped": True}, tel)
    if log_ready is not None:
        log_ready.open()
    # the coordinator's plan, unit by unit as it publishes them (their data in its unit store)
    plans = PlanBuilder(eo["token_budget"], eo.get("batches_per_unit", 8), manifest["dna_budget"],
                        UnitStore(rd.plan_dir(), fresh=False))
    threading.Thread(target=follow, args=(plans, stop), name="plan-follower", daemon=True).start()
    tel.emit("worker_start", device=spec.device, pid=os.getpid(), startup_s=round(time.perf_counter() - t0, 3),
             entered_t=round(entered, 3), engine_s=round(engine_s, 3), phases=getattr(engine, "startup", None))
    from virnucpro.core.background import gc_paused
    with gc_paused():   # the units' sequences are many small objects: no collector passes over them
        totals = work(engine, plans, clf, tel, rd, spec.owner, stop, spec.stale_s, faults=spec.faults)
    return finish_worker(rd, spec.owner, spec.device, engine, totals, tel)


def wait_for_own_manifest(rd: RunDir, stop: threading.Event, token: str | None,
                          timeout: float = 3600.0) -> dict | None:
    """The coordinator writes the manifest (identity and token budget) before planning; this run's
    carries ``token`` (a manifest left in OUTDIR by an earlier run does not). None: stop or timeout
    (a worker whose coordinator is gone has exited through its lifeline)."""
    return rd.wait_for_manifest(token, timeout, give_up=stop.is_set)
