"""The fast engine's input side: DataLoader worker processes turn the plan's items into host tensors
(tokenised, padded or packed; pinned by the loader's pinning thread), a unit at a time, a few batches
ahead of the GPU loop.

Each item of the plan (``Prepared.item``: unit, "dna" | "esm", rows of the unit) becomes one batch,
its sequences read from the plan's unit store (on disk in a run: the loader processes read a unit's
file as they reach it):

    DnaBatch   ids [B, W] int32 (W: the longest rounded up to DNA_WIDTH_STEP), lens [B], rows [R]
    EsmBatch   tokens [T] int32, cu [N+1] int32, pos [T] int32 (packed: see models/esm2_fast.py)

Their tensors are pinned (``pin_memory``), so that the loop's ``.to(device, non_blocking=True)``
copies are queued behind the GPU's work instead of waiting for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from virnucpro.models import dnabert
from virnucpro.models.esm2_fast import tokenize

log = logging.getLogger("virnucpro.engines.fast")

# DNABERT-S batches are padded to their longest sequence rounded up to this many tokens. 8 keeps every
# row of the [B, heads, T, T] ALiBi bias 16-byte aligned, as SDPA's memory-efficient kernel needs (an
# unaligned bias is padded into a copy by every layer's call); steps of 4 would leave 77.5% of the
# padded tokens real instead of 72.8% (docs/benchmarks.md#cpu-dna-padding).
DNA_WIDTH_STEP = 8


class _Pinned:
    """``pin_memory()`` for a batch dataclass: the same batch with its tensors in pinned memory (the
    DataLoader's pinning thread calls it)."""

    def pin_memory(self):
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                            for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


@dataclass
class DnaBatch(_Pinned):
    unit: int
    idx: torch.Tensor      # [B] int64: the frames (rows of the unit)
    ids: torch.Tensor      # [B, W] int32 token ids, PAD_ID after each sequence
    lens: torch.Tensor     # [B] int64 tokens per sequence ([CLS] and [SEP] included)
    rows: torch.Tensor     # [R] int64: flat positions of the real tokens in [B * W]
    kind = "dna"


@dataclass
class EsmBatch(_Pinned):
    unit: int
    idx: torch.Tensor      # [N] int64: the frames (rows of the unit)
    tokens: torch.Tensor   # [T] int32 packed tokens
    cu: torch.Tensor       # [N+1] int32 cu_seqlens
    pos: torch.Tensor      # [T] int32 positions (rotary restarts per sequence)
    max_len: int           # the longest sequence, in tokens
    frames: torch.Tensor | None = None   # [n] int64 the unit's global frames, with its first batch only
    kind = "esm"


class BatchItems(Dataset):
    """Item i of the plan -> the host tensors of one batch (runs in DataLoader workers)."""

    def __init__(self, prep, tokenizer, alphabet):
        self.prep, self.tokenizer, self.alphabet = prep, tokenizer, alphabet

    def __len__(self) -> int:
        return self.prep.n_items

    def __getitem__(self, i: int) -> DnaBatch | EsmBatch:
        unit, kind, idx = self.prep.item(i)
        data = self.prep.unit(unit)
        if kind == "dna":
            enc = self.tokenizer.encode_batch([data.nuc[j] for j in idx])
            lens = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
            width = -(-int(lens.max()) // DNA_WIDTH_STEP) * DNA_WIDTH_STEP   # fewer distinct shapes
            ids = np.full((len(enc), width), dnabert.PAD_ID, dtype=np.int32)
            for r, e in enumerate(enc):
                ids[r, :len(e.ids)] = e.ids
            return DnaBatch(unit, torch.from_numpy(idx), torch.from_numpy(ids), torch.from_numpy(lens),
                            torch.from_numpy(dnabert.real_token_rows(lens, width)))
        tok, cu, pos, max_len = tokenize(self.alphabet, [data.prot[j] for j in idx])
        first = i == int(self.prep.first[unit])   # (the loop's buffer needs the unit's frames)
        return EsmBatch(unit, torch.from_numpy(idx), torch.from_numpy(tok), torch.from_numpy(cu),
                        torch.from_numpy(pos), max_len, torch.from_numpy(data.frames) if first else None)


class UnitSampler(Sampler):
    """Item indices of the units ``source`` yields, unit after unit. The DataLoader draws from it
    in the main process only as far ahead as its prefetch, so a claiming source claims units just
    before the GPU needs them."""

    def __init__(self, source: Iterable[int], first: np.ndarray, count: np.ndarray):
        self.source, self.first, self.count = source, first, count

    def __iter__(self) -> Iterator[int]:
        for u in self.source:
            yield from range(int(self.first[u]), int(self.first[u] + self.count[u]))


def batches(prep, source: Iterable[int], tokenizer, alphabet, workers: int, pin: bool, prefetch: int = 4) -> Iterator:
    """The batches of the units ``source`` yields, in order: from ``workers`` loader processes
    (none for a one-item plan), each keeping ``prefetch`` batches ready, pinned when ``pin`` (a CUDA
    device)."""
    workers = workers if prep.n_items > 1 else 0
    return iter(DataLoader(BatchItems(prep, tokenizer, alphabet),
                           batch_size=1, sampler=UnitSampler(source, prep.first, prep.count),
                           num_workers=workers, collate_fn=_collate, pin_memory=pin,
                           prefetch_factor=prefetch if workers else None, persistent_workers=False,
                           worker_init_fn=partial(_loader_worker_init, parent=os.getpid()) if workers else None))


def queue_depth(it) -> int | None:
    """Batches requested from the workers and not yet taken by the GPU loop (DataLoader internals):
    how far the input pipeline runs ahead. None with no worker processes."""
    try:
        return int(it._send_idx - it._rcvd_idx) if hasattr(it, "_send_idx") else None
    except Exception:
        return None


def _collate(batch):
    return batch[0]


def _loader_worker_init(_worker_id: int, parent: int | None = None) -> None:
    """In a loader process, an exception in a helper thread of multiprocessing goes to the log, not as
    a traceback to the user's terminal: the resource sharer that hands tensors' file descriptors to
    the worker reports "connection reset" through ``sys.excepthook`` when that worker has just died
    (e.g. killed with its unit, which the worker's coordinator reports in one line). The loader dies
    with ``parent`` (the process of the GPU loop), and SIGTERM/SIGINT to it ask that process to stop
    instead of killing the loader under it (``virnucpro.core.lifeline``)."""
    if parent is not None:
        from virnucpro.core.lifeline import die_with_parent, stop_parent_on_signal
        die_with_parent(signal.SIGKILL, parent)
        stop_parent_on_signal(parent)
    def thread_hook(args) -> None:
        log.debug("loader thread %s: %s: %s", getattr(args.thread, "name", "?"), args.exc_type.__name__, args.exc_value)

    def sys_hook(exc_type, exc, tb) -> None:
        log.debug("loader process: %s: %s", exc_type.__name__, exc)
    threading.excepthook = thread_hook
    sys.excepthook = sys_hook
