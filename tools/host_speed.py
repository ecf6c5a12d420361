"""Host-side throughput of a run's first steps, on the CPU: six-frame translation of 150-nt reads
(reads/s, best of 5) and, given a FASTA file, reading it with virnucpro's reader (reads/s, best of 3).

Re-checks docs/benchmarks.md#cpu-translate (issue target: >= 20,000 reads/s on one core) and
docs/benchmarks.md#cpu-io (FASTA reading of the gate's 440,000 reads). On one core, as measured there:

    OMP_NUM_THREADS=1 taskset -c 0 python tools/host_speed.py
    python -m virnucpro reads synth --n 440000 --seed 1 --length-profile respiratory -o /tmp/r440k.fa
    python tools/host_speed.py --fasta /tmp/r440k.fa --no-translate
"""

from __future__ import annotations

import argparse
import random
import time


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=20000,
                    help="random 150-nt reads to translate (default 20,000, as in the benchmark)")
    ap.add_argument("--fasta", default=None,
                    help="also time read_fasta on this FASTA file (plain or gzip)")
    ap.add_argument("--no-translate", action="store_true", help="skip the translation timing")
    return ap.parse_args(argv)


def best_of(n: int, fn) -> tuple[float, object]:
    """The shortest of ``n`` timed calls of ``fn`` and the last call's result."""
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> None:
    a = parse_args(argv)
    if not a.no_translate:
        from virnucpro.prep.translate import translate_chunks
        rng = random.Random(0)
        reads = ["".join(rng.choice("ACGT") for _ in range(150)) for _ in range(a.reads)]
        s, _ = best_of(5, lambda: translate_chunks(reads))
        print(f"translate: {a.reads} reads of 150 nt: best {s:.3f} s -> {a.reads / s:,.0f} reads/s")
    if a.fasta:
        from virnucpro.io.fasta import read_fasta
        s, records = best_of(3, lambda: read_fasta(a.fasta))
        print(f"read_fasta: {len(records):,} reads: best {s:.2f} s -> {len(records) / s:,.0f} reads/s")


if __name__ == "__main__":
    main()
