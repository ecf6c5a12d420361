"""DNABERT-S's attention backends on a GPU, side by side in one process: torch's default choice (cuDNN's
attention on an H200) vs ``dnabert.sdpa_backends`` (cuDNN left out), through ``dnabert.mean_unpadded``
as the fast engine runs it, e.g.

    python scripts/dna_attention.py --models /tmp/models       # full synthetic DNABERT-S

For each of ``--shapes`` new batch shapes (rows x width, as the loader cuts them: widths a multiple of
8, token lengths uniform in 8..width), the first call's time (what a new shape costs) and the median
of ``--repeats`` calls after it; then the largest difference of the two backends' means.
"""

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch

from virnucpro.models import dnabert as D


def batch(rng, rows: int, width: int, device):
    lens = rng.integers(8, width + 1, rows)
    lens[0] = width
    ids = torch.full((rows, width), D.PAD_ID, dtype=torch.long)
    for r, n in enumerate(lens):
        ids[r, :n] = torch.from_numpy(rng.integers(5, 4000, n))
    return (ids.to(device), torch.from_numpy(lens).to(device),
            torch.from_numpy(D.real_token_rows(lens, width)).to(device))


def timed(fn) -> tuple[float, torch.Tensor]:
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="a models folder holding DNABERT-S/")
    ap.add_argument("--shapes", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    dev = torch.device("cuda")
    model, _, _ = D.load_dnabert(f"{a.models}/DNABERT-S", dev, torch.float16, use_sdpa=True)
    rng = np.random.default_rng(0)
    # rows x width pairs like the loader's (a 262,144-nucleotide budget: ~870 rows of 300 nt)
    shapes = [(int(r), int(w)) for r, w in zip(rng.integers(400, 1200, a.shapes), rng.choice([48, 56, 64, 72, 80], a.shapes))]
    # no-cudnn first: it pays every first-shape cost the two share (cuBLAS heuristics), so the default's
    # first calls show what cuDNN's plans alone add
    backends = {"no-cudnn": lambda: D.sdpa_backends(dev), "default": contextlib.nullcontext}
    means = {}
    with torch.inference_mode():
        D.mean_unpadded(model, *batch(rng, 64, 32, dev))   # load the dense kernels before timing
        for name, ctx in backends.items():
            first, steady, total = [], [], 0.0
            for k, (rows, width) in enumerate(shapes):
                args = batch(np.random.default_rng(k), rows, width, dev)
                with ctx():
                    t1, out = timed(lambda: D.mean_unpadded(model, *args))
                    ts = [timed(lambda: D.mean_unpadded(model, *args))[0] for _ in range(a.repeats)]
                means.setdefault(k, {})[name] = out
                first.append(t1)
                steady.append(statistics.median(ts))
                total += rows * width
            print(f"{name:9s} first call per new shape: median {statistics.median(first) * 1e3:7.1f} ms, "
                  f"max {max(first) * 1e3:7.1f} ms; steady: median {statistics.median(steady) * 1e3:6.2f} ms/batch, "
                  f"sum {sum(steady) * 1e3:7.1f} ms over {len(shapes)} shapes ({total:,} padded tokens)")
    diff = max(float((m["default"] - m["no-cudnn"]).abs().max()) for m in means.values())
    print(f"max |difference| of the means, default vs no-cudnn: {diff:.2e}")


if __name__ == "__main__":
    main()
