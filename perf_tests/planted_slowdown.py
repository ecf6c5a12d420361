"""A planted defect for the gate's self-test: ``virnucpro`` with every top-level PyTorch module
call computed FACTOR times (the result of the last one is used), i.e. an engine whose model work
costs FACTOR times as much — as a kernel falling back to a slow path would.

    python perf_tests/planted_slowdown.py FACTOR COUNTS.json predict READS.fa -o OUT ...

COUNTS.json gets, at the end, how many top-level calls of each module class were repeated: the
self-test's evidence that the defect took effect where it was planted (a count, where a time measured
minutes apart on a loaded machine is not).

Used only by perf_tests/test_perf_selftest.py; nothing in the package reads it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path


def main() -> int:
    factor, counts_path = int(sys.argv[1]), Path(sys.argv[2])
    import torch

    depth = threading.local()
    call = torch.nn.Module.__call__
    counts: Counter = Counter()

    def slow_call(self, *args, **kwargs):
        if getattr(depth, "inside", False):      # a submodule of a call already repeated
            return call(self, *args, **kwargs)
        depth.inside = True
        counts[type(self).__name__] += 1
        try:
            for _ in range(factor - 1):
                call(self, *args, **kwargs)
            return call(self, *args, **kwargs)
        finally:
            depth.inside = False

    torch.nn.Module.__call__ = slow_call
    from virnucpro.cli import main as virnucpro_main

    try:
        return virnucpro_main(sys.argv[3:])
    finally:
        counts_path.write_text(json.dumps({"factor": factor, "repeated_calls": dict(counts)}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
