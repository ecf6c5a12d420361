"""FastEngine: loading, warm-up and the public ``run``.

Start-up overlaps what it can: DNABERT-S loads (and runs its warm-up batches) in a thread while
ESM-2's weights are copied to the GPU, and the Triton kernels are loaded beside that copy. The
choices of ``EngineConfig`` are set on this engine's own model instances (ESM-2's kernels and GELU,
DNABERT-S's layer function): two engines in one process never share one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

import numpy as np
import torch

from virnucpro.core.background import Background
from virnucpro.engines.config import EngineConfig
from virnucpro.engines.fast.budget import default_token_budget, matmul_peak_tflops
from virnucpro.engines.fast.loop import GpuLoop
from virnucpro.errors import InputError
from virnucpro.models import dnabert
from virnucpro.models.esm2_fast import PackedESM2, flops_per_token, tokenize
from virnucpro.plan.planner import Prepared

log = logging.getLogger("virnucpro.engines.fast")

# the weights' dtype as loaded (and DNABERT-S's matmul dtype); fp8 quantises ESM-2's GEMM weights
# after loading them in fp16 (PackedESM2.to_fp8), DNABERT-S stays fp16
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float16}


def indexed(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:N`` (N = the current CUDA device): torch.cuda.set_device and the memory cap
    need an index (``virnucpro tune --device cuda`` passes none; predict's workers always name one)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class FastEngine:
    name = "fast"

    def __init__(self, models, device: str = "cuda", config: EngineConfig | None = None,
                 token_budget: int | None = None, batches_per_unit: int = 8,
                 measure_peak: bool = True, keep_features: bool = False, fake_oom_tokens: int | None = None):
        """``config``: how it computes (precision, kernels, GELU, ...; default ``EngineConfig()``).
        ``token_budget``: the run's (default: sized from free GPU memory). ``keep_features``: hand
        each unit's classifier input (DNABERT-S 768 + ESM-2 values per frame, float32) to ``on_unit``
        as ``info["features"]`` (``--save-embeddings``). ``fake_oom_tokens``: a test hook, an ESM-2
        batch of more tokens raises CUDA out-of-memory."""
        self.config = config = (config if config is not None else EngineConfig()).resolved(torch.device(device).type)
        if config.precision not in DTYPES:
            raise InputError(f"unknown precision {config.precision!r}; choose {', '.join(DTYPES)}")
        self.device = indexed(torch.device(device))
        if config.precision == "fp8" and self.device.type == "cuda":
            from virnucpro.models.esm2_fp8 import refuse_unsupported
            refuse_unsupported(self.device)
        self.fake_oom_tokens = fake_oom_tokens
        phases: dict[str, float] = {}     # where start-up goes (seconds), logged with the load_models stage
        t = t_init = time.perf_counter()
        self._bind_device()
        if self.device.type == "cuda":
            torch.cuda.init()
            torch.empty(1, device=self.device)   # the CUDA context of this process
        phases["cuda_init"], t = time.perf_counter() - t, time.perf_counter()
        self.precision, self.dtype = config.precision, DTYPES[config.precision]
        from virnucpro.models import esm2_fp8, esm2_triton
        self.kernels = config.kernels_on(self.device.type, esm2_triton.available())
        gelu = "tanh-epilogue" if config.gelu_epilogue(self.device.type) else "exact"
        self.dna_compiled = config.dnabert_compile and self.device.type == "cuda"
        # decided before loading, as every worker of a run (and a resumed run) decides it
        self.token_budget = token_budget or default_token_budget(device, models.esm, precision=config.precision,
                                                                 gpu_memory_gib=config.gpu_memory_gib)
        if config.gpu_memory_gib is not None and self.device.type == "cuda":   # behave as that GPU would
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, config.gpu_memory_gib * 2**30 / total), self.device)
        warm: list[Background] = []

        def warm_triton(dim: int, heads: int) -> None:   # beside the weight copy (its threads wait on I/O)
            if self.kernels == "triton":
                fp8 = config.precision == "fp8"
                dtype = esm2_fp8.out_dtype_on(self.device) if fp8 else self.dtype
                warm.append(Background(self._in_device, esm2_triton.warm, dim, heads, dtype, self.device, fp8,
                                       name="triton-warm"))
        t0 = t = time.perf_counter()
        # DNABERT-S (small) loads and runs its warm-up batches in a thread while ESM-2's weights copy
        dna_loading = Background(self._in_device, self._load_dnabert, models.dnabert, name="dnabert-load")
        self.esm, self.alphabet = PackedESM2.from_checkpoint(models.esm, self.device, self.dtype, phases,
                                                             on_open=warm_triton)
        if config.precision == "fp8":
            self.esm.to_fp8()
        self.esm.set_kernels(self.kernels, gelu)
        phases["esm_weights"], t = time.perf_counter() - t, time.perf_counter()
        self.dna, self.tokenizer, self.dna_info, dna_phases = dna_loading.result()
        phases.update(dna_phases)
        phases["dnabert_wait"], t = time.perf_counter() - t, time.perf_counter()
        if warm:
            try:
                phases["triton_warm"] = warm[0].result()
            except Exception as exc:  # noqa: BLE001 - e.g. a GPU Triton cannot compile for: slower, same results
                log.warning("Triton kernels unavailable (%s: %s); ESM-2 runs with eager kernels",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                self.kernels = "eager"
                self.esm.set_kernels("eager")
        if self.dna_compiled:   # its batches vary in both batch size and width
            self.dna.layer_fn = compile_dynamic(dnabert.layer_forward)
        phases["setup_wait"], t = time.perf_counter() - t, time.perf_counter()
        self.load_s = time.perf_counter() - t0
        self.loader_workers = config.loader_workers     # (resolved: never None here)
        self.loader_prefetch = config.loader_prefetch
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
            if self.dna_compiled:
                phases.update(_compile_cache_counts())
        phases["total"] = time.perf_counter() - t_init
        self.startup = {k: round(v, 3) if isinstance(v, float) else v for k, v in phases.items()}

    def _warm_up(self) -> None:
        """Run ESM-2's first two layers on a batch of padding of the budget's shape (the loop's
        largest batch: the memory check), so that it counts as model loading and never stalls the
        embedding loop; compiled DNABERT-S likewise (its compilation)."""
        t0 = time.perf_counter()
        budget = self.token_budget
        with torch.inference_mode():
            while True:   # a budget too large for this GPU: warm the shape its batches will back off to
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
        if self.dna_compiled:   # compiled after loading: its kernels are compiled now
            self._warm_dnabert(self.dna)
        torch.cuda.synchronize(self.device)
        log.info("fast engine warm-up (%s kernels) took %.1f s", self.kernels, time.perf_counter() - t0)
        if self.dna_compiled:
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

    def run(self, prep: Prepared, classifier, tel, source: Iterable[int],
            on_unit: Callable[[int, np.ndarray, np.ndarray, dict], None],
            on_progress: Callable[[int, int], None] | None = None, stop: threading.Event | None = None,
            on_unit_start: Callable[[int], None] | None = None,
            more: Callable[[], tuple[Prepared, Iterable[int]] | None] | None = None) -> dict:
        """Embed and classify the units ``source`` yields, in that order; ``on_unit(u, frame indices,
        scores [n, 2], info)`` when a unit is complete. ``source`` is consumed lazily by the loader,
        a little ahead of the GPU (it may claim units as it goes); it must not block. With ``stop``
        set, returns after the current batch, dropping unfinished units; ``on_unit_start(u)`` once the
        loop has queued a unit's first batch and handed on every unit before it. ``more()``, asked
        (it must not block) once ``source`` is used up: a grown plan (a superset of ``prep``) and the
        source of its new units, which the loop goes on with while the GPU still works on the last
        batches queued -- or None to finish. Returns the totals."""
        self._bind_device()   # the loop may run in another thread than the one that loaded the models
        classifier = classifier.to(self.device).eval()
        loop = GpuLoop(self, prep, classifier, tel, on_unit, on_progress, stop, on_unit_start, more)
        totals = loop.run(source)
        if self._pool_shutdown is not None:   # long done in any real run; never racing the exit's own
            self._pool_shutdown.result()
        loop.flush()
        totals["busy_s"] = totals["dna_s"] + totals["esm_s"] + totals["cls_s"]
        self.totals = totals
        esm_flops = self.flops_per_token * totals["esm_tokens"]
        if self.peak_tflops and totals["esm_s"] > 0:
            self.mfu_esm = esm_flops / totals["esm_s"] / (self.peak_tflops * 1e12)
        return totals


# -- torch.compile, for DNABERT-S (EngineConfig.dnabert_compile) -------------------------------------

def compile_dynamic(fn):
    """``fn`` compiled once for all shapes (dynamic sizes), running eager if compiling fails."""
    return _with_eager_fallback(torch.compile(fn, dynamic=True), fn)


def _with_eager_fallback(compiled, eager):
    """Use the compiled kernel; if compilation fails (no compiler, unsupported GPU), say so once
    and run eager from then on: slower, same results."""
    state = {"fn": compiled}

    def call(*args):
        try:
            return state["fn"](*args)
        except Exception as exc:
            if state["fn"] is eager or isinstance(exc, torch.OutOfMemoryError):   # OOM: the caller backs off
                raise
            log.warning("torch.compile failed (%s: %s); running eager",
                        type(exc).__name__, str(exc).splitlines()[0][:200])
            state["fn"] = eager
            return eager(*args)
    return call


def release_compile_workers() -> Background | None:
    """torch.compile starts a pool of compile processes on its first use (even when every kernel
    comes from its cache); after the warm-up the shapes are compiled, so shut the pool down in the
    background (at exit it cost ~1.2 s on an H200, docs/benchmarks.md#h200-startup). A later compile starts a new
    one. Returns the call (waited for at the end of ``run``) or None when torch has no such pool."""
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


def _compile_cache_counts() -> dict[str, int]:
    """torch.compile's FX-graph cache hits and misses in this process so far (a miss costs seconds)."""
    try:
        from torch._dynamo.utils import counters
        c = counters["inductor"]
        return {"fxgraph_cache_hit": int(c.get("fxgraph_cache_hit", 0)),
                "fxgraph_cache_miss": int(c.get("fxgraph_cache_miss", 0))}
    except Exception:   # private API: absent or renamed in another torch
        return {}
