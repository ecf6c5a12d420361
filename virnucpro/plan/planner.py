"""The work plan, built while the input is still being chunked and translated.

The reads are taken in segments of ``segment_reads``; each segment is chunked and translated, its
frames join the frames carried over from the previous segment, and the pool is packed
first-fit-decreasing into ESM-2 batches of ``budget`` tokens. Batches filled to at least
``CARRY_FILL`` of the budget are cut into work units (``batches_per_unit`` consecutive batches;
the plan's last ``2 x batches_per_unit`` batches one per unit, so that workers finish together);
the frames of the others wait for the next segment, so packing stays as tight as packing the whole
input at once; the last ``2 x batches_per_unit`` full batches wait too (as batches), so that the
plan's one-batch tail is as long however small the last segment is. The last segment keeps every
batch. One segment holding the whole input gives the plan of a single FFD pass.

So the GPUs start on the first units while the host is still translating the rest: the host work
leaves the critical path. The plan is a deterministic function of the input and the settings, so
every worker of a run (and a resumed run) builds the same one without talking to the others.

``Prepared`` is what the fast engine's loop needs to run any unit: per unit, its loader items
(ESM-2 and DNABERT-S batches alternating, an ESM-2 batch first; consecutive in the work list), first
item and item count. The GPU loop waits for the unit before at a unit's first batch: an ESM-2 batch
(~0.65 s on an H200) keeps the GPU busy meanwhile where a DNABERT-S batch (~0.1 s) did not. And a
DNABERT-S batch is many short kernels: queued behind an ESM-2 batch, the host has launched them before
the GPU gets there; several in a row ran at the pace of the host's launches (NVML utilisation dipped to
20-40% over them on an H200: docs/benchmarks.md, the gate with DNABERT-S unpadded).
"""

from __future__ import annotations

import os
import pickle
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from virnucpro.core.files import atomic_bytes
from virnucpro.plan.packing import Plan, WorkUnit, pack_ffd, padded_batches

SEGMENT_READS = 65536
# The way units are cut from the input: part of a run's checkpoint identity (a unit index means
# other frames once it changes, so --resume refuses checkpoints of another version). 2: the last
# 2 x batches_per_unit full batches of a segment wait for the next (2026-11-30).
PLAN_VERSION = 2
CARRY_FILL = 0.97
# DNABERT-S batches: cut from a unit's frames sorted by nucleotide length, at most DNA_NT_BUDGET
# nucleotides (batch size x longest) each. (Cutting them by DNABERT-S token count left fewer padded
# tokens, but on an H200 the token counting cost more than the padding it saved:
# docs/benchmarks.md#exp-dna-batches-tokens.)
DNA_NT_BUDGET = 262144
# Chunks translated at a time within a segment: the six-frame translation's per-codon arrays are
# ~2.7 KB per chunk while they live (~180 MiB for a whole segment at once); the frames are the same.
TRANSLATE_CHUNKS = 16384


def interleave(esm: list, dna: list) -> list:
    """A unit's batches in the order the GPU runs them: ESM-2 and DNABERT-S alternating, ESM-2 first,
    the rest of the longer list at the end."""
    out = []
    for k in range(max(len(esm), len(dna))):
        out.extend(esm[k:k + 1] + dna[k:k + 1])
    return out


@dataclass
class UnitData:
    """Everything the loader needs of one work unit, kept on disk (``UnitStore``) from the moment it
    is planned: memory does not grow with the input (docs/benchmarks.md#memory)."""
    frames: np.ndarray                       # [n] int64 global frame indices, in the unit's row order
    items: list[tuple[str, np.ndarray]]      # ("esm" | "dna", rows of the unit), in the GPU's order
    nuc: list[str]                           # [n] the rows' nucleotide sequences
    prot: list[str]                          # [n] the rows' protein sequences


