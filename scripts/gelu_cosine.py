"""What the GELU epilogue's tanh approximation alone does to ESM-2 embeddings: the same packed ESM-2
(fp32, on the CPU, where every other op is identical) with the exact GELU and with GELU's tanh
approximation, per-sequence mean embeddings (BOS/EOS excluded, as the pipeline pools them) compared
by cosine. Proteins: the kept frames of the built-in sample reads.

    python scripts/gelu_cosine.py --esm /tmp/fullmodels/esm2_t36_3B_UR50D.pt --n 24    # docs/benchmarks.md CPU-4
"""

from __future__ import annotations

import argparse
import time

import torch

from virnucpro.models import esm2_fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--esm", required=True, help="fair-esm checkpoint (.pt)")
    ap.add_argument("--n", type=int, default=24, help="proteins")
    args = ap.parse_args()
    from virnucpro.io.fasta import read_fasta
    from virnucpro.prep.frames import chunk_and_translate
    from virnucpro.workloads import sample_fasta_path
    _, frames = chunk_and_translate(read_fasta(sample_fasta_path()), 300, "original")
    proteins = [f[3] for f in frames[: args.n]]
    esm2_fast.eager_kernels()
    model, alphabet = esm2_fast.PackedESM2.from_checkpoint(args.esm, "cpu", torch.float32)
    tok, cu, pos, max_len = esm2_fast.tokenize(alphabet, proteins)
    tok, cu, pos = torch.from_numpy(tok).long(), torch.from_numpy(cu), torch.from_numpy(pos).long()
    pooled = {}
    for name, approx in (("exact", False), ("tanh", True)):
        esm2_fast.OPTIONS["gelu_epilogue"] = approx
        t = time.perf_counter()
        with torch.inference_mode():
            h = model(tok, cu, pos, max_len)                                   # [T, C]
        pooled[name] = torch.stack([h[int(a) + 1:int(b) - 1].mean(0) for a, b in zip(cu[:-1], cu[1:])])
        print(f"{name}: {len(proteins)} proteins, {int(cu[-1])} tokens, {time.perf_counter() - t:.1f} s")
    esm2_fast.OPTIONS["gelu_epilogue"] = False
    cos = torch.nn.functional.cosine_similarity(pooled["exact"].double(), pooled["tanh"].double(), dim=1)
    d = (pooled["exact"] - pooled["tanh"]).abs()
    print(f"cosine exact vs tanh GELU over {len(proteins)} proteins: min {cos.min():.8f}, mean {cos.mean():.8f}; "
          f"max abs difference {d.max():.3e}, mean {d.mean():.3e}")


if __name__ == "__main__":
    main()
