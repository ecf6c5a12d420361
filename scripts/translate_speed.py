"""Six-frame translation throughput on one core: reads of 150 nt per second (best of 5 runs).

    python scripts/translate_speed.py [--reads 20000]
"""

import argparse
import random
import time

from virnucpro.prep.translate import translate_chunks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=20000)
    a = ap.parse_args()
    rng = random.Random(0)
    reads = ["".join(rng.choice("ACGT") for _ in range(150)) for _ in range(a.reads)]
    best = min(_timed(reads) for _ in range(5))
    print(f"{a.reads} reads of 150 nt: best {best:.3f} s -> {a.reads / best:,.0f} reads/s on one core")


def _timed(reads):
    t = time.perf_counter()
    translate_chunks(reads)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
