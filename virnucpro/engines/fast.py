"""The fast engine: packed fp16/bf16 ESM-2, length-bucketed DNABERT-S, a DataLoader that never lets the
GPU wait, the classifier on the GPU, and per-batch telemetry.

Work plan (``packing.make_plan``): every protein is packed once, first-fit-decreasing, into
batches of ``token_budget`` tokens; consecutive batches form work units. For each unit, in order:

    DataLoader workers (processes)           GPU loop (this process)
    --------------------------------         -----------------------------------------------
    tokenize + pad DNA batch  (pinned)  -->  DNABERT-S (fp16, SDPA + ALiBi bias) -> masked mean
    tokenize + pack ESM batch (pinned)  -->  PackedESM2 (varlen attention)      -> residue mean
                                             unit complete: concat -> MLP -> softmax -> scores

Only two scores per frame leave the GPU. Per batch we record the GPU time (CUDA events), the
time the loop waited for the batch (I/O wait) and how many batches were ready (queue depth).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from virnucpro.engines.packing import make_plan, padded_batches
from virnucpro.errors import InputError
from virnucpro.models import dnabert
from virnucpro.models.esm2_fast import PackedESM2, flops_per_token, tokenize

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Measured on an H200 (docs/benchmarks.md): peak bytes of activations per packed ESM-2 3B token.
ESM_BYTES_PER_TOKEN = {2560: 120_000}
DEFAULT_MAX_BUDGET = 65536


class _Items(Dataset):
    """Item i of the work list -> host tensors for one batch (runs in DataLoader workers)."""

    def __init__(self, items, nucleotides, proteins, tokenizer, alphabet, pad_to: int | None):
        self.items, self.nuc, self.prot = items, nucleotides, proteins
        self.tokenizer, self.alphabet, self.pad_to = tokenizer, alphabet, pad_to

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        unit, kind, idx = self.items[i]
        if kind == "dna":
            enc = self.tokenizer.encode_batch([self.nuc[j] for j in idx])
            lens = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
            width = -(-int(lens.max()) // 8) * 8   # few distinct shapes: fewer kernel selections
            ids = np.full((len(enc), width), dnabert.PAD_ID, dtype=np.int32)
            for r, e in enumerate(enc):
                ids[r, :len(e.ids)] = e.ids
            return {"i": i, "unit": unit, "kind": kind, "idx": torch.from_numpy(idx),
                    "ids": torch.from_numpy(ids), "lens": torch.from_numpy(lens)}
        tok, cu, pos, max_len = tokenize(self.alphabet, [self.prot[j] for j in idx], pad_to=self.pad_to)
        return {"i": i, "unit": unit, "kind": kind, "idx": torch.from_numpy(idx), "tokens": torch.from_numpy(tok),
                "cu": torch.from_numpy(cu), "pos": torch.from_numpy(pos), "max_len": max_len}


def _collate(batch):
    return batch[0]


def matmul_peak_tflops(device: torch.device, seconds: float = 2.0) -> float:
    """Measured bf16 matmul peak: the best of repeated bursts of ten 8192^3 products on random data
    (after warm-up) over ``seconds``; cached per GPU model and torch version. The best burst, not the
    sustained mean, so that MFU is never flattered by a throttled measurement."""
    import json
    from pathlib import Path
    name = torch.cuda.get_device_name(device)
    cache = Path.home() / ".cache" / "virnucpro" / "matmul_peak.json"
    try:
        known = json.loads(cache.read_text())
    except Exception:
        known = {}
    key = f"{name}|torch {torch.__version__}"
    if key in known:
        return known[key]
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize(device)
    best, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            torch.matmul(a, b, out=c)
        end.record()
        end.synchronize()
        best = max(best, 2 * n ** 3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12)
    known[key] = round(best, 1)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=2))
    except OSError:
        pass
    return known[key]


class FastEngine:
    name = "fast"

    def __init__(self, models, device: str = "cuda", precision: str = "fp16", token_budget: int | None = None,
                 gpu_memory_gib: float | None = None, loader_workers: int = 2, batches_per_unit: int = 8,
                 dna_nt_budget: int = 262144, measure_peak: bool = True, compile: bool | None = None):
        if precision not in DTYPES:
            raise InputError(f"unknown precision {precision!r}; choose bf16, fp16 or fp32")
        self.device = torch.device(device)
        self.precision, self.dtype = precision, DTYPES[precision]
        from virnucpro.models import esm2_fast
        self.compiled = self.device.type == "cuda" if compile is None else compile
        if self.compiled:
            esm2_fast.compile_kernels()
        else:
            esm2_fast.eager_kernels()
        t0 = time.perf_counter()
        self.esm, self.alphabet = PackedESM2.from_checkpoint(models.esm, self.device, self.dtype)
        self.dna, self.tokenizer, self.dna_info = dnabert.load_dnabert(models.dnabert, self.device, self.dtype,
                                                                     use_sdpa=True)
        self.load_s = time.perf_counter() - t0
        self.loader_workers = loader_workers
        self.batches_per_unit = batches_per_unit
        self.dna_nt_budget = dna_nt_budget
        self.token_budget = token_budget or self._budget_from_memory(gpu_memory_gib)
        self.peak_tflops = (matmul_peak_tflops(self.device) if measure_peak and self.device.type == "cuda" else None)
        self.flops_per_token = flops_per_token(self.esm.num_layers, self.esm.embed_dim)
        self.packing_efficiency: float | None = None
        self.mfu_esm: float | None = None
        if self.compiled:
            self._warm_up()

    def _warm_up(self) -> None:
        """Compile the kernels now, on a batch of padding of the budget's shape, so that compiling
        counts as model loading and never stalls the embedding loop; run DNABERT-S once likewise."""
        t0 = time.perf_counter()
        tok, cu, pos, max_len = tokenize(self.alphabet, [], pad_to=self.token_budget)
        with torch.inference_mode():
            self.esm(torch.from_numpy(tok).long().to(self.device), torch.from_numpy(cu).to(self.device),
                     torch.from_numpy(pos).long().to(self.device), max_len)
            for width in (32, 48, 64):  # DNABERT-S: pick its kernels before the loop needs them
                ids = torch.full((512, width), dnabert.CLS_ID, device=self.device)
                self.dna(ids, torch.ones_like(ids, dtype=torch.bool))
        torch.cuda.synchronize(self.device)
        log.info("fast engine warm-up (torch.compile) took %.1f s", time.perf_counter() - t0)

    def _budget_from_memory(self, gpu_memory_gib: float | None) -> int:
        """Largest token budget whose activations fit beside the weights, capped at 65,536.
        ``gpu_memory_gib`` sizes it for a card of that memory (e.g. 24 for an RTX 4090)."""
        if self.device.type != "cuda":
            return 16384
        free, total = torch.cuda.mem_get_info(self.device)
        if gpu_memory_gib is not None:
            free = min(free, int(gpu_memory_gib * 2**30) - torch.cuda.memory_allocated(self.device))
        per_token = ESM_BYTES_PER_TOKEN.get(self.esm.embed_dim, 48 * self.esm.embed_dim)
        reserve = 2 * 2**30  # CUDA context, allocator slack, DNABERT-S activations
        budget = int((free - reserve) / per_token)
        budget = max(2048, min(DEFAULT_MAX_BUDGET, budget)) // 1024 * 1024
        return budget

    # -- the run -----------------------------------------------------------------------------

    def score(self, frames: Sequence[tuple], classifier, tel, on_progress: Callable[[int, int], None] | None = None,
              units: list[int] | None = None) -> np.ndarray:
        """Scores [N, 2] for kept frames (frame_id, chunk, nucleotide, protein)."""
        nuc = [f[2] for f in frames]
        prot = [f[3] for f in frames]
        esm_len = np.fromiter((len(p) + 2 for p in prot), dtype=np.int64, count=len(prot))
        plan = make_plan(esm_len, self.token_budget, self.batches_per_unit)
        self.packing_efficiency = plan.packing_efficiency
        tel.emit("plan", budget=plan.budget, batches=plan.n_batches, units=len(plan.units),
                 packing_efficiency=round(plan.packing_efficiency, 5), frames=len(frames), esm_tokens=int(esm_len.sum()))
        nuc_len = np.fromiter((len(s) for s in nuc), dtype=np.int64, count=len(nuc))
        items: list[tuple[int, str, np.ndarray]] = []
        unit_items: dict[int, int] = {}
        for u in plan.units:
            if units is not None and u.index not in units:
                continue
            uf = u.frames
            dna_b = [uf[b] for b in padded_batches(nuc_len[uf], self.dna_nt_budget)]
            for b in dna_b:
                items.append((u.index, "dna", b))
            for b in u.esm_batches:
                items.append((u.index, "esm", b))
            unit_items[u.index] = len(dna_b) + len(u.esm_batches)
        scores = np.full((len(frames), 2), np.nan, dtype=np.float32)
        classifier = classifier.to(self.device).eval()
        workers = self.loader_workers if len(items) > 1 else 0
        pad_to = plan.budget if self.compiled else None   # static shapes for the compiled kernels
        loader = DataLoader(_Items(items, nuc, prot, self.tokenizer, self.alphabet, pad_to), batch_size=1, shuffle=False,
                            num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                            prefetch_factor=4 if workers else None, persistent_workers=False)
        dim_dna, dim_esm = self.dna.config.hidden_size, self.esm.embed_dim
        bufs: dict[int, dict] = {}
        pending: list[tuple] = []          # (item dict meta, start event, end event, wait s, depth)
        totals = {"dna_s": 0.0, "esm_s": 0.0, "cls_s": 0.0, "io_wait_s": 0.0, "esm_tokens": 0, "dna_tokens": 0}
        done_frames = 0
        cuda = self.device.type == "cuda"
        it = iter(loader)
        with torch.inference_mode():
            while True:
                t_wait = time.perf_counter()
                depth = _queue_depth(it)
                try:
                    item = next(it)
                except StopIteration:
                    break
                wait = time.perf_counter() - t_wait
                totals["io_wait_s"] += wait
                u = item["unit"]
                buf = bufs.get(u)
                if buf is None:
                    n_unit = sum(len(b) for b in plan.units[u].esm_batches)
                    frames_u = plan.units[u].frames
                    local = np.empty(len(frames), dtype=np.int64)  # global frame -> row in unit
                    local[frames_u] = np.arange(n_unit)
                    buf = bufs[u] = {"dna": torch.empty(n_unit, dim_dna, device=self.device),
                                     "esm": torch.empty(n_unit, dim_esm, device=self.device),
                                     "frames": frames_u, "local": local, "left": unit_items[u]}
                rows = torch.from_numpy(buf["local"][item["idx"].numpy()]).to(self.device, non_blocking=True)
                ev0, ev1 = _event(cuda), _event(cuda)
                _record(ev0)
                t_batch = time.perf_counter()
                if item["kind"] == "dna":
                    ids = item["ids"].to(self.device, non_blocking=True).long()
                    lens = item["lens"].to(self.device, non_blocking=True)
                    mask = torch.arange(ids.shape[1], device=self.device)[None, :] < lens[:, None]
                    hid = self.dna(ids, mask)                                   # [B, L, H], zero at pads
                    buf["dna"][rows] = hid.float().sum(1) / lens[:, None].float()
                    ntok, budget = int(item["lens"].sum()), ids.shape[0] * ids.shape[1]
                else:
                    tok = item["tokens"].to(self.device, non_blocking=True).long()
                    cu = item["cu"].to(self.device, non_blocking=True)
                    pos = item["pos"].to(self.device, non_blocking=True).long()
                    hid = self.esm(tok, cu, pos, item["max_len"])
                    n_real = len(item["idx"])
                    buf["esm"][rows] = PackedESM2.mean_residues(hid, cu)[:n_real]      # padding dropped
                    ntok, budget = int(item["cu"][n_real]), plan.budget
                _record(ev1)
                host_dt = None if cuda else time.perf_counter() - t_batch  # CPU runs synchronously
                pending.append((item["kind"], u, len(item["idx"]), ntok, budget, ev0, ev1, wait, depth, host_dt))
                buf["left"] -= 1
                if buf["left"] == 0:
                    t_c = time.perf_counter()
                    feats = torch.cat([buf["dna"], buf["esm"]], dim=1)
                    s = torch.softmax(classifier(feats), dim=1).float().cpu().numpy()   # syncs
                    scores[buf["frames"]] = s
                    totals["cls_s"] += time.perf_counter() - t_c
                    done_frames += len(buf["frames"])
                    self._flush(pending, totals, tel)
                    tel.emit("unit_done", unit=u, frames=len(buf["frames"]))
                    del bufs[u]
                    if on_progress:
                        on_progress(done_frames, totals["esm_tokens"])
        if cuda:
            torch.cuda.synchronize(self.device)
        self._flush(pending, totals, tel)
        self.totals = totals
        esm_flops = self.flops_per_token * totals["esm_tokens"]
        if self.peak_tflops and totals["esm_s"] > 0:
            self.mfu_esm = esm_flops / totals["esm_s"] / (self.peak_tflops * 1e12)
        return scores

    def _flush(self, pending: list, totals: dict, tel) -> None:
        """Emit batch events for finished batches (their CUDA events are complete after a sync)."""
        for kind, unit, nseq, ntok, budget, ev0, ev1, wait, depth, host_dt in pending:
            dt = ev0.elapsed_time(ev1) / 1e3 if ev0 is not None else host_dt
            if kind == "esm":
                totals["esm_s"] += dt
                totals["esm_tokens"] += ntok
            else:
                totals["dna_s"] += dt
                totals["dna_tokens"] += ntok
            tel.emit("batch", model="esm2" if kind == "esm" else "dnabert", unit=unit, seqs=nseq, tokens=ntok,
                     budget=budget, packing_efficiency=round(ntok / budget, 5), io_wait_s=round(wait, 5),
                     queue_depth=depth, dt=round(dt, 5))
        pending.clear()


def _event(cuda: bool):
    return torch.cuda.Event(enable_timing=True) if cuda else None


def _record(ev) -> None:
    if ev is not None:
        ev.record()


def _queue_depth(it) -> int | None:
    """Batches requested from the workers and not yet taken by the GPU loop (DataLoader internals):
    how far the input pipeline runs ahead. None with no worker processes."""
    try:
        return int(it._send_idx - it._rcvd_idx) if hasattr(it, "_send_idx") else None
    except Exception:
        return None

