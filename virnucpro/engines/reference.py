"""The reference ("v1") engine: a faithful, simple reading of the original.

fp32 throughout; ESM-2 through fair-esm's own model, batched by its toks_per_batch=2048 rule;
DNABERT-S one sequence per forward, mean over all tokens incl. [CLS]/[SEP]. Not clever on purpose:
it is what the fast engine is held against.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch

from virnucpro.models import dnabert, esm2

log = logging.getLogger(__name__)


class ReferenceEngine:
    name = "reference"
    precision = "fp32"

    def __init__(self, models, device: str = "cpu"):
        self.device = torch.device(device)
        self.esm, self.alphabet, self.esm_info = esm2.load_esm2(models.esm, self.device)
        self.dna, self.tokenizer, self.dna_info = dnabert.load_dnabert(models.dnabert, self.device, torch.float32)
        self.dna.eval()

    def embed_dna(self, seqs: Sequence[str], on_done: Callable[[int], None] | None = None) -> np.ndarray:
        return dnabert.embed_reference(self.dna, self.tokenizer, seqs, self.device, on_done=on_done)

    def embed_protein(self, seqs: Sequence[str], on_done: Callable[[int], None] | None = None) -> np.ndarray:
        return esm2.embed_reference(self.esm, self.alphabet, seqs, self.device, on_done=on_done)

    def score(self, frames: Sequence[tuple], classifier, tel, on_progress=None, block: int = 20000,
              keep_features=None) -> np.ndarray:
        """Scores [N, 2] for kept frames (frame_id, chunk, nucleotide, protein), block by block;
        ``keep_features(k, frame indices, features [n, 768 + D])`` with each block's classifier input."""
        from virnucpro.models.classifier import classify
        scores = np.zeros((len(frames), 2), dtype=np.float32)
        totals = {"dna_s": 0.0, "esm_s": 0.0, "cls_s": 0.0, "esm_tokens": 0, "dna_tokens": 0}
        for b in range(0, len(frames), block):
            part = frames[b:b + block]
            # progress within the block: each frame counts half once DNABERT-S embedded it, half
            # once ESM-2 did (a block is 20,000 frames by default: often the whole run)
            done = {"dna": 0, "esm": 0}

            def moved(model: str, n: int) -> None:
                done[model] = n
                if on_progress:
                    on_progress(b + (done["dna"] + done["esm"]) // 2, totals["esm_tokens"])

            t0 = time.perf_counter()
            nuc = self.embed_dna([f[2] for f in part], on_done=lambda n: moved("dna", n))
            t1 = time.perf_counter()
            prot = self.embed_protein([f[3] for f in part], on_done=lambda n: moved("esm", done["esm"] + n))
            t2 = time.perf_counter()
            feats = np.concatenate([nuc, prot], axis=1)
            scores[b:b + len(part)] = classify(classifier, feats, self.device)
            if keep_features is not None:
                keep_features(b // block, np.arange(b, b + len(part)), feats)
            totals["dna_s"] += t1 - t0
            totals["esm_s"] += t2 - t1
            totals["cls_s"] += time.perf_counter() - t2
            totals["esm_tokens"] += sum(len(f[3]) + 2 for f in part)
            if on_progress:
                on_progress(b + len(part), totals["esm_tokens"])
        self.totals = totals
        return scores
