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

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from virnucpro.plan.packing import Plan, WorkUnit, pack_ffd, padded_batches

SEGMENT_READS = 65536
# The way units are cut from the input: part of a run's checkpoint identity (a unit index means
# other frames once it changes, so --resume refuses checkpoints of another version). 2: the last
# 2 x batches_per_unit full batches of a segment wait for the next (2026-11-30).
PLAN_VERSION = 2
CARRY_FILL = 0.97
# DNABERT-S batches: cut from a unit's frames sorted by nucleotide length, at most DNA_NT_BUDGET
# nucleotides (batch size x longest) each. Sorted by DNABERT-S token count (at most DNA_TOKEN_BUDGET
# padded tokens, [CLS]/[SEP] included) 72.8% of the padded tokens were real instead of 65.4%, but on an
# H200 the token counting (host work beside the GPU loop) cost more than the padding it saved: DNABERT-S
# 4.16 s vs 3.98 s, utilisation 95.4% vs 97.5% on 100,000 reads (docs/benchmarks.md#exp-dna-batches-tokens).
DNA_TOKEN_BUDGET = 81920
DNA_NT_BUDGET = 262144


def interleave(esm: list, dna: list) -> list:
    """A unit's batches in the order the GPU runs them: ESM-2 and DNABERT-S alternating, ESM-2 first,
    the rest of the longer list at the end."""
    out = []
    for k in range(max(len(esm), len(dna))):
        out.extend(esm[k:k + 1] + dna[k:k + 1])
    return out


@dataclass
class Prepared:
    """A plan plus the loader items of every unit (ESM and DNA batches alternating, consecutive),
    and per unit its first item and item count."""
    plan: Plan
    nuc: list[str]
    prot: list[str]
    esm_len: np.ndarray                       # [N] ESM-2 tokens per frame (incl. BOS/EOS)
    items: list[tuple[int, str, np.ndarray]]  # (unit, "dna" | "esm", frame indices)
    first: np.ndarray                         # [U] index of the unit's first item
    count: np.ndarray                         # [U] items of the unit
    unit_tokens: np.ndarray                   # [U] ESM-2 tokens of the unit