class UnitStore:
    """The planned units' ``UnitData``: one pickle per unit in ``folder`` (written before the unit is
    published, read by the loader processes as they reach it), or in memory without a folder (tests,
    small tools). ``get`` keeps the last few units read (a unit's batches are read one by one)."""

    CACHED = 2

    def __init__(self, folder: Path | None = None, fresh: bool = True):
        self.folder = Path(folder) if folder is not None else None
        self._mem: dict[int, UnitData] = {}
        self._cache: dict[int, UnitData] = {}
        self._lock = threading.Lock()
        if self.folder is not None and fresh:
            shutil.rmtree(self.folder, ignore_errors=True)   # a killed run's: planned again
            self.folder.mkdir(parents=True)

    def __getstate__(self) -> dict:   # (a loader process gets its own lock and cache)
        return {"folder": self.folder, "_mem": self._mem}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())

    def path(self, u: int) -> Path:
        return self.folder / f"unit_{u:06d}.pkl"

    def put(self, u: int, data: UnitData) -> None:
        if self.folder is None:
            self._mem[u] = data
            return
        atomic_bytes(self.path(u), pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), fsync=False)

    def get(self, u: int) -> UnitData:
        if self.folder is None:
            return self._mem[u]
        with self._lock:
            hit = self._cache.get(u)
        if hit is not None:
            return hit
        with open(self.path(u), "rb") as fh:
            data = pickle.load(fh)   # our own file, written by this run's planner
        with self._lock:
            while len(self._cache) >= self.CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[u] = data
        return data


@dataclass
class Prepared:
    """A plan: per unit its frame count, ESM-2 tokens and loader items (ESM and DNA batches
    alternating; item ``i`` of the run is item ``i - first[u]`` of unit ``u``), the units' data in
    ``store``."""
    plan: Plan
    store: UnitStore
    first: np.ndarray                         # [U] index of the unit's first item
    count: np.ndarray                         # [U] items of the unit
    unit_tokens: np.ndarray                   # [U] ESM-2 tokens of the unit
    unit_frames: np.ndarray                   # [U] frames of the unit

    @property
    def n_items(self) -> int:
        return int(self.first[-1] + self.count[-1]) if len(self.first) else 0

    @property
    def esm_tokens(self) -> int:
        return int(self.unit_tokens.sum())

    def unit(self, u: int) -> UnitData:
        return self.store.get(u)

    def item(self, i: int) -> tuple[int, str, np.ndarray]:
        """Item ``i`` of the run: (unit, "esm" | "dna", rows of the unit)."""
        u = int(np.searchsorted(self.first, i, side="right")) - 1
        kind, rows = self.unit(u).items[i - int(self.first[u])]
        return u, kind, rows


@dataclass
class _Open:
    """The frames still being planned (carried to the next segment, or in full batches held back for
    the plan's tail), sorted by global index: their ESM-2 and DNABERT-S lengths and sequences."""
    g: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    esm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dna: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    nuc: list = field(default_factory=list)
    prot: list = field(default_factory=list)

    def at(self, frames: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.g, frames)

    def keep(self, frames: np.ndarray, nuc: list[str], prot: list[str], f0: int) -> "_Open":
        """These of ``frames`` (old ones, or of the new segment from ``f0`` on) with the new
        segment's sequences appended: what stays open after this segment."""
        frames = np.unique(frames)
        old, new = frames[frames < f0], frames[frames >= f0] - f0
        po = self.at(old)
        esm = np.fromiter((len(prot[i]) + 2 for i in new.tolist()), np.int64, len(new))
        dna = np.fromiter((len(nuc[i]) for i in new.tolist()), np.int64, len(new))
        return _Open(frames, np.concatenate([self.esm[po], esm]), np.concatenate([self.dna[po], dna]),
                     [self.nuc[i] for i in po.tolist()] + [nuc[i] for i in new.tolist()],
                     [self.prot[i] for i in po.tolist()] + [prot[i] for i in new.tolist()])


