"""The fast engine's GPU loop: batch after batch from the loader, DNABERT-S or ESM-2 into the unit's
feature buffer, and once a unit's last batch is queued its classifier scores on their way to the host.

Nothing here waits for the GPU while it has work queued: per-batch times are CUDA events read only
once the batch is known finished (``flush``), a unit's scores are copied into pinned memory and
handed on (``on_unit``) when their event says they arrived, and host tensors reach the device by
non-blocking copies from pinned memory. A CUDA out-of-memory error on a batch re-runs it in halves
(DNABERT-S) or re-packed at half the token budget (ESM-2), recursively.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from virnucpro.engines.fast.loader import DnaBatch, EsmBatch, batches, queue_depth
from virnucpro.engines.fast.profile import ProfileWindow
from virnucpro.models import dnabert
from virnucpro.models.esm2_fast import PackedESM2, tokenize
from virnucpro.plan.packing import pack_ffd

log = logging.getLogger("virnucpro.engines.fast")


@dataclass
class UnitBuffer:
    """A unit being embedded: its features, filled batch by batch (rows in the unit's frame order)."""
    frames: np.ndarray      # [n] the unit's frames (global indices; a batch's ``idx`` are rows of it)
    dna: torch.Tensor       # [n, 768] DNABERT-S means
    esm: torch.Tensor       # [n, D] ESM-2 means
    left: int               # batches still to come
    t0: float               # when its first batch was taken


@dataclass
class QueuedBatch:
    """A batch queued on the GPU; its telemetry is emitted once its CUDA events are complete."""
    kind: str               # "dna" | "esm"
    unit: int
    seqs: int
    tokens: int             # real tokens
    budget: int             # tokens the batch could hold
    start: object           # CUDA events (None on a CPU)
    end: object
    wait_s: float           # how long the loop waited for the loader
    depth: int | None       # batches ready in the loader when the loop asked
    host_dt: float | None   # on a CPU: the batch's time (it ran synchronously)


@dataclass
class ScoredUnit:
    """A complete unit whose scores (and features) are on their way to pinned host memory."""
    unit: int
    buf: UnitBuffer
    scores: torch.Tensor            # [n, 2] float32, host (pinned on a GPU)
    features: torch.Tensor | None   # [n, 768 + D] float32, host, with keep_features
    cls_start: object               # CUDA events around the classifier (None on a CPU)
    cls_end: object
    t_cls: float
    ready: object                   # recorded after the copies (None on a CPU)
    last_batch: int                 # batches queued in the run up to and with this unit's last


class GpuLoop:
    """One ``FastEngine.run``: see its docstring for the callbacks."""

    def __init__(self, engine, prep, classifier, tel, on_unit: Callable, on_progress: Callable | None,
                 stop: threading.Event | None, on_unit_start: Callable | None, more: Callable | None):
        self.engine, self.prep, self.classifier, self.tel = engine, prep, classifier, tel
        self.on_unit, self.on_progress, self.stop = on_unit, on_progress, stop
        self.on_unit_start, self.more = on_unit_start, more
        self.device = engine.device
        self.cuda = self.device.type == "cuda"
        self.bufs: dict[int, UnitBuffer] = {}
        self.pending: list[QueuedBatch] = []      # in order; the finished ones are flushed
        self.finishing: list[ScoredUnit] = []     # in order
        self.batches_done = 0                     # batches taken off ``pending`` so far
        self.totals = {"dna_s": 0.0, "esm_s": 0.0, "cls_s": 0.0, "io_wait_s": 0.0, "esm_tokens": 0,
                       "dna_tokens": 0, "units": 0, "frames": 0, "oom_retries": 0, "stopped": False}
        self.profile = ProfileWindow(engine.config.profile, self.device)

    def _batches(self, prep, source):
        eng = self.engine
        return batches(prep, source, eng.tokenizer, eng.alphabet, eng.loader_workers, pin=self.cuda,
                       prefetch=eng.loader_prefetch)

    def run(self, source: Iterable[int]) -> dict:
        """The units of ``source`` (and of what ``more`` adds), in order; returns the totals once
        every batch is finished (the loader's workers shut down)."""
        totals, stop = self.totals, self.stop
        it = self._batches(self.prep, source)
        with torch.inference_mode():
            while True:
                if stop is not None and stop.is_set():
                    totals["stopped"] = True
                    break
                t_wait = time.perf_counter()
                depth = queue_depth(it)
                try:
                    item = next(it)
                except StopIteration:
                    grown = self.more() if self.more is not None else None
                    if grown is None:
                        break
                    self.prep, source = grown   # the plan grew meanwhile: its new units, no pause
                    del it
                    it = self._batches(self.prep, source)
                    continue
                except RuntimeError:
                    if stop is not None and stop.is_set():   # Ctrl-C also reached the loader's workers
                        totals["stopped"] = True
                        break
                    raise
                wait = time.perf_counter() - t_wait
                totals["io_wait_s"] += wait
                self._take(item, wait, depth)
        self.finish(block=True)
        self.profile.close()
        del it   # shuts the loader's workers down
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return totals

    def _take(self, item: DnaBatch | EsmBatch, wait: float, depth: int | None) -> None:
        """Queue one batch on the GPU into its unit's buffer; queue the unit's classifier after its last."""
        u = item.unit
        buf = self.bufs.get(u)
        new_unit = buf is None
        if new_unit:
            buf = self.bufs[u] = self._new_buffer(u, getattr(item, "frames", None))
        rows = item.idx.to(self.device, non_blocking=True)   # no host sync
        ev0, ev1 = _event(self.cuda), _event(self.cuda)
        _record(ev0)
        t_batch = time.perf_counter()
        if isinstance(item, DnaBatch):
            buf.dna[rows] = self._dna_batch(item, u)
            ntok, budget = int(item.lens.sum()), item.ids.shape[0] * item.ids.shape[1]
        else:
            n_real = len(item.idx)
            buf.esm[rows] = self._esm_batch(item, u)
            ntok, budget = int(item.cu[n_real]), self.prep.plan.budget
        _record(ev1)
        host_dt = None if self.cuda else time.perf_counter() - t_batch  # CPU runs synchronously
        self.pending.append(QueuedBatch(item.kind, u, len(item.idx), ntok, budget, ev0, ev1, wait, depth, host_dt))
        self.profile.step(self.batches_done + len(self.pending) - 1)   # this batch's index in the run
        # units completed before this batch are handed on now that the GPU has this batch queued
        # (waiting for their scores before queueing more would leave the GPU idle meanwhile); all
        # of them before a new unit counts as started, so that a worker lost in it loses no other
        self.finish(block=new_unit)
        if new_unit and self.on_unit_start is not None:
            self.on_unit_start(u)
        buf.left -= 1
        if buf.left == 0:
            self._classify(u, buf)

    def _new_buffer(self, u: int, frames: torch.Tensor | None) -> UnitBuffer:
        """``frames``: the unit's, as its first batch brings them from the loader (else read here)."""
        frames_u = frames.numpy().copy() if frames is not None else self.prep.unit(u).frames
        eng = self.engine
        return UnitBuffer(frames_u, torch.empty(len(frames_u), eng.dna.config.hidden_size, device=self.device),
                          torch.empty(len(frames_u), eng.esm.embed_dim, device=self.device),
                          int(self.prep.count[u]), time.perf_counter())

    def _classify(self, u: int, buf: UnitBuffer) -> None:
        """Queue the classifier on the unit's features and the copies of its scores to the host."""
        cuda = self.cuda
        c0, c1 = _event(cuda), _event(cuda)
        _record(c0)
        t_c = time.perf_counter()
        feats = torch.cat([buf.dna, buf.esm], dim=1)
        s = torch.softmax(self.classifier(feats), dim=1).float()
        _record(c1)
        s_host = torch.empty(s.shape, dtype=s.dtype, pin_memory=cuda)
        s_host.copy_(s, non_blocking=cuda)
        f_host = None
        if self.engine.keep_features:   # [n, 768 + D] float32, rows in the unit's frame order
            f_host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=cuda)
            f_host.copy_(feats, non_blocking=cuda)
        ready = _event(cuda)
        _record(ready)
        self.finishing.append(ScoredUnit(u, buf, s_host, f_host, c0, c1, t_c, ready,
                                         self.batches_done + len(self.pending)))
        del self.bufs[u]

    def finish(self, block: bool) -> None:
        """Hand on the units whose scores have reached the host (all of them with ``block``)."""
        totals = self.totals
        while self.finishing:
            f = self.finishing[0]
            if f.ready is not None and not block and not f.ready.query():
                return
            if f.ready is not None:
                f.ready.synchronize()
            self.finishing.pop(0)
            totals["cls_s"] += f.cls_start.elapsed_time(f.cls_end) / 1e3 if self.cuda else time.perf_counter() - f.t_cls
            totals["units"] += 1
            totals["frames"] += len(f.buf.frames)
            self.flush(f.last_batch - self.batches_done)   # the unit's batches and earlier
            self.batches_done = f.last_batch
            info = {"wall_s": round(time.perf_counter() - f.buf.t0, 4), "frames": len(f.buf.frames),
                    "tokens": int(self.prep.unit_tokens[f.unit])}
            self.tel.emit("unit_done", unit=f.unit, **info)
            if f.features is not None:
                info["features"] = f.features.numpy()
            self.on_unit(f.unit, f.buf.frames, f.scores.numpy(), info)
            if self.on_progress:
                self.on_progress(totals["frames"], totals["esm_tokens"])

    def flush(self, n: int | None = None) -> None:
        """Emit batch events for the first ``n`` (default all) pending batches, which are finished
        (their CUDA events complete)."""
        totals = self.totals
        n = len(self.pending) if n is None else n
        for b in self.pending[:n]:
            dt = b.start.elapsed_time(b.end) / 1e3 if b.start is not None else b.host_dt
            if b.kind == "esm":
                totals["esm_s"] += dt
                totals["esm_tokens"] += b.tokens
            else:
                totals["dna_s"] += dt
                totals["dna_tokens"] += b.tokens
            self.tel.emit("batch", model="esm2" if b.kind == "esm" else "dnabert", unit=b.unit, seqs=b.seqs,
                          tokens=b.tokens, budget=b.budget, packing_efficiency=round(b.tokens / b.budget, 5),
                          io_wait_s=round(b.wait_s, 5), queue_depth=b.depth, dt=round(dt, 5))
        del self.pending[:n]

    # -- one batch, with out-of-memory back-off ---------------------------------------------------

    def _fake_oom(self, tokens: int, model: str) -> None:
        """Test hook (the engine's ``fake_oom_tokens``): an ESM-2 batch of more tokens raises CUDA
        OOM, so that the back-off path runs on a CPU."""
        limit = self.engine.fake_oom_tokens
        if limit and model == "esm" and tokens > limit:
            raise torch.OutOfMemoryError(f"fake CUDA out of memory ({tokens} > {limit} tokens)")

    def _dna_batch(self, item: DnaBatch, unit: int) -> torch.Tensor:
        """Masked-mean DNABERT-S embeddings [B, H] of a padded batch; on OOM, halves and retries."""
        ids = item.ids.to(self.device, non_blocking=True).long()
        lens = item.lens.to(self.device, non_blocking=True)
        rows = item.rows.to(self.device, non_blocking=True)   # the loader computed them
        return self._dna_rows(ids, lens, item.lens, unit, rows)

    # On CUDA out-of-memory the retry runs after the ``except`` block: inside it, the exception's
    # traceback still holds the failed batch's activations, and the smaller retry would fail too.

    def _dna_rows(self, ids: torch.Tensor, lens: torch.Tensor, lens_host: torch.Tensor, unit: int,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """``lens_host``: ``lens`` on the host (the real tokens' positions are computed there)."""
        dna = self.engine.dna
        try:
            self._fake_oom(int(lens.shape[0]) * ids.shape[1], "dna")
            with dnabert.sdpa_backends(self.device):
                if dna.layer_fn is None:   # the dense layers on the real tokens only
                    if rows is None:
                        rows = to_device(torch.from_numpy(dnabert.real_token_rows(lens_host.numpy(), ids.shape[1])),
                                         self.device)
                    return dnabert.mean_unpadded(dna, ids, lens, rows)
                mask = torch.arange(ids.shape[1], device=self.device)[None, :] < lens[:, None]
                hid = dna(ids, mask)                                    # [B, L, H], zero at pads (compiled layers)
                return hid.float().sum(1) / lens[:, None].float()
        except torch.OutOfMemoryError:
            if ids.shape[0] < 2:
                raise
        n = ids.shape[0]
        self._after_oom(unit, "dnabert", n * ids.shape[1])
        h = n // 2
        return torch.cat([self._dna_rows(ids[:h], lens[:h], lens_host[:h], unit),
                          self._dna_rows(ids[h:], lens[h:], lens_host[h:], unit)])

    def _esm_batch(self, item: EsmBatch, unit: int) -> torch.Tensor:
        """Residue-mean ESM-2 embeddings [n, D] of a packed batch; on OOM the batch's proteins are
        re-packed at half the token budget and each part retried so."""
        n_real = len(item.idx)
        try:
            self._fake_oom(int(item.cu[n_real]), "esm")
            tok = item.tokens.to(self.device, non_blocking=True).long()
            cu = item.cu.to(self.device, non_blocking=True)
            pos = item.pos.to(self.device, non_blocking=True).long()
            hid = self.engine.esm(tok, cu, pos, item.max_len)
            return PackedESM2.mean_residues(hid, cu)[:n_real]
        except torch.OutOfMemoryError:
            pass
        return self._esm_rows(item.idx.numpy(), self.prep.plan.budget // 2, unit)

    def _esm_rows(self, idx: np.ndarray, budget: int, unit: int) -> torch.Tensor:
        prot, esm = self.prep.unit(unit).prot, self.engine.esm
        lens = np.fromiter((len(prot[j]) + 2 for j in idx.tolist()), np.int64, len(idx))
        if budget < int(lens.max()):
            raise RuntimeError(f"out of GPU memory even for one protein of {int(lens.max())} tokens "
                               f"(unit {unit}); lower --token-budget or use a larger GPU")
        self._after_oom(unit, "esm2", budget * 2)
        out = torch.empty(len(idx), esm.embed_dim, device=self.device)
        for part in pack_ffd(lens, budget):
            sub = idx[part]
            where = torch.from_numpy(part).to(self.device)
            tok, cu, pos, max_len = tokenize(self.engine.alphabet, [prot[j] for j in sub])
            try:
                self._fake_oom(int(cu[len(sub)]), "esm")
                cu_t = torch.from_numpy(cu).to(self.device)
                hid = esm(torch.from_numpy(tok).long().to(self.device), cu_t,
                          torch.from_numpy(pos).long().to(self.device), max_len)
                out[where] = PackedESM2.mean_residues(hid, cu_t)[:len(sub)]
                continue
            except torch.OutOfMemoryError:
                pass
            out[where] = self._esm_rows(sub, budget // 2, unit)
        return out

    def _after_oom(self, unit: int, model: str, budget: int) -> None:
        self.totals["oom_retries"] += 1
        if self.cuda:
            torch.cuda.empty_cache()
        log.warning("out of GPU memory on a %s batch of unit %d (budget %d tokens): retrying at half the budget",
                    model, unit, budget)
        self.tel.emit("oom", unit=unit, model=model, budget=budget, retry_budget=budget // 2)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the GPU: a copy from pageable memory would
    first wait for every queued kernel; from pinned memory it is queued like them."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _event(cuda: bool):
    return torch.cuda.Event(enable_timing=True) if cuda else None


def _record(ev) -> None:
    if ev is not None:
        ev.record()
