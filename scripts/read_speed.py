"""FASTA reading throughput: ``read_fasta`` on a synthetic workload (best of 3), e.g. the gate's
440,000 respiratory reads:

    python -m virnucpro reads synth --n 440000 --seed 1 --length-profile respiratory -o /tmp/r440k.fa
    python scripts/read_speed.py /tmp/r440k.fa
"""

import argparse
import time

from virnucpro.io.fasta import read_fasta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fasta")
    a = ap.parse_args()
    best, n = float("inf"), 0
    for _ in range(3):
        t = time.perf_counter()
        n = len(read_fasta(a.fasta))
        best = min(best, time.perf_counter() - t)
    print(f"{n:,} reads: best {best:.2f} s -> {n / best:,.0f} reads/s")


if __name__ == "__main__":
    main()
