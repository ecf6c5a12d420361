"""The coordinator of worker processes on one host (the ``predict`` process): it spawns one worker
per device string, watches them, releases the claims of a dead one and starts a replacement
(bounded), restarts a worker from a bad fork with spawn, stops the run at once when a worker's
writes are refused, and gives up on a unit that killed its workers ``max_unit_retries`` times,
naming it and its reads (or, with --skip-failing-units, skips it).

Each worker holds the reader end of a lifeline whose writer only this process has: the workers
exit the moment this process is gone (kill -9 included), and a stop is asked through it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from virnucpro.core.lifeline import Lifeline
from virnucpro.core.telemetry import Telemetry
from virnucpro.errors import VirnucproError
from virnucpro.run.claims import all_done
from virnucpro.run.rundir import RunDir
from virnucpro.run.spawn import start_method, worker_context
from virnucpro.run.worker_process import BAD_FORK_EXIT, STOPPED_EXIT, STORAGE_EXIT, WorkerSpec, worker_main

log = logging.getLogger(__name__)


@dataclass
class Coordinator:
    """Spawns one process per device string, watches them, re-queues the units of dead ones."""
    base: WorkerSpec
    devices: list[str]
    rd: RunDir
    tel: Telemetry
    describe_unit: Callable[[int], str]
    max_unit_retries: int = 3
    skip_failing_units: bool = False
    max_restarts: int | None = None     # replacements of dead workers in all (default 2 x workers)
    on_poll: Callable[[set[int]], None] | None = None
    procs: dict[str, Any] = field(default_factory=dict)    # owner -> (process, device) of live workers
    lifelines: dict[str, Lifeline] = field(default_factory=dict)   # owner -> its lifeline (live workers)
    started: list[str] = field(default_factory=list)
    start_method: str | None = None     # None: start_method(); "spawn" after a worker came from a bad fork
    restarts: int = 0
    retries: dict[int, int] = field(default_factory=dict)      # unit -> deaths of workers that had started it
    generation: dict[str, int] = field(default_factory=dict)   # w1 -> k: its replacements are w1.1 .. w1.k

    def _spawn(self, owner: str, device: str) -> None:
        method = self.start_method or start_method()
        ctx = worker_context(method)
        line = Lifeline(ctx)
        spec = dataclasses.replace(self.base, owner=owner, device=device, env=dict(os.environ), cwd=os.getcwd(),
                                   start_method=method, coordinator_pid=os.getpid(), lifeline=line.reader)
        p = ctx.Process(target=worker_main, args=(spec,), name=f"virnucpro-{owner}", daemon=False)
        try:
            p.start()
        finally:
            line.close_reader()
        self.procs[owner] = (p, device)
        self.lifelines[owner] = line
        self.started.append(owner)

    def start(self) -> None:
        """Spawn the workers; they claim units once the manifest with their run token exists."""
        for k, dev in enumerate(self.devices):
            self._spawn(f"w{k}", dev)

    def kill_all(self) -> None:
        for p, _ in self.procs.values():
            if p.is_alive():
                p.kill()
        for p, _ in self.procs.values():
            p.join(timeout=10)

    def run(self, stop: threading.Event, plans) -> list[dict]:
        """Watch the workers until every unit of ``plans`` (a PlanBuilder, possibly still growing)
        is done (or ``stop`` and they stopped); their stats."""
        if self.max_restarts is None:
            self.max_restarts = 2 * len(self.devices)
        forwarded = False
        all_done_at = None
        try:
            while True:
                time.sleep(0.05 if all_done_at is None else 0.02)   # the run's end is seen within 50 ms
                done = self.rd.done_units()
                if self.on_poll:
                    self.on_poll(done)
                if stop.is_set() and not forwarded:
                    for owner in self.procs:
                        self.lifelines[owner].ask_stop()
                    forwarded = True
                for owner, (p, dev) in list(self.procs.items()):
                    if not p.is_alive():
                        p.join()
                        del self.procs[owner]
                        self.lifelines.pop(owner).close()
                        self._exited(owner, dev, p.exitcode, stop, plans)
                plans.check()
                if all_done_at is None and all_done(self.rd, plans):
                    all_done_at = time.time()
                if not self.procs:
                    break
                if all_done_at is not None and all((self.rd.workers / f"{o}.json").exists() for o in self.procs):
                    break   # every live worker has written its totals; what is left of them is exiting
                if all_done_at is not None and time.time() - all_done_at > 10:
                    for owner, (p, _) in self.procs.items():   # e.g. a replacement still loading
                        p.kill()
        except BaseException:
            self.kill_all()
            raise
        return [s for s in (self._stats(o) for o in self.started) if s is not None]

    def _exited(self, owner: str, dev: str, code: int | None, stop: threading.Event, plans) -> None:
        """A worker process has ended with exit ``code``: what follows from it."""
        if code in (0, STOPPED_EXIT):
            return
        if code == STORAGE_EXIT:   # exit 3: the machine's problem (the worker's log names the cause)
            from virnucpro.errors import EnvironmentProblem
            then = ", then rerun with --resume: finished work units are kept" if self.rd.done_units() else ", then rerun"
            raise EnvironmentProblem(f"worker {owner} ({dev}) could not write its results: the disk is full or the "
                                     f"output directory is not writable (the cause is in virnucpro.log; free disk "
                                     f"space or fix permissions{then})")
        if code == BAD_FORK_EXIT:   # (a spawned worker never is in a bad fork: no loop)
            if self.start_method != "spawn":
                log.warning("worker %s could not use CUDA (forked after CUDA was initialised); "
                            "starting workers with spawn from now on", owner)
            self.tel.emit("worker_restart", worker=owner, device=dev, why="bad fork", start_method="spawn")
            self.start_method = "spawn"
            self.rd.release_owner(owner)
            self._spawn(owner + "s", dev)
            return
        released = self.rd.release_owner(owner)
        self.tel.emit("worker_lost", worker=owner, device=dev, exitcode=code, released_units=released.lost,
                      started_units=released.started)
        log.warning("worker %s (%s) died (exit code %s); its units %s go back to the queue",
                    owner, dev, code, released.lost)
        for u in released.started:
            self._count_attempt(u)
        remaining = plans.n_units - len(self.rd.done_units()) + (0 if plans.complete else 1)
        if stop.is_set() or remaining <= 0:
            return
        if self.restarts >= self.max_restarts:
            if not self.procs:
                raise VirnucproError(f"workers died {self.restarts + 1} times; giving up (see the log). "
                                     "Finished units are kept: rerun with --resume")
            return
        if not self.procs or remaining > len(self.procs):
            base = owner.split(".")[0]
            self.generation[base] = self.generation.get(base, 0) + 1
            self.restarts += 1
            self._spawn(f"{base}.{self.generation[base]}", dev)

    def _count_attempt(self, u: int) -> None:
        """Unit ``u`` was lost with a worker that had started it: at ``max_unit_retries`` such losses,
        skip it (--skip-failing-units) or stop the run naming it."""
        self.retries[u] = n = self.retries.get(u, 0) + 1
        if n < self.max_unit_retries:
            return
        if not self.skip_failing_units:
            raise VirnucproError(f"unit {u} was lost with its worker {n} times; giving up. It holds "
                                 f"{self.describe_unit(u)}. See the log; finished units are kept (rerun with --resume)")
        why = f"unit {u} was lost with its worker {n} times; skipped ({self.describe_unit(u)})"
        self.rd.skip_unit(u, why)
        self.tel.emit("unit_skipped", unit=u, attempts=n)
        self.max_restarts += self.max_unit_retries   # those deaths were this unit's
        log.error("%s: its frames get no prediction (--skip-failing-units)", why)

    def _stats(self, owner: str) -> dict | None:
        try:
            return json.loads((self.rd.workers / f"{owner}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
