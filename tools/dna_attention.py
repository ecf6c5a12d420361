"""DNABERT-S's attention backends on one GPU, side by side in one process: torch's default choice
(cuDNN's attention on an H200) against ``dnabert.sdpa_backends`` (cuDNN left out, as the fast engine
runs it), through ``dnabert.mean_unpadded``. For each of --shapes new batch shapes (rows x width, as
the loader cuts them: widths a multiple of 8, token lengths uniform in 8..width) it prints the first
call's time (what a new shape costs: cuDNN builds an execution plan per shape) and the median of
--repeats calls after it; then the largest difference of the two backends' mean embeddings.

Re-checks docs/benchmarks.md#exp-cudnn-attention (worth redoing after a torch or cuDNN upgrade):

    python tools/dna_attention.py --models /tmp/models       # the full synthetic DNABERT-S
"""

import argparse
import contextlib
import statistics
import time


def batch(D, rng, rows: int, width: int, device):
    """One padded batch: token ids [rows, width], lengths [rows], real-token rows (the first row full)."""
    import numpy as np
    import torch

    lens = rng.integers(8, width + 1, rows)
    lens[0] = width
    ids = torch.full((rows, width), D.PAD_ID, dtype=torch.long)
    for r, n in enumerate(lens):
        ids[r, :n] = torch.from_numpy(rng.integers(5, 4000, n))
    return (ids.to(device), torch.from_numpy(lens).to(device),
            torch.from_numpy(D.real_token_rows(lens, width)).to(device))


def timed(fn):
    """(seconds, result) of one call of ``fn``, synchronised with the GPU."""
    import torch

    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="a models folder holding DNABERT-S/")
    ap.add_argument("--shapes", type=int, default=12, help="new batch shapes to time (default 12)")
    ap.add_argument("--repeats", type=int, default=5, help="steady-state calls per shape after the first (default 5)")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    import numpy as np
    import torch

    from virnucpro.models import dnabert as D
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
        D.mean_unpadded(model, *batch(D, rng, 64, 32, dev))   # load the dense kernels before timing
        for name, ctx in backends.items():
            first, steady, total = [], [], 0.0
            for k, (rows, width) in enumerate(shapes):
                args = batch(D, np.random.default_rng(k), rows, width, dev)
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
