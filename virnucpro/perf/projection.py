"""The wall time of a run projected to another number of reads (the performance gate's 1,000,000).

    fixed     = start-up outside the pipeline + the load_models stage   (does not grow with reads)
    projected = fixed + (wall - fixed) * target_reads / reads

Everything but start-up and model loading is taken to grow linearly with the number of reads.
``wall`` is what a user waits for: the gate times the ``virnucpro predict`` process, so its start-up
(interpreter, imports) is the process's wall minus the run's own ``wall_s``; ``virnucpro bench``
runs the pipeline inside its own process, where that start-up is 0. Used by both (docs/perf-gate.md).
"""

from __future__ import annotations

MILLION = 1_000_000


def fixed_time_s(wall_s: float, run_wall_s: float, load_models_s: float) -> float:
    """The part of ``wall_s`` that does not grow with reads: start-up outside the run (``wall_s`` -
    the run's own ``run_wall_s``, never negative) plus model loading."""
    return max(0.0, wall_s - run_wall_s) + load_models_s


def project_wall_s(wall_s: float, fixed: float, reads: float, target_reads: float = MILLION) -> float:
    """``wall_s`` measured on ``reads`` reads, projected to ``target_reads``: the fixed part (at most
    the whole wall) once, the rest scaled by the read ratio."""
    fixed = min(max(fixed, 0.0), wall_s)
    return fixed + (wall_s - fixed) * target_reads / max(reads, 1)
