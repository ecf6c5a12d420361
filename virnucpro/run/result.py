"""What a run of an engine hands to the output stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from virnucpro.io import outputs


@dataclass
class Scored:
    """What an engine path hands to the output stage: scores [N, 2] and the figures of the summary."""
    scores: np.ndarray
    totals: dict
    embed_wall: float
    precision: str
    n_gpus: int
    gpu_util_mean: float | None
    packing_efficiency: float | None = None
    mfu_esm: float | None = None
    peak_gpu_mem_gib: float | None = None
    extra: dict = field(default_factory=dict)
    rows: "outputs.OutputRows | None" = None    # output rows made during embedding (fast engine)
