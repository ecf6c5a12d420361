"""The fast engine: packed fp16/bf16 ESM-2, length-bucketed DNABERT-S, a DataLoader that never lets the
GPU wait, the classifier on the GPU, and per-batch telemetry.

Work plan (``planner``): the proteins are packed first-fit-decreasing into batches of
``token_budget`` tokens, segment by segment as the host translates; consecutive batches form work units. For each unit, in order:

    DataLoader workers (processes)           GPU loop (this process)
    --------------------------------         -----------------------------------------------
    tokenize + pad DNA batch  (pinned)  -->  DNABERT-S (fp16, SDPA + ALiBi bias) -> masked mean
    tokenize + pack ESM batch (pinned)  -->  PackedESM2 (varlen attention)      -> residue mean
                                             unit complete: concat -> MLP -> softmax -> scores

Only two scores per frame leave the GPU. Per batch we record the GPU time (CUDA events), the
time the loop waited for the batch (I/O wait) and how many batches were ready (queue depth).

``run`` takes the units from a lazy source that the DataLoader's sampler consumes a few batches
ahead of the GPU: ``virnucpro.run.parallel`` passes one that claims units through files, so several
workers share a plan dynamically without the GPU loop ever waiting on a claim. A CUDA out-of-memory
error on a batch re-packs its sequences at half the token budget and retries (recursively).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from virnucpro.core.background import Background
from virnucpro.plan.packing import pack_ffd
from virnucpro.plan.planner import Prepared
from virnucpro.errors import InputError
from virnucpro.models import dnabert
from virnucpro.models.esm2_fast import PackedESM2, flops_per_token, tokenize
from virnucpro.core.nvml import nvml_handle, nvml_session

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Measured on an H200 (docs/benchmarks.md): peak bytes of activations per packed ESM-2 3B token.
ESM_BYTES_PER_TOKEN = {2560: 120_000}
DEFAULT_MAX_BUDGET = 65536


# DNABERT-S batches are padded to their longest sequence rounded up to this many tokens. 8 keeps every
# row of the [B, heads, T, T] ALiBi bias 16-byte aligned, as SDPA's memory-efficient kernel needs (an
# unaligned bias is padded into a copy by every layer's call); steps of 4 would leave 77.5% of the
# padded tokens real instead of 72.8% (cpu-dev, scripts/dna_padding.py, docs/benchmarks.md CPU-6).
DNA_WIDTH_STEP = 8


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
            width = -(-int(lens.max()) // DNA_WIDTH_STEP) * DNA_WIDTH_STEP   # fewer distinct shapes
            ids = np.full((len(enc), width), dnabert.PAD_ID, dtype=np.int32)
            for r, e in enumerate(enc):
                ids[r, :len(e.ids)] = e.ids
            return {"i": i, "unit": unit, "kind": kind, "idx": torch.from_numpy(idx),
                    "ids": torch.from_numpy(ids), "lens": torch.from_numpy(lens),
                    "rows": torch.from_numpy(dnabert.real_token_rows(lens, width))}
        tok, cu, pos, max_len = tokenize(self.alphabet, [self.prot[j] for j in idx], pad_to=self.pad_to)
        return {"i": i, "unit": unit, "kind": kind, "idx": torch.from_numpy(idx), "tokens": torch.from_numpy(tok),
                "cu": torch.from_numpy(cu), "pos": torch.from_numpy(pos), "max_len": max_len}


class _UnitSampler(Sampler):
    """Item indices of the units ``source`` yields, unit after unit. The DataLoader draws from it
    in the main process only as far ahead as its prefetch, so a claiming source claims units just
    before the GPU needs them."""

    def __init__(self, source: Iterable[int], first: np.ndarray, count: np.ndarray):
        self.source, self.first, self.count = source, first, count

    def __iter__(self) -> Iterator[int]:
        for u in self.source:
            yield from range(int(self.first[u]), int(self.first[u] + self.count[u]))


def _maybe_fake_oom(tokens: int, model: str) -> None:
    """Test hook: VIRNUCPRO_FAKE_OOM_TOKENS=N makes any batch of more than N tokens raise CUDA OOM,
    so the back-off path can be exercised on a CPU."""
    limit = os.environ.get("VIRNUCPRO_FAKE_OOM_TOKENS")
    if limit and model == "esm" and tokens > int(limit):
        raise torch.OutOfMemoryError(f"fake CUDA out of memory ({tokens} > {limit} tokens)")


def default_token_budget(device: str, esm_path, dnabert_weights_bytes: int = 0, precision: str = "fp16",
                         gpu_memory_gib: float | None = None, embed_dim: int = 2560, sharing: int = 1) -> int:
    """The token budget a fresh GPU can afford, decided before any model is loaded so that every
    worker of a run (and a resumed run) uses the same plan: free memory (split between ``sharing``
    workers on the GPU) minus the weights (from the checkpoint's size) minus a reserve, over the
    measured bytes per token; capped at 65,536."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return 16384
    free = free_gpu_memory(dev)
    if gpu_memory_gib is not None:
        free = min(free, int(gpu_memory_gib * 2**30))
    free //= max(1, sharing)
    from pathlib import Path
    ckpt = Path(esm_path).stat().st_size if esm_path else 0
    weights = ckpt * (2 if precision == "fp32" else 1) + dnabert_weights_bytes   # checkpoints hold fp16
    per_token = ESM_BYTES_PER_TOKEN.get(embed_dim, 48 * embed_dim)
    reserve = 2 * 2**30  # CUDA context, allocator slack, DNABERT-S activations
    budget = int((free - weights - reserve) / per_token)
    return max(2048, min(DEFAULT_MAX_BUDGET, budget)) // 1024 * 1024


def _compile_cache_counts() -> dict[str, int]:
    """torch.compile's FX-graph cache hits and misses in this process so far (a miss costs seconds)."""
    try:
        from torch._dynamo.utils import counters
        c = counters["inductor"]
        return {"fxgraph_cache_hit": int(c.get("fxgraph_cache_hit", 0)),
                "fxgraph_cache_miss": int(c.get("fxgraph_cache_miss", 0))}
    except Exception:   # private API: absent or renamed in another torch
        return {}


CUDA_CONTEXT_BYTES = 600 * 2**20   # what a process's CUDA context takes of the GPU (H200, torch 2.11)


def free_gpu_memory(dev: torch.device) -> int:
    """Free bytes of a GPU for a process about to create its CUDA context there. Without a context in
    this process it asks NVML (creating one would cost the coordinator of a multi-GPU run about a
    second and GPU 0 some memory) and subtracts what the context will take; else the CUDA runtime."""
    if not torch.cuda.is_initialized():
        with nvml_session() as nv:
            try:
                h = nvml_handle(nv, dev.index if dev.index is not None else 0) if nv is not None else None
                if h is not None:
                    return max(0, int(nv.nvmlDeviceGetMemoryInfo(h).free) - CUDA_CONTEXT_BYTES)
            except Exception:   # no NVML: the CUDA runtime answers
                pass
    free, _ = torch.cuda.mem_get_info(dev)
    return free


def release_compile_workers() -> Background | None:
    """torch.compile starts a pool of compile processes on its first use (even when every kernel
    comes from its cache); after the warm-up the shapes are compiled, so shut the pool down in the
    background (at exit it costs ~1.2 s, H200-12). A later compile starts a new one. Returns the
    call (waited for at the end of ``run``) or None when torch has no such pool."""
    try:
        from torch._inductor.async_compile import shutdown_compile_workers
    except Exception:   # private API: absent or renamed in another torch
        return None

    def shutdown() -> None:
        try:
            shutdown_compile_workers()
        except Exception as exc:  # noqa: BLE001 - never fail a run over a helper pool
            log.debug("compile-worker shutdown: %s", exc)

    return Background(shutdown, name="compile-pool-shutdown")


GELU_CHOICES = ("exact", "tanh-epilogue")
GELU_DEFAULT = "tanh-epilogue"


def gelu_epilogue(precision: str, device_type: str = "cuda") -> bool:
    """ESM-2's fc1 + GELU as one cuBLASLt GEMM with its GELU epilogue (fp16/bf16 on a GPU, the
    default: ESM-2 3.8% faster, H200-16)? That epilogue computes GELU's tanh approximation (at most
    4.7e-4 from the exact GELU per activation; agreement with the reference engine measured on 10,000
    reads in H200-17: frames 99.94%, chunks 99.93%), so never in fp32, which must match fair-esm to
    1e-4, nor on a CPU (no fused kernel there). VIRNUCPRO_ESM_GELU=exact|tanh-epilogue chooses."""
    choice = os.environ.get("VIRNUCPRO_ESM_GELU", GELU_DEFAULT)
    if choice not in GELU_CHOICES:
        raise InputError(f"VIRNUCPRO_ESM_GELU={choice!r}: choose one of {', '.join(GELU_CHOICES)}")
    return choice == "tanh-epilogue" and precision != "fp32" and device_type == "cuda"


def esm_residual(precision: str) -> torch.dtype:
    """ESM-2's residual stream: fp32 whatever the matmul precision (the default), or with
    VIRNUCPRO_ESM_RESIDUAL=half the matmul dtype (fp16/bf16; fp32 runs stay fp32). An experiment
    switch: the LayerNorm + residual passes (~41 ms of a 65,536-token batch's ~650 ms on an H200,
    H200-21) read and write half as much: ESM-2 1.4-1.5% faster, 99.94% of frame labels as the
    default's (H200-29/30, synthetic weights). Off by default: real ESM-2 weights may carry residual
    values fp16 cannot hold, which synthetic ones cannot show."""
    value = os.environ.get("VIRNUCPRO_ESM_RESIDUAL", "fp32").strip().lower()
    if value not in ("fp32", "half"):
        raise InputError(f"VIRNUCPRO_ESM_RESIDUAL={value!r}: fp32 (the default) or half")
    return DTYPES[precision] if value == "half" else torch.float32


KERNEL_CHOICES = ("triton", "compile", "eager")


def esm_kernels(device_type: str, compile: bool | None = None) -> str:
    """How ESM-2's element-wise work (LayerNorm, residual adds, rotary) runs between its GEMMs:

        triton   two hand-written Triton kernels (models/esm2_triton.py): the default on a GPU
        compile  torch.compile's fused kernels: as fast, but every process pays ~4-5 s at start-up to
                 import the compiler and trace (docs/benchmarks.md, H200-20); batches padded to the budget
        eager    plain PyTorch ops: CPUs, and --no-compile

    VIRNUCPRO_ESM_KERNELS=triton|compile|eager chooses on a GPU; ``compile=False`` (--no-compile) is eager."""
    value = os.environ.get("VIRNUCPRO_ESM_KERNELS", "").strip().lower()
    if value and value not in KERNEL_CHOICES:
        raise InputError(f"VIRNUCPRO_ESM_KERNELS={value!r}: one of {', '.join(KERNEL_CHOICES)}")
    if compile is False:
        return "eager"
    if device_type != "cuda":
        return "compile" if compile else "eager"
    from virnucpro.models import esm2_triton
    if value == "triton" and not esm2_triton.available():
        raise InputError("VIRNUCPRO_ESM_KERNELS=triton: Triton is not installed (pip install triton)")
    return value or ("triton" if esm2_triton.available() else "compile")


class ProfileWindow:
    """VIRNUCPRO_TORCH_PROFILE=PATH[:FIRST[:COUNT]]: a torch.profiler trace (host calls and GPU
    kernels, Chrome trace format, gzipped) of the GPU loop's batches FIRST to FIRST+COUNT-1 (default
    20 and 30: two or three unit boundaries), written to PATH with the device and process id added to
    its name. For finding where the GPU waits (e.g. the utilisation dips of docs/benchmarks.md H200-28);
    it slows the profiled batches, so never in a timed run."""

    def __init__(self, device: torch.device) -> None:
        spec = os.environ.get("VIRNUCPRO_TORCH_PROFILE", "")
        self.prof = None
        self.path, self.first, self.count = None, 20, 30
        if not spec:
            return
        parts = spec.rsplit(":", 2)
        while len(parts) > 1 and not parts[-1].isdigit():   # a path with ':' in it
            parts = [":".join(parts[:2])] + parts[2:]
        try:
            nums = [int(x) for x in parts[1:]]
        except ValueError:
            raise InputError(f"VIRNUCPRO_TORCH_PROFILE={spec!r}: PATH[:FIRST[:COUNT]]") from None
        self.first, self.count = (nums + [self.first, self.count][len(nums):])[:2]
        tag = f"{device.type}{device.index if device.index is not None else ''}-{os.getpid()}"
        root, dot, ext = parts[0].rpartition(".")
        self.path = f"{root}.{tag}.{ext}" if dot and "/" not in ext else f"{parts[0]}.{tag}"
        self.device = device

    def step(self, batch: int) -> None:
        """Called once a batch is queued, with its index in the run (0, 1, ...)."""
        if self.path is None:
            return
        from torch.profiler import ProfilerActivity, profile
        if batch + 1 == self.first:
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.prof = profile(activities=acts)
            self.prof.__enter__()
        elif self.prof is not None and batch + 1 == self.first + self.count:
            self.close()

    def close(self) -> None:
        if self.prof is None:
            return
        import gzip
        import tempfile
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.prof.__exit__(None, None, None)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            self.prof.export_chrome_trace(tmp.name)
        with open(tmp.name, "rb") as src, gzip.open(self.path + ".gz", "wb") as dst:
            dst.write(src.read())
        os.unlink(tmp.name)
        log.info("torch profile of batches %d-%d written to %s.gz", self.first, self.first + self.count - 1, self.path)
        self.prof, self.path = None, None


def dnabert_compiled() -> bool:
    """DNABERT-S's layers as one torch.compile'd function with dynamic batch and width (on a GPU,
    with the compiled ESM-2), when VIRNUCPRO_DNABERT_COMPILE=1. Off by default: DNABERT-S gets 11%
    faster (H200-16; agreement with the reference engine 100% of frames, 99.98% of chunks, H200-17),
    i.e. ~0.3% of a run, but loading its dynamic-shape kernels adds 1-3 s to every start-up (H200-18),
    which does not divide by the GPU count."""
    value = os.environ.get("VIRNUCPRO_DNABERT_COMPILE", "0")
    if value not in ("0", "1"):
        raise InputError(f"VIRNUCPRO_DNABERT_COMPILE={value!r}: 1 (compile) or 0 (the default)")
    return value == "1"


def _loader_worker_init(_worker_id: int) -> None:
    """In a loader process, an exception in a helper thread of multiprocessing goes to the log, not as
    a traceback to the user's terminal: the resource sharer that hands tensors' file descriptors to
    the worker reports "connection reset" through ``sys.excepthook`` when that worker has just died
    (e.g. killed with its unit, which the worker's coordinator reports in one line)."""
    def thread_hook(args) -> None:
        log.debug("loader thread %s: %s: %s", getattr(args.thread, "name", "?"), args.exc_type.__name__, args.exc_value)

    def sys_hook(exc_type, exc, tb) -> None:
        log.debug("loader process: %s: %s", exc_type.__name__, exc)
    threading.excepthook = thread_hook
    sys.excepthook = sys_hook


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
                 measure_peak: bool = True, compile: bool | None = None, keep_features: bool = False):
        """``keep_features``: hand each unit's classifier input (DNABERT-S 768 + ESM-2 values per
        frame, float32) to ``on_unit`` as ``info["features"]`` (``--save-embeddings``)."""
        if precision not in DTYPES:
            raise InputError(f"unknown precision {precision!r}; choose bf16, fp16 or fp32")
        self.device = torch.device(device)
        phases: dict[str, float] = {}     # where start-up goes (seconds), logged with the load_models stage
        t = t_init = time.perf_counter()
        self._bind_device()
        if self.device.type == "cuda":
            torch.cuda.init()
            torch.empty(1, device=self.device)   # the CUDA context of this process
        phases["cuda_init"], t = time.perf_counter() - t, time.perf_counter()
        self.precision, self.dtype = precision, DTYPES[precision]
        self.residual = esm_residual(precision)
        from virnucpro.models import esm2_fast
        esm2_fast.OPTIONS["gelu_epilogue"] = gelu_epilogue(precision, self.device.type)
        self.kernels = esm_kernels(self.device.type, compile)
        self.compiled = self.kernels == "compile"
        if self.compiled:   # imports torch.compile's compiler (seconds of Python) while the weights copy
            def timed_setup() -> float:
                t_setup = time.perf_counter()
                esm2_fast.compile_kernels()
                return time.perf_counter() - t_setup
            setup = Background(timed_setup, name="compile-setup")
        else:
            setup = None
            esm2_fast.triton_kernels() if self.kernels == "triton" else esm2_fast.eager_kernels()
        # decided before loading, as every worker of a run (and a resumed run) decides it
        self.token_budget = token_budget or default_token_budget(device, models.esm, precision=precision,
                                                                 gpu_memory_gib=gpu_memory_gib)
        if gpu_memory_gib is not None and self.device.type == "cuda":   # behave as that GPU would
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_memory_gib * 2**30 / total), self.device)
        warm: list[Background] = []

        def warm_triton(dim: int, heads: int) -> None:   # beside the weight copy (its threads wait on I/O)
            if self.kernels == "triton":
                from virnucpro.models import esm2_triton
                warm.append(Background(self._in_device, esm2_triton.warm, dim, heads, self.dtype, self.device,
                                       self.residual, name="triton-warm"))
        t0 = t = time.perf_counter()
        # DNABERT-S (small) loads and runs its warm-up batches in a thread while ESM-2's weights copy
        dna_loading = Background(self._in_device, self._load_dnabert, models.dnabert, name="dnabert-load")
        self.esm, self.alphabet = PackedESM2.from_checkpoint(models.esm, self.device, self.dtype, phases,
                                                             on_open=warm_triton)
        self.esm.residual_dtype = self.residual
        phases["esm_weights"], t = time.perf_counter() - t, time.perf_counter()
        self.dna, self.tokenizer, self.dna_info, dna_phases = dna_loading.result()
        phases.update(dna_phases)
        phases["dnabert_wait"], t = time.perf_counter() - t, time.perf_counter()
        if setup is not None:
            phases["compile_setup"] = setup.result()
        if warm:
            try:
                phases["triton_warm"] = warm[0].result()
            except Exception as exc:  # noqa: BLE001 - e.g. a GPU Triton cannot compile for: slower, same results
                log.warning("Triton kernels unavailable (%s: %s); ESM-2 runs with eager kernels",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.kernels = "eager"
                esm2_fast.eager_kernels()
        if self.device.type == "cuda" and dnabert_compiled():   # its batches vary in both batch size and width
            self.dna.layer_fn = esm2_fast.compile_dynamic(dnabert.layer_forward)
        phases["setup_wait"], t = time.perf_counter() - t, time.perf_counter()
        self.load_s = time.perf_counter() - t0
        self.loader_workers = loader_workers
        self.batches_per_unit = batches_per_unit
        self.keep_features = keep_features
        self.peak_tflops = (matmul_peak_tflops(self.device) if measure_peak and self.device.type == "cuda" else None)
        phases["matmul_peak"], t = time.perf_counter() - t, time.perf_counter()
        self.flops_per_token = flops_per_token(self.esm.num_layers, self.esm.embed_dim)
        self.mfu_esm: float | None = None
        self._pool_shutdown: Background | None = None
        if self.device.type == "cuda":
            self._warm_up()
            phases["warmup"] = time.perf_counter() - t
            if self.compiled or dnabert_compiled():
                phases.update(_compile_cache_counts())
        phases["total"] = time.perf_counter() - t_init
        self.startup = {k: round(v, 3) if isinstance(v, float) else v for k, v in phases.items()}

    def _warm_up(self) -> None:
        """Run ESM-2's first two layers on a batch of padding of the budget's shape (the loop's
        largest batch: the memory check; with torch.compile, the compilation), so that it counts as
        model loading and never stalls the embedding loop; compiled DNABERT-S likewise."""
        t0 = time.perf_counter()
        budget = self.token_budget
        with torch.inference_mode():
            while True:   # a budget too large for this GPU: compile the shape its batches will back off to
                tok, cu, pos, max_len = tokenize(self.alphabet, [], pad_to=budget)
                try:
                    self.esm(torch.from_numpy(tok).long().to(self.device), torch.from_numpy(cu).to(self.device),
                             torch.from_numpy(pos).long().to(self.device), max_len, n_layers=2)
                    break
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    if budget // 2 < 1024:
                        raise
                    log.warning("warm-up: a batch of %d tokens does not fit in GPU memory; batches will be "
                                "re-packed at half the budget (lower --token-budget to avoid this)", budget)
                    budget //= 2
        if dnabert_compiled():   # compiled after loading: its kernels are compiled now
            self._warm_dnabert(self.dna)
        torch.cuda.synchronize(self.device)
        log.info("fast engine warm-up (%s kernels) took %.1f s", self.kernels, time.perf_counter() - t0)
        if self.compiled or dnabert_compiled():
            self._pool_shutdown = release_compile_workers()

    def _load_dnabert(self, folder) -> tuple:
        """DNABERT-S's model, tokenizer, info and phases (dnabert_weights, dnabert_warm): on a GPU it
        also runs a batch of each padded width the loop uses, so that its kernels are loaded."""
        t = time.perf_counter()
        dna, tokenizer, info = dnabert.load_dnabert(folder, self.device, self.dtype, use_sdpa=True)
        phases = {"dnabert_weights": time.perf_counter() - t}
        if self.device.type == "cuda":
            t = time.perf_counter()
            self._warm_dnabert(dna)
            phases["dnabert_warm"] = time.perf_counter() - t
        return dna, tokenizer, info, phases

    def _warm_dnabert(self, dna) -> None:
        with torch.inference_mode(), dnabert.sdpa_backends(self.device):
            for width in (32, 48, 64):  # DNABERT-S: pick its kernels before the loop needs them
                ids = torch.full((512, width), dnabert.CLS_ID, device=self.device)
                if dna.layer_fn is None:   # as the loop runs it: the dense layers on the real tokens
                    lens = np.full(512, width - 3)
                    dnabert.mean_unpadded(dna, ids, torch.from_numpy(lens).to(self.device),
                                          torch.from_numpy(dnabert.real_token_rows(lens, width)).to(self.device))
                else:
                    dna(ids, torch.ones_like(ids, dtype=torch.bool))
        torch.cuda.current_stream(self.device).synchronize()   # (not the device: the weight copy's streams)

    def _in_device(self, fn, *args):
        """``fn(*args)`` with this engine's GPU current (a new thread starts on GPU 0)."""
        self._bind_device()
        return fn(*args)

    def _bind_device(self) -> None:
        """Make this GPU the calling thread's current CUDA device (it is per thread): CUDA events,
        the loader's pinning thread and allocations without an explicit device go to it, not to GPU 0."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    # -- the run -----------------------------------------------------------------------------

    def run(self, prep: "Prepared", classifier, tel, source: Iterable[int],
            on_unit: Callable[[int, np.ndarray, np.ndarray, dict], None],
            on_progress: Callable[[int, int], None] | None = None, stop: threading.Event | None = None,
            on_unit_start: Callable[[int], None] | None = None,
            more: Callable[[], tuple["Prepared", Iterable[int]] | None] | None = None) -> dict:
        """Embed and classify the units ``source`` yields, in that order; ``on_unit(u, frame indices,
        scores [n, 2], info)`` when a unit is complete. ``source`` is consumed lazily by the loader,
        a little ahead of the GPU (it may claim units as it goes); it must not block. With ``stop``
        set, returns after the current batch, dropping unfinished units; ``on_unit_start(u)`` once the
        loop has queued a unit's first batch and handed on every unit before it. ``more()``, asked
        (it must not block) once ``source`` is used up: a grown plan (a superset of ``prep``) and the
        source of its new units, which the loop goes on with while the GPU still works on the last
        batches queued -- or None to finish. Returns the totals."""
        plan = prep.plan
        self._bind_device()   # the loop may run in another thread than the one that loaded the models
        classifier = classifier.to(self.device).eval()

        def batches(prep, source):
            workers = self.loader_workers if len(prep.items) > 1 else 0
            pad_to = prep.plan.budget if self.compiled else None   # static shapes for the compiled kernels
            return iter(DataLoader(_Items(prep.items, prep.nuc, prep.prot, self.tokenizer, self.alphabet, pad_to),
                                   batch_size=1, sampler=_UnitSampler(source, prep.first, prep.count),
                                   num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                                   prefetch_factor=4 if workers else None, persistent_workers=False,
                                   worker_init_fn=_loader_worker_init if workers else None))
        dim_dna, dim_esm = self.dna.config.hidden_size, self.esm.embed_dim
        bufs: dict[int, dict] = {}
        pending: list[tuple] = []          # (item dict meta, start event, end event, wait s, depth)
        totals = {"dna_s": 0.0, "esm_s": 0.0, "cls_s": 0.0, "io_wait_s": 0.0, "esm_tokens": 0, "dna_tokens": 0,
                  "units": 0, "frames": 0, "oom_retries": 0, "stopped": False}
        cuda = self.device.type == "cuda"
        finishing: list[tuple] = []        # units whose scores are on their way to the host, in order
        batches_done = [0]                 # batches taken off ``pending`` so far (``pending`` is in order)
        profile = ProfileWindow(self.device)

        def finish(block: bool) -> None:
            """Hand on the units whose scores have reached the host (all of them with ``block``)."""
            while finishing:
                u, buf, s_host, f_host, c0, c1, t_c, ready, last_batch = finishing[0]
                if ready is not None and not block and not ready.query():
                    return
                if ready is not None:
                    ready.synchronize()
                finishing.pop(0)
                totals["cls_s"] += c0.elapsed_time(c1) / 1e3 if cuda else time.perf_counter() - t_c
                totals["units"] += 1
                totals["frames"] += len(buf["frames"])
                self._flush(pending, totals, tel, last_batch - batches_done[0])   # the unit's batches and earlier
                batches_done[0] = last_batch
                info = {"wall_s": round(time.perf_counter() - buf["t0"], 4), "frames": len(buf["frames"]),
                        "tokens": int(prep.unit_tokens[u])}
                tel.emit("unit_done", unit=u, **info)
                if f_host is not None:
                    info["features"] = f_host.numpy()
                on_unit(u, buf["frames"], s_host.numpy(), info)
                if on_progress:
                    on_progress(totals["frames"], totals["esm_tokens"])

        it = batches(prep, source)
        with torch.inference_mode():
            while True:
                if stop is not None and stop.is_set():
                    totals["stopped"] = True
                    break
                t_wait = time.perf_counter()
                depth = _queue_depth(it)
                try:
                    item = next(it)
                except StopIteration:
                    grown = more() if more is not None else None
                    if grown is None:
                        break
                    prep, source = grown   # the plan grew meanwhile: its new units, no pause
                    plan = prep.plan
                    del it
                    it = batches(prep, source)
                    continue
                except RuntimeError:
                    if stop is not None and stop.is_set():   # Ctrl-C also reached the loader's workers
                        totals["stopped"] = True
                        break
                    raise
                wait = time.perf_counter() - t_wait
                totals["io_wait_s"] += wait
                u = item["unit"]
                buf = bufs.get(u)
                if buf is None:
                    frames_u = plan.units[u].frames
                    local = torch.empty(len(prep.nuc), dtype=torch.long, device=self.device)  # frame -> row
                    local[_to_device(torch.from_numpy(frames_u), self.device)] = torch.arange(len(frames_u),
                                                                                             device=self.device)
                    buf = bufs[u] = {"dna": torch.empty(len(frames_u), dim_dna, device=self.device),
                                     "esm": torch.empty(len(frames_u), dim_esm, device=self.device),
                                     "frames": frames_u, "local": local, "left": int(prep.count[u]),
                                     "t0": time.perf_counter()}
                    new_unit = True
                else:
                    new_unit = False
                rows = buf["local"][item["idx"].to(self.device, non_blocking=True)]   # no host sync
                ev0, ev1 = _event(cuda), _event(cuda)
                _record(ev0)
                t_batch = time.perf_counter()
                if item["kind"] == "dna":
                    buf["dna"][rows] = self._dna_batch(item, totals, tel, u)
                    ntok, budget = int(item["lens"].sum()), item["ids"].shape[0] * item["ids"].shape[1]
                else:
                    n_real = len(item["idx"])
                    buf["esm"][rows] = self._esm_batch(item, prep, plan.budget, totals, tel, u)
                    ntok, budget = int(item["cu"][n_real]), plan.budget
                _record(ev1)
                host_dt = None if cuda else time.perf_counter() - t_batch  # CPU runs synchronously
                pending.append((item["kind"], u, len(item["idx"]), ntok, budget, ev0, ev1, wait, depth, host_dt))
                profile.step(batches_done[0] + len(pending) - 1)   # this batch's index in the run
                # units completed before this batch are handed on now that the GPU has this batch queued
                # (waiting for their scores before queueing more would leave the GPU idle meanwhile); all
                # of them before a new unit counts as started, so that a worker lost in it loses no other
                finish(block=new_unit)
                if new_unit and on_unit_start is not None:
                    on_unit_start(u)
                buf["left"] -= 1
                if buf["left"] == 0:
                    c0, c1 = _event(cuda), _event(cuda)
                    _record(c0)
                    t_c = time.perf_counter()
                    feats = torch.cat([buf["dna"], buf["esm"]], dim=1)
                    s = torch.softmax(classifier(feats), dim=1).float()
                    _record(c1)
                    s_host = torch.empty(s.shape, dtype=s.dtype, pin_memory=cuda)
                    s_host.copy_(s, non_blocking=cuda)
                    f_host = None
                    if self.keep_features:   # [n, 768 + D] float32, rows in the unit's frame order
                        f_host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=cuda)
                        f_host.copy_(feats, non_blocking=cuda)
                    ready = _event(cuda)
                    _record(ready)
                    finishing.append((u, buf, s_host, f_host, c0, c1, t_c, ready, batches_done[0] + len(pending)))
                    del bufs[u]
        finish(block=True)
        profile.close()
        del it   # shuts the loader's workers down
        if cuda:
            torch.cuda.synchronize(self.device)
        if self._pool_shutdown is not None:   # long done in any real run; never racing the exit's own
            self._pool_shutdown.result()
        self._flush(pending, totals, tel)
        totals["busy_s"] = totals["dna_s"] + totals["esm_s"] + totals["cls_s"]
        self.totals = totals
        esm_flops = self.flops_per_token * totals["esm_tokens"]
        if self.peak_tflops and totals["esm_s"] > 0:
            self.mfu_esm = esm_flops / totals["esm_s"] / (self.peak_tflops * 1e12)
        return totals

    # -- one batch, with out-of-memory back-off ---------------------------------------------------

    def _dna_batch(self, item: dict, totals: dict, tel, unit: int) -> torch.Tensor:
        """Masked-mean DNABERT-S embeddings [B, H] of a padded batch; on OOM, halves and retries."""
        ids = item["ids"].to(self.device, non_blocking=True).long()
        lens = item["lens"].to(self.device, non_blocking=True)
        rows = item["rows"].to(self.device, non_blocking=True)   # the loader computed them
        return self._dna_rows(ids, lens, item["lens"], totals, tel, unit, rows)

    # On CUDA out-of-memory the retry runs after the ``except`` block: inside it, the exception's
    # traceback still holds the failed batch's activations, and the smaller retry would fail too.

    def _dna_rows(self, ids: torch.Tensor, lens: torch.Tensor, lens_host: torch.Tensor, totals: dict, tel,
                  unit: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``lens_host``: ``lens`` on the host (the real tokens' positions are computed there)."""
        try:
            _maybe_fake_oom(int(lens.shape[0]) * ids.shape[1], "dna")
            with dnabert.sdpa_backends(self.device):
                if self.dna.layer_fn is None:   # the dense layers on the real tokens only
                    if rows is None:
                        rows = _to_device(torch.from_numpy(dnabert.real_token_rows(lens_host.numpy(), ids.shape[1])),
                                          self.device)
                    return dnabert.mean_unpadded(self.dna, ids, lens, rows)
                mask = torch.arange(ids.shape[1], device=self.device)[None, :] < lens[:, None]
                hid = self.dna(ids, mask)                               # [B, L, H], zero at pads (compiled layers)
                return hid.float().sum(1) / lens[:, None].float()
        except torch.OutOfMemoryError:
            if ids.shape[0] < 2:
                raise
        n = ids.shape[0]
        self._after_oom(totals, tel, unit, "dnabert", n * ids.shape[1])
        h = n // 2
        return torch.cat([self._dna_rows(ids[:h], lens[:h], lens_host[:h], totals, tel, unit),
                          self._dna_rows(ids[h:], lens[h:], lens_host[h:], totals, tel, unit)])

    def _esm_batch(self, item: dict, prep: "Prepared", budget: int, totals: dict, tel, unit: int) -> torch.Tensor:
        """Residue-mean ESM-2 embeddings [n, D] of a packed batch (padding dropped); on OOM the
        batch's proteins are re-packed at half the token budget and each part retried so."""
        n_real = len(item["idx"])
        try:
            _maybe_fake_oom(int(item["cu"][n_real]), "esm")
            tok = item["tokens"].to(self.device, non_blocking=True).long()
            cu = item["cu"].to(self.device, non_blocking=True)
            pos = item["pos"].to(self.device, non_blocking=True).long()
            hid = self.esm(tok, cu, pos, item["max_len"])
            return PackedESM2.mean_residues(hid, cu)[:n_real]
        except torch.OutOfMemoryError:
            pass
        return self._esm_rows(item["idx"].numpy(), prep, budget // 2, totals, tel, unit)

    def _esm_rows(self, idx: np.ndarray, prep: "Prepared", budget: int, totals: dict, tel, unit: int) -> torch.Tensor:
        lens = prep.esm_len[idx]
        if budget < int(lens.max()):
            raise RuntimeError(f"out of GPU memory even for one protein of {int(lens.max())} tokens "
                                         f"(unit {unit}); lower --token-budget or use a larger GPU")
        self._after_oom(totals, tel, unit, "esm2", budget * 2)
        out = torch.empty(len(idx), self.esm.embed_dim, device=self.device)
        for part in pack_ffd(lens, budget):
            sub = idx[part]
            where = torch.from_numpy(part).to(self.device)
            # compiled kernels: pad to the smaller budget, one more static shape per halving
            tok, cu, pos, max_len = tokenize(self.alphabet, [prep.prot[j] for j in sub],
                                             pad_to=budget if self.compiled else None)
            try:
                _maybe_fake_oom(int(cu[len(sub)]), "esm")
                cu_t = torch.from_numpy(cu).to(self.device)
                hid = self.esm(torch.from_numpy(tok).long().to(self.device), cu_t,
                               torch.from_numpy(pos).long().to(self.device), max_len)
                out[where] = PackedESM2.mean_residues(hid, cu_t)[:len(sub)]
                continue
            except torch.OutOfMemoryError:
                pass
            out[where] = self._esm_rows(sub, prep, budget // 2, totals, tel, unit)
        return out

    def _after_oom(self, totals: dict, tel, unit: int, model: str, budget: int) -> None:
        totals["oom_retries"] += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning("out of GPU memory on a %s batch of unit %d (budget %d tokens): retrying at half the budget",
                    model, unit, budget)
        tel.emit("oom", unit=unit, model=model, budget=budget, retry_budget=budget // 2)

    def _flush(self, pending: list, totals: dict, tel, n: int | None = None) -> None:
        """Emit batch events for the first ``n`` (default all) pending batches, which are finished
        (their CUDA events complete)."""
        n = len(pending) if n is None else n
        for kind, unit, nseq, ntok, budget, ev0, ev1, wait, depth, host_dt in pending[:n]:
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
        del pending[:n]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
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


def _queue_depth(it) -> int | None:
    """Batches requested from the workers and not yet taken by the GPU loop (DataLoader internals):
    how far the input pipeline runs ahead. None with no worker processes."""
    try:
        return int(it._send_idx - it._rcvd_idx) if hasattr(it, "_send_idx") else None
    except Exception:
        return None

