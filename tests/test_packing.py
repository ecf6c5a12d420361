"""First-fit-decreasing packing and the work plan."""

import numpy as np
import pytest

from virnucpro.plan.packing import pack_ffd, packing_efficiency, padded_batches


def naive_ffd(lengths, budget):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])   # stable, longest first
    bins, free = [], []
    for i in order:
        for j, f in enumerate(free):
            if f >= lengths[i]:
                bins[j].append(i)
                free[j] -= lengths[i]
                break
        else:
            bins.append([i])
            free.append(budget - lengths[i])
    return bins


@pytest.mark.parametrize("seed", range(30))
def test_vectorised_ffd_equals_textbook_ffd(seed):
    rng = np.random.default_rng(seed)
    budget = int(rng.integers(40, 3000))
    lengths = rng.integers(3, min(budget, 170) + 1, size=int(rng.integers(1, 400)))
    got = [sorted(b.tolist()) for b in pack_ffd(lengths, budget)]
    want = [sorted(b) for b in naive_ffd(lengths.tolist(), budget)]
    assert got == want


def test_every_sequence_once_budget_respected_efficiency_bounded():
    rng = np.random.default_rng(7)
    lengths = rng.integers(20, 170, size=20000)
    batches = pack_ffd(lengths, 8192)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths))), "a sequence is lost or duplicated"
    assert max(lengths[b].sum() for b in batches) <= 8192
    eff = packing_efficiency(lengths, batches, 8192)
    assert eff == lengths.sum() / (len(batches) * 8192)
    assert 0.97 <= eff <= 1.0, f"packing efficiency {eff:.4f}"


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        pack_ffd(np.array([10, 500]), 100)


def test_padded_batches_fit_budget_and_cover_all():
    rng = np.random.default_rng(8)
    lengths = rng.integers(5, 80, size=3000)
    batches = padded_batches(lengths, 2048)
    assert sorted(np.concatenate(batches).tolist()) == list(range(3000))
    for b in batches:
        assert lengths[b].max() * len(b) <= 2048
