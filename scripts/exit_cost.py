"""What the interpreter's teardown costs at the end of a run: a process holding the objects a
650,000-read run holds (reads, chunks, frames, output rows; torch imported) prints the time, then
exits normally or with os._exit (as `virnucpro` now does after joining its children); the shell
measures the rest.

    for m in normal fast; do s=$(python scripts/exit_cost.py $m); e=$(date +%s.%N); echo $m $(echo "$e - $s" | bc); done
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch  # noqa: F401 - its teardown is part of the cost

N = 650_000


@dataclass
class Record:
    id: str
    seq: str


records = [Record(f"read{i:09d}", "ACGT" * 37) for i in range(N)]
chunks = [(f"read{i:09d}_chunk_1", i, r.seq) for i, r in enumerate(records)]
frames = [(f"read{i:09d}_chunk_1F1", i, r.seq[:100], "MKV" * 33) for i, r in enumerate(records)]
rows = {i: f"read{i:09d}_chunk_1F1\tvirus\t0.5\t0.5\n" for i in range(N)}
sys.stdout.write(f"{time.time():.6f}\n")
sys.stdout.flush()
if sys.argv[1:] == ["fast"]:
    os._exit(0)
