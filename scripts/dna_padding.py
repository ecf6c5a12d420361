"""DNABERT-S padding of the planned batches: sorted by nucleotide length (before) vs by token count
(the planner's default since the fifth session), on a synthetic workload, with the product's planner.

    python -m virnucpro reads synth --n 50000 --seed 3 --length-profile respiratory -o /tmp/r50k.fa
    python scripts/dna_padding.py --models DIR --fasta /tmp/r50k.fa

Prints, for each ordering, the DNABERT-S batches, the real and padded tokens (each batch padded to
its longest sequence rounded up to a multiple of 4 or 8 tokens; the loader uses DNA_WIDTH_STEP) and their ratio; and how long counting the
tokens took (the planner's extra host work).
"""

import argparse
import time

import numpy as np

from virnucpro.engines.fast import DNA_WIDTH_STEP
from virnucpro.plan.planner import DNA_TOKEN_BUDGET, PlanBuilder
from virnucpro.models.dnabert import token_counter
from virnucpro.models.layout import resolve
from virnucpro.prep.frames import chunk_and_translate
from virnucpro.io.fasta import read_fasta


def padding(prep, toks, step):
    real = padded = n = 0
    for _, kind, idx in prep.items:
        if kind == "dna":
            n += 1
            real += int(toks[idx].sum())
            padded += len(idx) * (-(-int(toks[idx].max()) // step) * step)
    return n, real, padded


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--fasta", required=True)
    a = ap.parse_args()
    models = resolve(a.models, 300, fingerprint=False)
    records = read_fasta(a.fasta)
    _, frames = chunk_and_translate(records, 300, "original")
    nuc, prot = [f[2] for f in frames], [f[3] for f in frames]
    count = token_counter(models.dnabert)
    t = time.perf_counter()
    toks = count(nuc)
    dt = time.perf_counter() - t
    print(f"{len(records)} reads -> {len(frames)} frames; tokens per frame mean {toks.mean():.1f} "
          f"(min {toks.min()}, max {toks.max()}); counting them took {dt:.2f} s")
    for name, builder in (("by nucleotide length, 262,144 nt", PlanBuilder(65536, 8, 262144)),
                          (f"by token count, {DNA_TOKEN_BUDGET:,} tokens", PlanBuilder(65536, 8, DNA_TOKEN_BUDGET))):
        builder.add_seqs(nuc, prot, True, dna_len=None if name.startswith("by nuc") else toks)
        for step in sorted({4, 8, DNA_WIDTH_STEP}):   # the loader pads in steps of DNA_WIDTH_STEP
            n, real, padded = padding(builder.prep, toks, step)
            print(f"{name:36s}, widths in steps of {step}: {n} batches, real {real:,} / padded {padded:,} "
                  f"tokens = {real / padded:.1%}")


if __name__ == "__main__":
    main()
