"""The fast engine: packed fp16/bf16 ESM-2, length-bucketed DNABERT-S, a DataLoader that never lets the
GPU wait, the classifier on the GPU, and per-batch telemetry.

Work plan (``virnucpro.plan.planner``): the proteins are packed first-fit-decreasing into batches of
``token_budget`` tokens, segment by segment as the host translates; consecutive batches form work
units. For each unit, in order:

    DataLoader workers (processes)           GPU loop (this process)
    --------------------------------         -----------------------------------------------
    tokenize + pad DNA batch  (pinned)  -->  DNABERT-S (fp16, SDPA + ALiBi bias) -> masked mean
    tokenize + pack ESM batch (pinned)  -->  PackedESM2 (varlen attention)      -> residue mean
                                             unit complete: concat -> MLP -> softmax -> scores

Only two scores per frame leave the GPU. Per batch we record the GPU time (CUDA events), the
time the loop waited for the batch (I/O wait) and how many batches were ready (queue depth).

``FastEngine.run`` takes the units from a lazy source that the DataLoader's sampler consumes a few
batches ahead of the GPU: ``virnucpro.run`` passes one that claims units through files, so several
workers share a plan dynamically without the GPU loop ever waiting on a claim.

    engine.py    FastEngine: loading, warm-up, ``run``          (its settings: engines/config.py)
    loader.py    the DataLoader side: batches as DnaBatch / EsmBatch, the unit sampler
    loop.py      the GPU loop: per batch, per unit, out-of-memory back-off, telemetry
    budget.py    the token budget, free GPU memory, the measured matmul peak
    profile.py   a torch.profiler window over the loop's batches
"""

from virnucpro.engines.fast.budget import default_token_budget, free_gpu_memory, matmul_peak_tflops
from virnucpro.engines.fast.engine import DTYPES, FastEngine, release_compile_workers
from virnucpro.engines.fast.loader import DNA_WIDTH_STEP
from virnucpro.engines.fast.profile import ProfileWindow

__all__ = ["DNA_WIDTH_STEP", "DTYPES", "FastEngine", "ProfileWindow", "default_token_budget", "free_gpu_memory",
           "matmul_peak_tflops", "release_compile_workers"]