class PlanBuilder:
    """A ``Prepared`` that grows segment by segment (``add``), read from other threads through
    ``snapshot``/``wait``. ``complete`` once the last segment is in. ``store``: where the units'
    data go (default in memory); ``publish``: after each segment, the new units' figures go to
    ``store.folder`` too (``index_*.pkl``), so that worker processes follow the plan (``follow``)
    instead of planning it again."""

    def __init__(self, budget: int, batches_per_unit: int = 8, dna_budget: int = DNA_NT_BUDGET,
                 store: UnitStore | None = None, publish: bool = False):
        self.budget, self.bpu, self.dna_budget = budget, batches_per_unit, dna_budget
        self.store = store if store is not None else UnitStore()
        self.publish = publish
        empty = np.zeros(0, dtype=np.int64)
        self.prep = Prepared(Plan(budget, [], 1.0, 0), self.store, empty, empty, empty, empty)
        self.open = _Open()                      # carried and held frames
        self.carry = empty                       # frames waiting for the next segment
        self.held: list[np.ndarray] = []         # full batches held back for the plan's tail
        self.n_frames = 0
        self.real_tokens = 0
        self.segments = 0
        self.complete = False
        self.error: BaseException | None = None  # set by a producer that failed
        self._cond = threading.Condition()

    # -- the producer's side ------------------------------------------------------------------
    def add(self, frames: Sequence[tuple], last: bool) -> int:
        """Add a segment's frames (frame_id, chunk index, nucleotide, protein); returns the
        number of new units."""
        return self.add_seqs([f[2] for f in frames], [f[3] for f in frames], last)

    def add_seqs(self, nuc: list[str], prot: list[str], last: bool) -> int:
        """Add a segment's frames as their nucleotide and protein sequences (all the plan needs).
        Only the frames still open (carried, held) are kept here; each unit goes to the store."""
        f0, op = self.n_frames, self.open
        seg = _Open(np.arange(f0, f0 + len(nuc), dtype=np.int64),
                    np.fromiter((len(s) + 2 for s in prot), np.int64, len(prot)),
                    np.fromiter((len(s) for s in nuc), np.int64, len(nuc)), nuc, prot)

        def lookup(frames: np.ndarray, what: str) -> np.ndarray:   # per frame, old or new
            old = frames < f0
            out = np.empty(len(frames), np.int64)
            out[old] = getattr(op, what)[op.at(frames[old])]
            out[~old] = getattr(seg, what)[frames[~old] - f0]
            return out

        def seqs(frames: np.ndarray, what: str) -> list[str]:
            a, b = getattr(op, what), getattr(seg, what)
            return [a[int(op.at(np.int64(f)))] if f < f0 else b[f - f0] for f in frames.tolist()]

        pool = np.concatenate([self.carry, seg.g])
        batches = [pool[b] for b in pack_ffd(lookup(pool, "esm"), self.budget)] if len(pool) else []
        carry = np.zeros(0, dtype=np.int64)
        if not last:
            full = [int(lookup(b, "esm").sum()) >= CARRY_FILL * self.budget for b in batches]
            left = [b for b, ok in zip(batches, full) if not ok]
            carry = np.concatenate(left) if left else carry
            batches = [b for b, ok in zip(batches, full) if ok]
        # the plan's last 2 x batches_per_unit batches are units of one batch: the workers, which
        # claim in order, run out of work within one batch of each other (load balance). A segment
        # that may not be the last holds back that many full batches, so that the tail is as long
        # however few batches the last segment brings (on two H200s a last segment of 9 batches left an
        # 8-batch unit for one worker while the other ran out, 1.4 s apart: docs/benchmarks.md,
        # the gate on 1 and 2 GPUs, 600,000 reads)
        batches = self.held + batches
        keep = min(len(batches), 2 * self.bpu) if not last and self.bpu > 1 else 0
        held, batches = batches[len(batches) - keep:], batches[:len(batches) - keep]
        u0 = len(self.prep.plan.units)
        tail = min(len(batches), 2 * self.bpu) if last and self.bpu > 1 else 0
        head = batches[:len(batches) - tail]
        groups = [head[j:j + self.bpu] for j in range(0, len(head), self.bpu)] + [[b] for b in batches[len(head):]]
        units = [WorkUnit(u0 + k, len(g), sum(len(b) for b in g)) for k, g in enumerate(groups)]
        first, count, tokens = [], [], []
        for u, g in zip(units, groups):
            uf = np.concatenate(g)
            ends = np.cumsum([len(b) for b in g])
            esm = [np.arange(e - len(b), e, dtype=np.int64) for b, e in zip(g, ends)]
            dna = padded_batches(lookup(uf, "dna"), self.dna_budget)   # rows of the unit
            items = interleave([("esm", r) for r in esm], [("dna", r) for r in dna])
            self.store.put(u.index, UnitData(uf, items, seqs(uf, "nuc"), seqs(uf, "prot")))
            first.append(self.prep.n_items + sum(count))
            count.append(len(items))
            tokens.append(int(lookup(uf, "esm").sum()))
        self.open = op.keep(np.concatenate([carry, *held]) if len(carry) or held else carry, nuc, prot, f0)
        self.carry, self.held, self.n_frames = carry, held, f0 + len(nuc)
        record = PlanIndex(self.segments, units, first, count, tokens, len(batches), last)
        if self.publish:
            atomic_bytes(index_path(self.store.folder, self.segments),
                         pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), fsync=False)
        self.add_planned(record)
        return len(units)

    def add_planned(self, r: "PlanIndex") -> None:
        """Publish a segment's units (their data already in the store): the consumers see them now."""
        with self._cond:   # publish: data before the units that refer to it
            p = self.prep
            p.first = np.concatenate([p.first, np.asarray(r.first, dtype=np.int64)])
            p.count = np.concatenate([p.count, np.asarray(r.count, dtype=np.int64)])
            p.unit_tokens = np.concatenate([p.unit_tokens, np.asarray(r.tokens, dtype=np.int64)])
            p.unit_frames = np.concatenate([p.unit_frames, np.asarray([u.n_frames for u in r.units], np.int64)])
            self.real_tokens += int(sum(r.tokens))
            self.segments = r.segment + 1
            p.plan.n_batches += r.n_batches
            p.plan.packing_efficiency = (self.real_tokens / (p.plan.n_batches * self.budget)
                                         if p.plan.n_batches else 1.0)
            p.plan.units.extend(r.units)
            self.complete = r.last
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self.error = exc
            self._cond.notify_all()

    # -- the consumers' side --------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        return len(self.prep.plan.units)

    def unit_frames(self, u: int) -> np.ndarray:
        """The global frame indices of unit ``u`` (read from the store)."""
        return self.store.get(u).frames

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def snapshot(self) -> Prepared:
        """A consistent copy (the unit list copied, the arrays shared: they are only ever replaced)."""
        with self._cond:
            self.check()
            p = self.prep
            plan = Plan(p.plan.budget, list(p.plan.units), p.plan.packing_efficiency, p.plan.n_batches)
            return Prepared(plan, p.store, p.first, p.count, p.unit_tokens, p.unit_frames)

    def wait(self, more_than: int, timeout: float | None = None) -> bool:
        """Wait until there are more than ``more_than`` units or the plan is complete; True if so."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.n_units > more_than or self.complete or self.error is not None,
                                     timeout)
            self.check()
            return ok

    @classmethod
    def of(cls, frames: Sequence[tuple], budget: int, batches_per_unit: int = 8,
           dna_budget: int = DNA_NT_BUDGET) -> "PlanBuilder":
        """The plan of all ``frames`` as one segment (a single FFD pass), complete."""
        b = cls(budget, batches_per_unit, dna_budget)
        b.add(frames, last=True)
        return b


@dataclass
class PlanIndex:
    """What one segment added to the plan (its units' data are in the store): published for the
    worker processes of a run, which follow the coordinator's plan."""
    segment: int
    units: list[WorkUnit]
    first: list[int]
    count: list[int]
    tokens: list[int]
    n_batches: int
    last: bool


def index_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"index_{k:05d}.pkl"


def follow(plans: PlanBuilder, stop: threading.Event, poll: float = 0.02) -> None:
    """Build ``plans`` (a builder whose store is a published plan's folder, ``fresh=False``) from
    the segments its planner publishes, in order, until the last (a worker's planning thread).
    Errors go to ``plans.fail``."""
    k = 0
    try:
        while not stop.is_set():
            path = index_path(plans.store.folder, k)
            if not os.path.exists(path):
                stop.wait(poll)
                continue
            with open(path, "rb") as fh:
                record: PlanIndex = pickle.load(fh)   # our own file, written by this run's coordinator
            plans.add_planned(record)
            if record.last:
                return
            k += 1
    except BaseException as exc:  # noqa: BLE001 - handed to the loop, which re-raises it
        plans.fail(exc)


def emit_plan(tel, prep: Prepared, n_frames: int) -> None:
    tel.emit("plan", budget=prep.plan.budget, batches=prep.plan.n_batches, units=len(prep.plan.units),
             packing_efficiency=round(prep.plan.packing_efficiency, 5), frames=n_frames,
             esm_tokens=prep.esm_tokens)


def segments(records, segment_reads: int = SEGMENT_READS, stop: threading.Event | None = None):
    """The input in segments of ``segment_reads`` reads: (first read's index, its records, whether it
    is the last). ``records``: a list, or a ``fasta.RecordStream`` still being read -- a segment is
    given once it is read whole (``take``: the stream lets go of the reads before it); the last one
    once the whole input is read and checked (``result()`` raises the input's error here). Ends early, without a last segment, once ``stop`` is set."""
    seg = max(1, segment_reads)
    if isinstance(records, list):
        n = len(records)
        for a in range(0, n, seg) or [0]:
            yield a, records[a:a + seg], a + seg >= n
        return
    a = 0
    while True:
        while not records.wait(a + seg, 0.2):   # more than the segment read: it is not the last
            if stop is not None and stop.is_set():
                return
        if records.done:
            records.result()   # the input's error, if it earned one
            n = records.n_read
            yield a, records.take(a, a + seg), a + seg >= n
            if a + seg >= n:
                return
        else:
            yield a, records.take(a, a + seg), False
        a += seg


def produce(records, chunk_length: int, chunking: str, builder: PlanBuilder, chunks: list | None,
            frames: list | None, segment_reads: int = SEGMENT_READS, stop: threading.Event | None = None,
            hold: threading.Event | None = None, publish=None, on_segment=None) -> None:
    """Chunk and translate ``records`` (a list, or a ``fasta.RecordStream`` still being read: see
    ``segments``) segment by segment into ``chunks``/``frames`` (global indices, input order) and
    add each segment to ``builder``. Errors (the input's too) go to ``builder.fail``.
    ``hold``: after the first segment, wait until it is set (the models are loading in this
    process meanwhile: loading and compiling need the interpreter lock this work would take).
    ``publish(k, last)``: called with each segment before it is added. ``on_segment(first read, first
    chunk, records, chunks, frames)``: each segment's own, before it is published (``chunks`` and
    ``frames`` may then be None: nothing kept here)."""
    from virnucpro.prep.frames import chunk_and_translate
    n_chunks = 0
    try:
        for k, (a, part, last) in enumerate(segments(records, segment_reads, stop)):
            while k == 1 and hold is not None and not hold.wait(0.2):
                if stop is not None and stop.is_set():
                    return
            if stop is not None and stop.is_set():
                return
            ch, fr = chunk_and_translate(part, chunk_length, chunking, batch=TRANSLATE_CHUNKS, read_offset=a,
                                         chunk_offset=n_chunks)
            if on_segment is not None:
                on_segment(a, n_chunks, part, ch, fr)
            if chunks is not None:
                chunks.extend(ch)
                frames.extend(fr)
            n_chunks += len(ch)
            nuc, prot = [f[2] for f in fr], [f[3] for f in fr]
            del ch, fr, part   # (the rows keep what they need of the segment on disk)
            if publish is not None:
                publish(k, last)
            builder.add_seqs(nuc, prot, last=last)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumers, which re-raise it
        builder.fail(exc)
