"""Faults a test injects into a run, handed down explicitly by the caller.

A ``FaultPlan`` travels ``PredictOptions.faults`` -> the executor -> ``WorkerSpec.faults`` (pickled
into worker processes) -> the worker loop and the fast engine. Production code never reads it from
the environment: a run without one (``None``, the CLI's default) has no fault path. Tests that run
the command as a subprocess pass it through ``tests/fault_launcher.py``.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, fields

FAULT_EXIT = 17   # how an injected worker death exits (not one of the worker's own exit codes)


@dataclass(frozen=True)
class FaultPlan:
    die_owner: str | None = None        # this worker os._exit(FAULT_EXIT)s ...
    die_after: int = 0                  # ... once it has checkpointed this many units
    unit_delay: float = 0.0             # every worker sleeps this long after each unit (seconds)
    poison_unit: int | None = None      # any worker that starts this unit os._exit(FAULT_EXIT)s
    disk_full_owner: str | None = None  # this worker's checkpoint writes fail as on a full disk
    bad_fork: bool = False              # workers started by a fork server act as if forked after CUDA init
    fake_oom_tokens: int | None = None  # an ESM-2 batch of more tokens raises CUDA out-of-memory
    die_in_write: str | None = None     # the run os._exit(FAULT_EXIT)s at this step of its write stage ...
    full_in_write: str | None = None    # ... or its write fails there as on a full disk (io.outset.STEPS)

    @classmethod
    def from_json(cls, text: str) -> "FaultPlan":
        """``'{"die_owner": "w1", "die_after": 1}'`` -> FaultPlan; unknown keys are refused."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def dies_after(self, owner: str, units_done: int) -> bool:
        return self.die_owner == owner and units_done >= self.die_after

    def in_write(self, step: str) -> None:
        """The output set's write has reached ``step`` (virnucpro.io.outset.OutputSet.step)."""
        if self.die_in_write == step:
            os._exit(FAULT_EXIT)
        if self.full_in_write == step:
            raise OSError(errno.ENOSPC, "No space left on device", f"<{step} step of the write stage>")
