"""Telemetry: machine-parseable lines in the run's log file, plus timers and the GPU sampler.

Every telemetry record is one log line whose message is ``TELEMETRY <json>``::

    2026-11-29 16:55:00,123 INFO virnucpro.core.telemetry: TELEMETRY {"event": "stage", "stage": "embed_esm", ...}

so the log stays readable for a person and ``read_telemetry`` (used by perf_tests/) can parse it.
Events (fields beyond ``event`` and ``t`` = seconds since the run started):

- ``run_start``   version, engine, precision, chunk_length, device, n_gpus, synthetic, models, input
- ``stage``       stage, wall_s, items, [tokens]          (one per pipeline stage, per worker)
- ``batch``       model, seqs, tokens, budget, packing_efficiency, io_wait_s, queue_depth, dt
- ``gpu_sample``  gpu, util_pct, mem_used_mib, mem_total_mib   (NVML, background thread)
- ``plan``        budget, batches, units, packing_efficiency, frames, esm_tokens (fast engine)
- ``unit_done``   unit, worker, wall_s, frames, tokens (a work unit embedded, classified, saved)
- ``oom``         unit, model, budget, retry_budget (CUDA out of memory: the batch is retried smaller)
- ``worker_start`` / ``worker_lost`` / ``worker_summary``   multi-worker runs (virnucpro/parallel.py)
- ``summary``     wall_s, reads, chunks, frames, stages{name: wall_s}, throughput and GPU figures
                  (mfu_esm against peak_tflops, the bf16 matmul peak measured on that GPU),
                  per-worker units and busy time, load_imbalance
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from virnucpro.core import nvml
from virnucpro.core.nvml import nvml_handle, nvml_session

PREFIX = "TELEMETRY "
log = logging.getLogger("virnucpro.core.telemetry")


class Telemetry:
    """Emits telemetry events relative to one run's start time and keeps them for the summary.

    Every event goes to the log; in memory it keeps the few kinds the run's summary reads (stages,
    worker losses, ...) and only counts the kinds that come once per batch, per work unit or per
    NVML sample (``LOG_ONLY``): kept, those grew with the input and the run's length (~470 bytes an
    event, ~2.3 bytes a read on a CPU run; docs/benchmarks.md#memory-trace). Readers of every event
    (the gate, ``read_telemetry``) read the log."""

    LOG_ONLY = frozenset({"batch", "unit_done", "gpu_sample"})

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}          # every event emitted, by kind
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "t": round(self.now(), 4), **fields}
        with self._lock:
            self.counts[event] = self.counts.get(event, 0) + 1
            if event not in self.LOG_ONLY:
                self.events.append(record)
        log.info(PREFIX + json.dumps(record, default=_jsonable, sort_keys=False))
        return record

    @contextmanager
    def stage(self, name: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Time a pipeline stage; the body may add fields (items, tokens) to the yielded dict."""
        extra: dict[str, Any] = dict(fields)
        start = time.perf_counter()
        yield extra
        self.emit("stage", stage=name, wall_s=round(time.perf_counter() - start, 4), **extra)

    def stage_times(self) -> dict[str, float]:
        """Sum of wall time per stage name (several workers may report the same stage)."""
        out: dict[str, float] = {}
        for e in self.events:
            if e["event"] == "stage":
                out[e["stage"]] = out.get(e["stage"], 0.0) + e["wall_s"]
        return out


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def peak_gpu_mem_gib(device: str) -> float | None:
    """Peak memory PyTorch allocated on a CUDA device since the last reset, GiB (None on CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch
    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**30, 3)


def read_telemetry(log_path: str | Path) -> list[dict[str, Any]]:
    """Parse every ``TELEMETRY {...}`` line of a virnucpro log file, in order."""
    events = []
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            i = line.find(PREFIX)
            if i >= 0:
                events.append(json.loads(line[i + len(PREFIX):]))
    return events


class NoFollowFileHandler(logging.FileHandler):
    """Appends to a log file that is not a symbolic link: one planted in an output directory
    (``virnucpro.log -> ~/.bashrc``) is refused with one line instead of written through."""

    def __init__(self, path: Path):
        super().__init__(path, mode="a", encoding="utf-8", delay=False)

    def _open(self):
        import errno
        try:
            fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            from virnucpro.errors import InputError
            raise InputError(f"{self.baseFilename} is a symbolic link: refusing to write the log through it "
                             "(remove it)") from None
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Log INFO+ to ``log_file`` (all records, incl. telemetry); warnings (or INFO when verbose,
    telemetry excluded) to stderr."""
    root = logging.getLogger("virnucpro")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_file is not None:
        fh = NoFollowFileHandler(log_file)
        fh.setFormatter(fmt)
        fh.setLevel(logging.INFO)
        root.addHandler(fh)
    sh = logging.StreamHandler()
    sh.setLevel(logging.INFO if verbose else logging.WARNING)
    sh.addFilter(lambda r: not r.getMessage().startswith(PREFIX))
    sh.setFormatter(logging.Formatter("virnucpro: %(levelname)s: %(message)s"))
    root.addHandler(sh)
    root.propagate = False


