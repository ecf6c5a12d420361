"""The reference ("v1") engine: a faithful, simple reading of the original.

fp32 throughout; ESM-2 through fair-esm's own model, batched by its toks_per_batch=2048 rule;
DNABERT-S one sequence per forward, mean over all tokens incl. [CLS]/[SEP]. Not clever on purpose:
it is what the fast engine is held against.
"""

from __future__ import annotations

import logging
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

    def dna_token_count(self, seqs: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(list(seqs)))
