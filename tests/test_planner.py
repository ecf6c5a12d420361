"""The segment-by-segment work plan: every frame planned exactly once, packing as tight as one
pass, deterministic, and the pipeline's outputs independent of the segment size."""

import numpy as np
import pytest

from virnucpro.plan.planner import PlanBuilder


def frames_of(n, seed):
    rng = np.random.default_rng(seed)
    lens = rng.integers(12, 120, n)
    return [(f"r{i}_F1", i, "ACG" * int(L), "M" * int(L)) for i, L in enumerate(lens)]


def build(frames, seg, budget=2048, bpu=3):
    b = PlanBuilder(budget, bpu, dna_budget=4096)
    for a in range(0, len(frames), seg):
        b.add(frames[a:a + seg], last=a + seg >= len(frames))
    return b


@pytest.mark.parametrize("seg", [37, 250, 10_000])
def test_every_frame_is_planned_exactly_once(seg):
    frames = frames_of(3000, seed=1)
    b = build(frames, seg)
    assert b.complete
    p = b.prep
    got = np.sort(np.concatenate([p.unit(u.index).frames for u in p.plan.units]))
    assert np.array_equal(got, np.arange(len(frames))), "a frame is missing or planned twice"
    for u in p.plan.units:   # the loader items of a unit cover its rows, for each model
        data = p.unit(u.index)
        assert len(data.items) == p.count[u.index] and len(data.frames) == u.n_frames == p.unit_frames[u.index]
        for kind in ("dna", "esm"):
            cov = np.sort(np.concatenate([r for k, r in data.items if k == kind]))
            assert np.array_equal(cov, np.arange(u.n_frames)), f"unit {u.index}: {kind} items != its frames"
        assert [p.item(int(p.first[u.index]) + j)[0] for j in range(len(data.items))] == [u.index] * len(data.items)
        assert data.prot == [frames[f][3] for f in data.frames.tolist()]
        assert data.nuc == [frames[f][2] for f in data.frames.tolist()]
        esm = [sum(len(data.prot[j]) + 2 for j in r) for k, r in data.items if k == "esm"]
        assert all(t <= 2048 for t in esm) and sum(esm) == p.unit_tokens[u.index]


def test_segments_pack_as_tightly_as_one_pass():
    frames = frames_of(6000, seed=2)
    one = PlanBuilder.of(frames, 2048, 3, 4096).prep.plan.packing_efficiency
    seg = build(frames, 300).prep.plan.packing_efficiency
    assert seg >= one - 0.01, f"segmented packing {seg:.4f} vs one pass {one:.4f}"
    assert one > 0.97


def test_one_segment_is_the_one_pass_plan():
    frames = frames_of(500, seed=3)
    a = PlanBuilder.of(frames, 2048, 3, 4096).prep
    b = build(frames, 10_000).prep
    assert unit_frames(a) == unit_frames(b)


def unit_frames(prep):
    return [prep.unit(u.index).frames.tolist() for u in prep.plan.units]


def test_the_plan_is_deterministic():
    frames = frames_of(2000, seed=4)
    x, y = build(frames, 123).prep, build(frames, 123).prep
    assert unit_frames(x) == unit_frames(y)


def test_the_plan_on_disk_is_the_plan_in_memory(tmp_path):
    """A run keeps its units on disk as they are planned (nothing per frame in memory): the same
    units, batches and sequences as a plan kept in memory."""
    from virnucpro.plan.planner import UnitStore
    frames = frames_of(2500, seed=7)
    mem = build(frames, 300).prep
    b = PlanBuilder(2048, 3, dna_budget=4096, store=UnitStore(tmp_path / "plan"))
    for a in range(0, len(frames), 300):
        b.add(frames[a:a + 300], last=a + 300 >= len(frames))
    disk = b.prep
    assert len(list((tmp_path / "plan").glob("unit_*.pkl"))) == b.n_units == len(mem.plan.units)
    assert unit_frames(disk) == unit_frames(mem)
    for u in range(b.n_units):
        x, y = mem.unit(u), disk.unit(u)
        assert [(k, r.tolist()) for k, r in x.items] == [(k, r.tolist()) for k, r in y.items]
        assert (x.nuc, x.prot) == (y.nuc, y.prot)
    assert b.open.g.size == 0 and not b.open.nuc, "a complete plan keeps no frame open"


def test_snapshot_and_wait_see_a_growing_plan():
    frames = frames_of(1000, seed=5)
    b = PlanBuilder(2048, 1, 4096)
    assert b.wait(0, timeout=0.01) is False and b.n_units == 0
    b.add(frames[:500], last=False)
    s1 = b.snapshot()
    assert b.wait(0, timeout=0.01) and len(s1.plan.units) == b.n_units > 0 and not b.complete
    b.add(frames[500:], last=True)
    assert b.complete and b.n_units > len(s1.plan.units), "the snapshot must not grow with the builder"
    assert len(s1.plan.units) < b.n_units


