"""Which workers a run has: one device string per worker process on this host, or this process's
rank under torchrun; and, before torch is imported, whether ``predict`` will start worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from virnucpro.core.nvml import cuda_visible_devices, gpu_count
from virnucpro.errors import InputError


@dataclass(frozen=True)
class Rank:
    """This process's place in a torchrun / torch.distributed elastic launch."""
    rank: int
    world: int
    local: int


def parse_devices(gpus: str | None, workers: int | None, device: str) -> list[str]:
    """One device string per worker. ``gpus``: ``all`` | ``N`` (the first N) | ``0,2,...`` (CUDA
    only; default: all visible, or the one of ``--device cuda:K``). ``workers``: total worker
    processes, spread round-robin over the GPUs (default one per GPU; on a CPU, one)."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, not {workers}")
    if not device.startswith("cuda"):
        return ["cpu"] * (workers or 1)
    import torch
    visible = torch.cuda.device_count()
    if gpus is None:
        ids = [int(device.split(":")[1])] if ":" in device else list(range(visible))
    elif gpus.strip().lower() == "all":
        ids = list(range(visible))
    elif "," not in gpus and gpus.strip().isdigit():
        n = int(gpus)
        if not 1 <= n <= visible:
            raise InputError(f"--gpus {gpus}: {visible} CUDA GPU(s) are visible")
        ids = list(range(n))
    else:
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--gpus {gpus!r}: give all, a count, or GPU indices like 0,2") from None
        bad = [i for i in ids if not 0 <= i < visible]
        if bad or not ids or len(set(ids)) != len(ids):
            raise InputError(f"--gpus {gpus}: indices must be distinct and in 0..{visible - 1}")
    if not ids:
        raise InputError("no CUDA GPU is visible")
    n = workers or len(ids)
    return [f"cuda:{ids[k % len(ids)]}" for k in range(n)]


def rank_env() -> Rank | None:
    """RANK, WORLD_SIZE and LOCAL_RANK under torchrun / torch.distributed elastic with >1 process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        return Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise InputError("WORLD_SIZE > 1 but RANK/LOCAL_RANK are not set as torchrun sets them") from None


def visible_gpu_count() -> int:
    """CUDA GPUs this process would see, told without importing torch (CUDA_VISIBLE_DEVICES, else
    NVML); 0 when that cannot be told."""
    visible = cuda_visible_devices()
    if visible is not None:
        return len(visible)
    return gpu_count() or 0   # None: no NVML, no driver: no GPU to count


def likely_worker_processes(engine: str, device: str, gpus: str | None, workers: int | None,
                            skip_failing_units: bool) -> bool:
    """Will ``predict`` with these options start worker processes? Decided before torch is imported,
    so that the fork server can start first (a wrong guess costs an idle server)."""
    if engine == "reference" or rank_env() is not None:
        return False
    n_gpus = visible_gpu_count() if device == "auto" or (device.startswith("cuda") and gpus in (None, "all")) else 0
    if (workers or 1) > 1 or skip_failing_units:      # (engine auto is the fast engine, on a CPU too)
        return True
    if device == "cpu" or (device.startswith("cuda:") and gpus is None):
        return False
    if gpus is None or gpus.strip().lower() == "all":
        return n_gpus > 1
    g = gpus.strip()
    return len([x for x in g.split(",") if x.strip()]) > 1 if "," in g else (g.isdigit() and int(g) > 1)
