"""NVML (the driver's GPU management library, through pynvml): one session helper and the mapping
from CUDA's device numbers to NVML's, so that a process can ask about its GPUs (name, free memory,
utilisation) without creating a CUDA context.

``with nvml_session() as nv:`` gives the pynvml module, initialised, or None when pynvml or the
driver is absent; sessions nest (in one thread or several) and NVML is shut down when the last
one ends.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_lock = threading.Lock()
_open = 0          # sessions open in this process; NVML is initialised while > 0
last_error: str | None = None   # why the last session found no NVML (for a warning), None after a success


def _pynvml() -> Any:
    import pynvml
    return pynvml


@contextmanager
def nvml_session() -> Iterator[Any]:
    """pynvml, initialised for the block (None when NVML cannot be used: no pynvml, no driver)."""
    global _open, last_error
    with _lock:
        if _open == 0:
            try:
                nv = _pynvml()
                nv.nvmlInit()
                last_error = None
            except Exception as exc:   # noqa: BLE001 - no pynvml, no driver, no GPU: the caller does without
                nv, last_error = None, f"{type(exc).__name__}: {exc}"
        else:
            nv = _pynvml()
        if nv is not None:
            _open += 1
    try:
        yield nv
    finally:
        if nv is not None:
            with _lock:
                _open -= 1
                if _open == 0:
                    try:
                        nv.nvmlShutdown()
                    except Exception:   # noqa: BLE001 - a driver gone meanwhile: nothing to release
                        pass


def cuda_visible_devices() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices, GPU-/MIG- UUIDs), or None when it is unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [x.strip() for x in visible.split(",") if x.strip()] if visible is not None else None


def nvml_handle(pynvml, cuda_index: int):
    """The NVML handle of the GPU this process calls ``cuda:<cuda_index>`` (NVML numbers GPUs by PCI
    bus; CUDA numbers the visible ones, fastest first), or None when that cannot be told without
    CUDA (MIG devices, mixed GPU models without CUDA_DEVICE_ORDER=PCI_BUS_ID). pynvml is initialised."""
    names = cuda_visible_devices()
    if names is not None and cuda_index >= len(names):
        return None
    if names is not None and names[cuda_index].startswith("GPU-"):
        return pynvml.nvmlDeviceGetHandleByUUID(names[cuda_index])
    if names is not None and not names[cuda_index].isdigit():
        return None                                   # MIG-... or another form
    n = pynvml.nvmlDeviceGetCount()
    if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        models = {pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(n)}
        if len(models) > 1:
            return None                               # "fastest first" may differ from PCI order
    index = int(names[cuda_index]) if names is not None else cuda_index
    return pynvml.nvmlDeviceGetHandleByIndex(index) if index < n else None


def _ask_device(cuda_index: int, ask: Callable[[Any, Any], Any]) -> Any:
    """``ask(pynvml, handle)`` for ``cuda:<cuda_index>`` in an NVML session, or None (no NVML, no such
    device, an NVML error: the caller asks CUDA)."""
    with nvml_session() as nv:
        if nv is None:
            return None
        try:
            handle = nvml_handle(nv, cuda_index)
            return None if handle is None else ask(nv, handle)
        except Exception:   # noqa: BLE001 - an NVML error: the caller asks CUDA
            return None


def gpu_name(cuda_index: int) -> str | None:
    """The name of ``cuda:<cuda_index>`` as NVML tells it (e.g. ``NVIDIA H200``), or None when NVML
    cannot tell (absent, or the device not mapped: see ``nvml_handle``)."""
    name = _ask_device(cuda_index, lambda nv, h: nv.nvmlDeviceGetName(h))
    return None if name is None else name.decode() if isinstance(name, bytes) else str(name)


def gpu_total_memory(cuda_index: int) -> int | None:
    """The memory of ``cuda:<cuda_index>`` in bytes as NVML tells it, or None (as ``gpu_name``)."""
    return _ask_device(cuda_index, lambda nv, h: int(nv.nvmlDeviceGetMemoryInfo(h).total))


def gpu_count() -> int | None:
    """GPUs NVML sees on this machine (CUDA_VISIBLE_DEVICES not applied), None without NVML."""
    with nvml_session() as nv:
        if nv is None:
            return None
        try:
            return int(nv.nvmlDeviceGetCount())
        except Exception:   # noqa: BLE001
            return None
