"""Packing sequences into token-budget batches, and the work plan built from them.

``pack_ffd`` is first-fit-decreasing: sequences sorted longest first, each placed in the first
batch with room. Runs of equal length (the common case: lengths are small integers) are placed
together with numpy: equal items placed one by one under first-fit fill the open batches in order,
each taking as many as fit, which is exactly what the vectorised allocation does.

Packing efficiency = real tokens / (batches x budget): it cannot exceed 100%.

A plan (``WorkUnit``s, built by ``virnucpro.plan.planner``) cuts the packed ESM-2 batches, in
order, into work units: a unit is what one GPU worker claims, embeds (both models), classifies and
checkpoints at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pack_ffd(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Indices per batch, first-fit-decreasing; every sequence must be <= budget tokens."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    if lengths.max() > budget:
        raise ValueError(f"a sequence of {lengths.max()} tokens exceeds the batch budget {budget}")
    order = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[order]
    bin_of = np.empty(lengths.size, dtype=np.int64)           # bin per item (in sorted order)
    remaining = np.zeros(0, dtype=np.int64)                    # free tokens per open bin
    values, starts = np.unique(-sorted_len, return_index=True)  # runs of equal length, longest first
    ends = np.append(starts[1:], sorted_len.size)
    for neg_len, s, e in zip(values.tolist(), starts.tolist(), ends.tolist()):
        L, count = -neg_len, e - s
        cap = remaining // L                                   # items of length L each bin can take
        take = np.minimum(cap, np.maximum(count - (np.cumsum(cap) - cap), 0))
        placed = int(take.sum())
        bin_of[s:s + placed] = np.repeat(np.arange(remaining.size), take)
        remaining -= take * L
        left = count - placed
        if left:
            per_bin = budget // L
            n_new = -(-left // per_bin)
            new_take = np.full(n_new, per_bin, dtype=np.int64)
            new_take[-1] = left - per_bin * (n_new - 1)
            bin_of[s + placed:e] = remaining.size + np.repeat(np.arange(n_new), new_take)
            remaining = np.concatenate([remaining, budget - new_take * L])
    by_bin = np.argsort(bin_of, kind="stable")
    counts = np.bincount(bin_of, minlength=remaining.size)
    return np.split(order[by_bin], np.cumsum(counts)[:-1])


def packing_efficiency(lengths: np.ndarray, batches: list[np.ndarray], budget: int) -> float:
    total = int(np.asarray(lengths, dtype=np.int64).sum())
    return total / (len(batches) * budget) if batches else 1.0


def padded_batches(lengths: np.ndarray, budget: int, max_seqs: int = 4096) -> list[np.ndarray]:
    """Length-sorted padded batches: each batch's (max length x count) <= budget (DNABERT-S)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    out, start = [], 0
    ls = np.asarray(lengths)[order]
    while start < len(order):
        # grow while (longest so far) * count fits; sorted ascending, so the longest is the last
        hi = min(len(order) - start, max_seqs)
        # largest n with ls[start+n-1] * n <= budget (monotone in n): binary search
        lo_n, hi_n = 1, hi
        while lo_n < hi_n:
            mid = (lo_n + hi_n + 1) // 2
            if ls[start + mid - 1] * mid <= budget:
                lo_n = mid
            else:
                hi_n = mid - 1
        n = lo_n
        out.append(order[start:start + n])
        start += n
    return out


@dataclass
class WorkUnit:
    """A unit of the plan: what one worker claims, embeds, classifies and checkpoints at once (its
    batches and sequences are in the planner's ``UnitStore``)."""
    index: int
    n_batches: int                       # ESM-2 batches
    n_frames: int


@dataclass
class Plan:
    budget: int
    units: list[WorkUnit]
    packing_efficiency: float
    n_batches: int