class PlanBuilder:
    """A ``Prepared`` that grows segment by segment (``add``), read from other threads through
    ``snapshot``/``wait``. ``complete`` once the last segment is in."""

    def __init__(self, budget: int, batches_per_unit: int = 8, dna_budget: int = DNA_NT_BUDGET,
                 dna_lengths: Callable[[list[str]], np.ndarray] | None = None):
        """``dna_lengths(nucleotide sequences)``: their DNABERT-S token counts ([CLS] and [SEP]
        included); DNABERT-S batches are then cut from a unit's frames sorted by token count, each
        at most ``dna_budget`` padded tokens (batch size x longest). Without it (or without
        ``dna_len`` given to ``add_seqs``), by nucleotide length, ``dna_budget`` in nucleotides: the
        default, production's (``dna_batching()`` without VIRNUCPRO_DNA_BATCHES)."""
        self.budget, self.bpu, self.dna_budget, self.dna_lengths = budget, batches_per_unit, dna_budget, dna_lengths
        empty = np.zeros(0, dtype=np.int64)
        self.prep = Prepared(Plan(budget, [], 1.0, 0), [], [], empty, [], empty, empty, empty)
        self.carry = empty                       # frames waiting for the next segment
        self.held: list[np.ndarray] = []         # full batches held back for the plan's tail
        self.dna_len = empty                     # per frame: DNABERT-S tokens (or nucleotides)
        self.real_tokens = 0
        self.complete = False
        self.error: BaseException | None = None  # set by a producer that failed
        self._cond = threading.Condition()

    # -- the producer's side ------------------------------------------------------------------
    def add(self, frames: Sequence[tuple], last: bool) -> int:
        """Add a segment's frames (frame_id, chunk index, nucleotide, protein); returns the
        number of new units."""
        return self.add_seqs([f[2] for f in frames], [f[3] for f in frames], last)

    def segment_dna_lengths(self, nuc: list[str]) -> np.ndarray | None:
        """What ``add_seqs`` would sort DNABERT-S batches by, computed once to be published."""
        return self.dna_lengths(nuc) if self.dna_lengths is not None else None

    def add_seqs(self, nuc: list[str], prot: list[str], last: bool, dna_len: np.ndarray | None = None) -> int:
        """Add a segment's frames as their nucleotide and protein sequences (all the plan needs);
        ``dna_len``: their DNABERT-S token counts when already known (else computed here)."""
        p = self.prep
        f0 = len(p.nuc)
        esm_len = np.concatenate([p.esm_len, np.fromiter((len(s) + 2 for s in prot), np.int64, len(prot))])
        if dna_len is None:
            dna_len = self.segment_dna_lengths(nuc)
        if dna_len is None:
            dna_len = np.fromiter((len(s) for s in nuc), np.int64, len(nuc))
        if len(dna_len) != len(nuc):
            raise ValueError(f"{len(dna_len)} DNABERT-S lengths for {len(nuc)} sequences")
        all_dna_len = np.concatenate([self.dna_len, np.asarray(dna_len, dtype=np.int64)])
        pool = np.concatenate([self.carry, np.arange(f0, f0 + len(nuc), dtype=np.int64)])
        batches = [pool[b] for b in pack_ffd(esm_len[pool], self.budget)] if len(pool) else []
        carry = np.zeros(0, dtype=np.int64)
        if not last:
            full = [int(esm_len[b].sum()) >= CARRY_FILL * self.budget for b in batches]
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
        u0, i0 = len(p.plan.units), len(p.items)
        tail = min(len(batches), 2 * self.bpu) if last and self.bpu > 1 else 0
        head = batches[:len(batches) - tail]
        groups = [head[j:j + self.bpu] for j in range(0, len(head), self.bpu)] + [[b] for b in batches[len(head):]]
        units = [WorkUnit(u0 + k, g) for k, g in enumerate(groups)]
        items: list[tuple[int, str, np.ndarray]] = []
        first, count, tokens = [], [], []
        for u in units:
            uf = u.frames
            first.append(i0 + len(items))
            items.extend(interleave([(u.index, "esm", b) for b in u.esm_batches],
                                    [(u.index, "dna", uf[b]) for b in padded_batches(all_dna_len[uf], self.dna_budget)]))
            count.append(i0 + len(items) - first[-1])
            tokens.append(u.tokens(esm_len))
        with self._cond:   # publish: data before the units that refer to it
            p.nuc.extend(nuc)
            p.prot.extend(prot)
            p.esm_len, self.dna_len, self.carry, self.held = esm_len, all_dna_len, carry, held
            p.items.extend(items)
            p.first = np.concatenate([p.first, np.asarray(first, dtype=np.int64)])
            p.count = np.concatenate([p.count, np.asarray(count, dtype=np.int64)])
            p.unit_tokens = np.concatenate([p.unit_tokens, np.asarray(tokens, dtype=np.int64)])
            self.real_tokens += int(sum(tokens))
            p.plan.n_batches += len(batches)
            p.plan.packing_efficiency = (self.real_tokens / (p.plan.n_batches * self.budget)
                                         if p.plan.n_batches else 1.0)
            p.plan.units.extend(units)
            self.complete = last
            self._cond.notify_all()
        return len(units)

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self.error = exc
            self._cond.notify_all()

    # -- the consumers' side --------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        return len(self.prep.plan.units)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def snapshot(self) -> Prepared:
        """A consistent copy (the lists copied, the arrays shared: they are only ever replaced)."""
        with self._cond:
            self.check()
            p = self.prep
            plan = Plan(p.plan.budget, list(p.plan.units), p.plan.packing_efficiency, p.plan.n_batches)
            return Prepared(plan, list(p.nuc), list(p.prot), p.esm_len, list(p.items), p.first, p.count,
                            p.unit_tokens)

    def wait(self, more_than: int, timeout: float | None = None) -> bool:
        """Wait until there are more than ``more_than`` units or the plan is complete; True if so."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.n_units > more_than or self.complete or self.error is not None,
                                     timeout)
            self.check()
            return ok

    @classmethod
    def of(cls, frames: Sequence[tuple], budget: int, batches_per_unit: int = 8,
           dna_budget: int = DNA_NT_BUDGET, dna_lengths=None) -> "PlanBuilder":
        """The plan of all ``frames`` as one segment (a single FFD pass), complete."""
        b = cls(budget, batches_per_unit, dna_budget, dna_lengths)
        b.add(frames, last=True)
        return b


def emit_plan(tel, prep: Prepared, n_frames: int) -> None:
    tel.emit("plan", budget=prep.plan.budget, batches=prep.plan.n_batches, units=len(prep.plan.units),
             packing_efficiency=round(prep.plan.packing_efficiency, 5), frames=n_frames,
             esm_tokens=int(prep.esm_len.sum()))


def segments(records, segment_reads: int = SEGMENT_READS, stop: threading.Event | None = None):
    """The input in segments of ``segment_reads`` reads: (first read's index, its records, whether it
    is the last). ``records``: a list, or a ``fasta.RecordStream`` still being read -- a segment is
    given once it is read whole; the last one once the whole input is read and checked (``result()``
    raises the input's error here). Ends early, without a last segment, once ``stop`` is set."""
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
            whole = records.result()
            yield a, whole[a:a + seg], a + seg >= len(whole)
            if a + seg >= len(whole):
                return
        else:
            yield a, records.records[a:a + seg], False
        a += seg


def produce(records, chunk_length: int, chunking: str, builder: PlanBuilder, chunks: list, frames: list,
            segment_reads: int = SEGMENT_READS, stop: threading.Event | None = None,
            hold: threading.Event | None = None, publish=None) -> None:
    """Chunk and translate ``records`` (a list, or a ``fasta.RecordStream`` still being read: see
    ``segments``) segment by segment into ``chunks``/``frames`` (global indices, input order) and
    add each segment to ``builder``. Errors (the input's too) go to ``builder.fail``.
    ``hold``: after the first segment, wait until it is set (the models are loading in this
    process meanwhile: loading and compiling need the interpreter lock this work would take).
    ``publish(k, nucleotides, proteins, last, dna_lengths)``: called with each segment before it is added
    (worker processes build their plan from what it publishes)."""
    from virnucpro.prep.frames import chunk_and_translate
    try:
        for k, (a, part, last) in enumerate(segments(records, segment_reads, stop)):
            while k == 1 and hold is not None and not hold.wait(0.2):
                if stop is not None and stop.is_set():
                    return
            if stop is not None and stop.is_set():
                return
            ch, fr = chunk_and_translate(part, chunk_length, chunking, read_offset=a,
                                         chunk_offset=len(chunks))
            chunks.extend(ch)
            frames.extend(fr)
            nuc, prot = [f[2] for f in fr], [f[3] for f in fr]
            dna_len = builder.segment_dna_lengths(nuc)   # tokenised once, here
            if publish is not None:
                publish(k, nuc, prot, last, dna_len)
            builder.add_seqs(nuc, prot, last=last, dna_len=dna_len)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumers, which re-raise it
        builder.fail(exc)
