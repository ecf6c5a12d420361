"""Claiming work units: who works on which unit, without a process that hands them out.

A worker claims the next unit that is neither done nor claimed, from its DataLoader's sampler, i.e. a
few batches before its GPU needs it, so claiming never stalls the GPU. When nothing is left to claim
but units claimed by others are unfinished, the worker waits; if such a claim is released (its owner
died) it claims it: survivors take over. Under torchrun no process watches the others: a claim whose
heartbeat (the claim file's mtime, refreshed every ``HEARTBEAT_S``) is older than ``stale_s`` is
taken over instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Iterator

from virnucpro.run.rundir import RunDir

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0


class ClaimSource:
    """The units for one pass of the engine's loop: every unit that is neither done nor claimed,
    claimed as the loader reaches it. Never blocks (the loader calls it from the GPU loop's thread)."""

    def __init__(self, rd: RunDir, owner: str, n_units: int, stop: threading.Event):
        self.rd, self.owner, self.n_units, self.stop = rd, owner, n_units, stop
        self.mine: set[int] = set()        # claimed, not yet finished
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[int]:
        done = self.rd.done_units()
        for u in range(self.n_units):
            if self.stop.is_set():
                return
            if u in done or not self.rd.claim(u, self.owner):
                continue
            if self.rd.is_done(u):        # finished by someone between the listing and the claim
                self.rd.release(u)
                continue
            with self._lock:
                self.mine.add(u)
            yield u

    def holds(self, u: int) -> bool:
        with self._lock:
            return u in self.mine

    def finished(self, u: int) -> None:
        with self._lock:
            self.mine.discard(u)
        self.rd.release(u)

    def release_all(self) -> None:
        with self._lock:
            held, self.mine = sorted(self.mine), set()
        for u in held:
            self.rd.release(u)

    def touch(self) -> None:
        """The heartbeat of every claim held."""
        with self._lock:
            held = list(self.mine)
        for u in held:
            try:
                os.utime(self.rd.claim_path(u))
            except FileNotFoundError:
                pass


def all_done(rd: RunDir, plans) -> bool:
    """The plan (a PlanBuilder) is complete and every one of its units is done."""
    if not plans.complete:
        return False
    done = rd.done_units()
    return all(u in done for u in range(plans.n_units))


def wait_for_claimable(rd: RunDir, plans, n_seen: int, stop: threading.Event, stale_s: float | None) -> bool:
    """Wait until the plan has grown past ``n_seen`` units or some unfinished unit is unclaimed
    (True), or all are done / stop (False). With ``stale_s``, claims whose heartbeat is older are
    released on the way."""
    while not stop.is_set():
        n_units = plans.n_units
        if n_units > n_seen:
            return True
        done = rd.done_units()
        if plans.complete and all(u in done for u in range(n_units)):
            return False
        plans.check()
        claims = rd.claimed()
        now = time.time()
        if stale_s is not None:
            for u, claim in claims.items():
                if now - claim.heartbeat > stale_s and u not in done:
                    log.warning("unit %d: the claim of %s has had no heartbeat for %.0f s; taking it over",
                                u, claim.owner, now - claim.heartbeat)
                    rd.release(u)
        if any(u not in done and u not in claims for u in range(n_units)):
            return True
        time.sleep(0.2)
    return False