class GpuSampler:
    """Samples NVML utilisation and memory of the given GPUs every ``interval`` seconds in a
    background thread and emits ``gpu_sample`` events. A no-op when NVML or a GPU is absent."""

    def __init__(self, telemetry: Telemetry, gpu_indices: list[int], interval: float = 0.5):
        self.telemetry = telemetry
        self.gpu_indices = gpu_indices
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: ExitStack | None = None    # the NVML session while sampling
        self.samples: list[tuple[float, int]] = []   # (t, util %) of every sample, all GPUs

    def start(self) -> "GpuSampler":
        if not self.gpu_indices:
            return self
        session = ExitStack()   # NVML stays initialised until stop()
        pynvml = session.enter_context(nvml_session())
        try:
            if pynvml is None:
                raise RuntimeError(nvml.last_error or "no NVML")
            handles = [nvml_handle(pynvml, i) for i in self.gpu_indices]
            if any(h is None for h in handles):
                raise RuntimeError(f"cannot tell the NVML device of cuda:{self.gpu_indices} "
                                   "(set CUDA_DEVICE_ORDER=PCI_BUS_ID)")
        except Exception as exc:  # no driver / no NVML: telemetry says so, the run goes on
            session.close()
            log.warning("NVML unavailable, no GPU utilisation samples: %s", exc)
            return self
        self._session = session

        def loop() -> None:
            while not self._stop.wait(self.interval):
                for idx, h in zip(self.gpu_indices, handles):
                    util = pynvml.nvmlDeviceGetUtilizationRates(h)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                    rec = self.telemetry.emit(
                        "gpu_sample", gpu=idx, util_pct=util.gpu,
                        mem_used_mib=round(mem.used / 2**20), mem_total_mib=round(mem.total / 2**20))
                    self.samples.append((rec["t"], util.gpu))

        self._thread = threading.Thread(target=loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._session is not None and not (self._thread is not None and self._thread.is_alive()):
            self._session.close()   # (a sampler thread stuck in NVML keeps it initialised)
            self._session = None

    def mean_util(self, t_from: float | None = None, t_to: float | None = None) -> float | None:
        """Mean utilisation % over samples within [t_from, t_to] (all GPUs), None if no samples."""
        vals = [u for t, u in self.samples if (t_from is None or t >= t_from) and (t_to is None or t <= t_to)]
        return sum(vals) / len(vals) if vals else None


def gpu_indices(devices: list[str]) -> list[int]:
    """Distinct GPU indices of the devices (for the NVML sampler)."""
    out: list[int] = []
    for device in devices:
        if not device.startswith("cuda"):
            continue
        import torch
        i = torch.device(device).index if ":" in device else torch.cuda.current_device()
        if i not in out:
            out.append(i or 0)
    return out
