"""A planted defect for the gate's self-test: ``virnucpro`` with every top-level PyTorch module
call computed FACTOR times (the result of the last one is used), i.e. an engine whose model work
costs FACTOR times as much — as a kernel falling back to a slow path would.

    python perf_tests/planted_slowdown.py FACTOR predict READS.fa -o OUT ...

Used only by perf_tests/test_perf_selftest.py; nothing in the package reads it.
"""

from __future__ import annotations

import sys
import threading


def main() -> int:
    factor = int(sys.argv[1])
    import torch

    depth = threading.local()
    call = torch.nn.Module.__call__

    def slow_call(self, *args, **kwargs):
        if getattr(depth, "inside", False):      # a submodule of a call already repeated
            return call(self, *args, **kwargs)
        depth.inside = True
        try:
            for _ in range(factor - 1):
                call(self, *args, **kwargs)
            return call(self, *args, **kwargs)
        finally:
            depth.inside = False

    torch.nn.Module.__call__ = slow_call
    from virnucpro.cli import main as virnucpro_main

    return virnucpro_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