def test_the_default_dnabert_budget_is_production_s():
    """A PlanBuilder made without a DNABERT-S budget batches as a production run does (by nucleotide
    length, DNA_NT_BUDGET: what virnucpro.run.fast plans with), not by another figure."""
    import inspect

    from virnucpro.plan.planner import DNA_NT_BUDGET
    from virnucpro.run import fast
    assert "DNA_NT_BUDGET" in inspect.getsource(fast.score_fast), "production plans with DNA_NT_BUDGET"
    frames = frames_of(600, seed=8)
    default, production = PlanBuilder.of(frames, 2048, 3), PlanBuilder.of(frames, 2048, 3, DNA_NT_BUDGET)
    assert default.dna_budget == DNA_NT_BUDGET, f"default DNABERT-S budget {default.dna_budget}"
    items = [[(k, r.tolist()) for k, r in p.prep.unit(u).items] for p in (default, production)
             for u in range(p.n_units)]
    assert items[:default.n_units] == items[default.n_units:]


def test_a_failed_producer_reaches_the_consumers():
    b = PlanBuilder(2048)
    b.fail(ValueError("bad read"))
    with pytest.raises(ValueError, match="bad read"):
        b.wait(0, timeout=1)


@pytest.mark.parametrize("n_frames", [3000, 2830], ids=["last-segment-of-300", "last-segment-of-30"])
def test_the_plan_ends_in_single_batch_units(n_frames):
    """Workers claim units in order: ending on 2 x batches_per_unit one-batch units bounds the load
    imbalance by one batch -- also when the last segment brings fewer batches than that (measured on
    two H200s: docs/benchmarks.md, the gate on 1 and 2 GPUs, 600,000 reads)."""
    p = build(frames_of(n_frames, seed=6), 700, bpu=4).prep
    sizes = [u.n_batches for u in p.plan.units]
    assert sizes[-8:] == [1] * 8, f"the last 8 units should be of one batch each; last unit sizes {sizes[-12:]}"
    assert max(sizes) == 4 and sizes.count(1) == 8, f"unit sizes {sizes}"


def test_plan_units_partition_the_batches():
    rng = np.random.default_rng(9)
    lengths = rng.integers(20, 170, size=5000)        # ESM-2 tokens incl. BOS/EOS
    frames = [(f"f{i}", i, "ACG", "M" * int(L - 2)) for i, L in enumerate(lengths)]
    b = PlanBuilder.of(frames, 4096, batches_per_unit=3)
    plan = b.prep.plan
    assert sum(u.n_batches for u in plan.units) == plan.n_batches
    assert all(u.n_batches <= 3 for u in plan.units)
    got = np.concatenate([b.prep.unit(u.index).frames for u in plan.units])
    assert sorted(got.tolist()) == list(range(5000))
    assert [u.index for u in plan.units] == list(range(len(plan.units)))


@pytest.mark.parametrize("seg", [1, 3, 7, 50])
def test_segments_of_a_stream_are_those_of_the_list(tmp_path, monkeypatch, seg):
    """Reading in a thread changes nothing in the segments (so in the plan): same starts, same
    reads, the last one marked -- and it comes only once the whole input is checked."""
    from virnucpro.io import fasta
    from virnucpro.plan.planner import segments
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", 16)
    p = tmp_path / "r.fa"
    p.write_text("".join(f">r{i}\nACGTACGT\n" for i in range(21)))
    want = [(a, [r.id for r in part], last) for a, part, last in segments(fasta.read_fasta(p), seg)]
    stream = fasta.RecordStream(p)
    got = []
    for a, part, last in segments(stream, seg):
        got.append((a, [r.id for r in part], last))
        if last:
            assert stream.done and not stream.failed, "the last segment came before the input was checked"
    assert got == want
    assert want[-1][2] and sum(len(ids) for _, ids, _ in want) == 21


def test_a_refused_input_fails_the_plan_and_gives_no_last_segment(tmp_path):
    from virnucpro.io import fasta
    from virnucpro.plan.planner import produce
    from virnucpro.errors import InputError
    p = tmp_path / "r.fa"
    p.write_text("".join(f">r{i}\nATGGCCGCCGCCGCCGCC\n" for i in range(9)) + ">r1\nACGT\n")   # r1 twice
    b = PlanBuilder(4096, 2, dna_budget=4096)
    produce(fasta.RecordStream(p), 300, "original", b, [], [], segment_reads=4)
    assert not b.complete
    with pytest.raises(InputError, match="duplicate"):
        b.check()


def test_a_unit_alternates_esm_and_dnabert_batches_esm_first():
    """The GPU loop's order within a unit: an ESM-2 batch first (it covers the wait for the unit
    before), then no two DNABERT-S batches in a row while ESM-2 batches are left."""
    from virnucpro.plan.planner import interleave
    assert interleave([1, 2, 3], ["a", "b"]) == [1, "a", 2, "b", 3]
    assert interleave([1], ["a", "b", "c"]) == [1, "a", "b", "c"]
    frames = frames_of(3000, seed=4)
    p = build(frames, 10_000).prep
    for u in p.plan.units:
        kinds = [k for k, _ in p.unit(u.index).items]
        n_esm, n_dna = kinds.count("esm"), kinds.count("dna")
        want = (["esm", "dna"] * min(n_esm, n_dna) + ["esm"] * (n_esm - n_dna) + ["dna"] * (n_dna - n_esm))
        assert kinds == want, f"unit {u.index}: batches in the order {kinds}, expected {want}"
