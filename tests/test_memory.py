"""Peak memory against the input's size (issue 16, item 8; docs/benchmarks.md#memory): the growth
per read of a one-worker fast run's peak RSS, with tools/memory_curve.py's stand-in networks (every
host-side structure is the real code: reading, planning, unit store, checkpoints, rows, outputs).

The fast test runs small planning segments (``--segment-reads 2000``, so the reads held ahead and a
segment's transient work are small) on 20,000 and 80,000 reads: main before the bounded-memory
change grew 1,424 bytes a read there (the records, the plan's sequences and per-frame arrays, the
duplicate-id dict), this code 556 (what is left is the overlap of the reader's block with the
planner's work, reached only past the first block: constant from there on). The slow test runs the
default segments on 100,000 and 1,000,000 reads (measured 144 bytes a read; 777-1,074 before)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def growth_per_read(tiny_models, tmp_path, reads: str, *extra: str) -> tuple[float, list[dict]]:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "memory_curve.py"), "--models", str(tiny_models),
                           "--workdir", str(tmp_path), "--reads", reads, "--stub", "--", *extra],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    a, b = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20 / (b["reads"] - a["reads"]), [a, b]


def test_peak_rss_grows_less_than_1000_bytes_a_read_on_small_segments(tiny_models, tmp_path):
    per_read, points = growth_per_read(tiny_models, tmp_path, "20000,80000", "--segment-reads", "2000")
    assert per_read < 1000, f"peak RSS {points}: {per_read:.0f} B/read"


@pytest.mark.slow
def test_peak_rss_grows_less_than_400_bytes_a_read_to_a_million_reads(tiny_models, tmp_path):
    per_read, points = growth_per_read(tiny_models, tmp_path, "100000,1000000")
    assert per_read < 400, f"peak RSS {points}: {per_read:.0f} B/read"
