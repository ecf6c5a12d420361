"""How much the fast engine may put on a GPU, and how fast that GPU multiplies: the token budget of a
packed ESM-2 batch (decided before any model is loaded), the GPU's free memory, the measured bf16
matmul peak that MFU is computed against."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from virnucpro.core.nvml import nvml_handle, nvml_session
from virnucpro.models.layout import esm_weights_path

# Measured on an H200 (docs/benchmarks.md#h200-memory): peak bytes of activations per packed ESM-2 3B token.
ESM_BYTES_PER_TOKEN = {2560: 120_000}
DEFAULT_MAX_BUDGET = 65536
CPU_BUDGET = 16384
CUDA_CONTEXT_BYTES = 600 * 2**20   # what a process's CUDA context takes of the GPU (H200, torch 2.11)


def default_token_budget(device: str, esm_path, dnabert_weights_bytes: int = 0, precision: str = "fp16",
                         gpu_memory_gib: float | None = None, embed_dim: int = 2560, sharing: int = 1) -> int:
    """The token budget a fresh GPU can afford, decided before any model is loaded so that every
    worker of a run (and a resumed run) uses the same plan: free memory (split between ``sharing``
    workers on the GPU) minus the weights (from the checkpoint's size) minus a reserve, over the
    measured bytes per token; capped at 65,536 (16,384 on a CPU)."""
    if torch.device(device).type != "cuda":
        return CPU_BUDGET
    return min(DEFAULT_MAX_BUDGET, memory_token_budget(device, esm_path, dnabert_weights_bytes, precision,
                                                       gpu_memory_gib, embed_dim, sharing))


def memory_token_budget(device: str, esm_path, dnabert_weights_bytes: int = 0, precision: str = "fp16",
                        gpu_memory_gib: float | None = None, embed_dim: int = 2560, sharing: int = 1) -> int:
    """``default_token_budget`` without its cap: the most tokens the memory rule allows (``virnucpro
    tune`` sweeps up to it), a multiple of 1,024 and at least 2,048."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return CPU_BUDGET
    free = free_gpu_memory(dev)
    if gpu_memory_gib is not None:
        free = min(free, int(gpu_memory_gib * 2**30))
    free //= max(1, sharing)
    ckpt = esm_weights_path(Path(esm_path)).stat().st_size if esm_path else 0   # (a HuggingFace folder's file)
    weights = ckpt * (2 if precision == "fp32" else 1) + dnabert_weights_bytes   # checkpoints hold fp16
    per_token = ESM_BYTES_PER_TOKEN.get(embed_dim, 48 * embed_dim)
    reserve = 2 * 2**30  # CUDA context, allocator slack, DNABERT-S activations
    budget = int((free - weights - reserve) / per_token)
    return max(2048, budget) // 1024 * 1024


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


def matmul_peak_tflops(device: torch.device, seconds: float = 2.0) -> float:
    """Measured bf16 matmul peak: the best of repeated bursts of ten 8192^3 products on random data
    (after warm-up) over ``seconds``; cached per GPU model and torch version. The best burst, not the
    sustained mean, so that MFU is never flattered by a throttled measurement."""
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
