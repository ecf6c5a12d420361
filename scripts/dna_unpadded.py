"""DNABERT-S on one padded batch: the padded forward (masked mean) vs ``dnabert.mean_unpadded`` (dense
layers on the real tokens only), timed side by side in one process, e.g.

    python scripts/dna_unpadded.py --models /tmp/fullmodels --batch 256    # the full synthetic DNABERT-S

Token lengths are drawn uniformly from 8-77 (the range of 300-nt frames, CPU-6), so about 55% of the
padded positions are real. Prints both times per repetition and the largest difference of the means.
"""

import argparse
import time

import numpy as np
import torch

from virnucpro.models import dnabert as D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="a models folder holding DNABERT-S/")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    model, _, _ = D.load_dnabert(f"{a.models}/DNABERT-S", a.device, torch.float32, use_sdpa=True)
    rng = np.random.default_rng(0)
    lens = rng.integers(8, 78, a.batch)
    width = -(-int(lens.max()) // 8) * 8
    ids = torch.full((a.batch, width), D.PAD_ID, dtype=torch.long)
    for r, n in enumerate(lens):
        ids[r, :n] = torch.from_numpy(rng.integers(5, 4000, n))
    ids, lt = ids.to(a.device), torch.from_numpy(lens).to(a.device)
    rows = torch.from_numpy(D.real_token_rows(lens, width)).to(a.device)
    mask = torch.arange(width, device=a.device)[None] < lt[:, None]
    print(f"batch {a.batch} x {width}: real / padded tokens {lens.sum() / (a.batch * width):.1%}")
    with torch.inference_mode():
        for _ in range(a.repeats):
            t = time.perf_counter()
            padded = model(ids, mask).float().sum(1) / lt[:, None]
            t1 = time.perf_counter() - t
            t = time.perf_counter()
            unpadded = D.mean_unpadded(model, ids, lt, rows)
            t2 = time.perf_counter() - t
            print(f"padded {t1:.3f} s  unpadded {t2:.3f} s  ratio {t1 / t2:.2f}x  "
                  f"max |difference| {(padded - unpadded).abs().max():.2e}")


if __name__ == "__main__":
    main()
