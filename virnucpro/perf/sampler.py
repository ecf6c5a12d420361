"""The gate's own measurements of a run, taken from outside the process under test.

A :class:`HarnessSampler` is a thread of the process that launched the run (the pytest process of
perf_tests/), never of the pipeline. For the whole life of one ``virnucpro predict`` subprocess it
records, every ``interval`` seconds, on the wall clock (``time.time()``, seconds since the epoch):

- NVML utilisation of each GPU the run was given (``gpu``), when NVML and a GPU are present;
- the CPU seconds (user + system) of the run's whole process tree (``cpu``), read from
  ``/proc`` on Linux: the main process, its threads and every live child (loader and worker
  processes), plus children already reaped.

Where either is unavailable the :class:`Samples` say why (``gpu_note`` / ``cpu_note``) instead of
holding numbers, so a criterion built on them reports "not measured", never a pass.
The criteria that read them (utilisation over the embedding window, CPU seconds of the
processing window) are in virnucpro.perf.criteria.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


@dataclass
class Samples:
    """What the harness saw of one run, on the epoch clock."""

    start: float                                                        # launch (epoch s)
    end: float | None = None                                            # exit (epoch s)
    gpu: list[tuple[float, int, float]] = field(default_factory=list)   # (epoch, GPU index, util %)
    cpu: list[tuple[float, float]] = field(default_factory=list)        # (epoch, CPU s of the tree)
    gpu_note: str | None = None     # why there are no GPU samples (None: sampled)
    cpu_note: str | None = None     # why there are no CPU samples (None: sampled)
    interval_s: float = 0.0

    def cpu_at(self, epoch: float) -> float | None:
        """CPU seconds of the process tree at ``epoch``, linearly interpolated between samples
        (None without samples; clamped to the first/last sample outside their span)."""
        pts = self.cpu
        if not pts:
            return None
        if epoch <= pts[0][0]:
            return pts[0][1]
        for (t0, c0), (t1, c1) in zip(pts, pts[1:]):
            if t0 <= epoch <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (epoch - t0) / (t1 - t0)
        return pts[-1][1]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "interval_s": self.interval_s,
                "gpu_note": self.gpu_note, "cpu_note": self.cpu_note,
                "n_gpu_samples": len(self.gpu), "n_cpu_samples": len(self.cpu)}


def _tick() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


_HZ = _tick()


def _stat(pid: int) -> tuple[float, float] | None:
    """(own CPU s incl. threads, reaped children's CPU s) of one process, None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    f = raw[raw.rfind(")") + 2:].split()   # fields from the 3rd on; the name may hold spaces
    utime, stime, cutime, cstime = (int(x) for x in f[11:15])
    return (utime + stime) / _HZ, (cutime + cstime) / _HZ


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out += [int(x) for x in (t / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def tree_cpu_s(root: int) -> float | None:
    """CPU seconds used so far by process ``root`` and all its descendants (Linux /proc)."""
    total, seen, todo = 0.0, set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        st = _stat(pid)
        if st is None:
            if pid == root:
                return None
            continue
        total += st[0] + st[1]
        todo += _children(pid)
    return total


class HarnessSampler:
    """Samples NVML utilisation of ``gpus`` and the CPU time of process ``pid``'s tree in a
    background thread of this process, from :meth:`start` until :meth:`stop`."""

    def __init__(self, pid: int, gpus: list[int], interval: float = 0.05, gpu_every: int = 4):
        self.pid, self.gpus, self.interval, self.gpu_every = pid, list(gpus), interval, gpu_every
        self.samples = Samples(start=time.time(), interval_s=interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handles: list[Any] = []

    def start(self) -> "HarnessSampler":
        s = self.samples
        if not self.gpus:
            s.gpu_note = "no GPU in this configuration: NVML not sampled"
        else:
            self._open_nvml()
        if not (_PROC / str(self.pid) / "stat").is_file():
            s.cpu_note = "no /proc/<pid>/stat on this system: CPU time not sampled"
        self._thread = threading.Thread(target=self._loop, name="gate-sampler", daemon=True)
        self._thread.start()
        return self

    def _open_nvml(self) -> None:
        try:
            import pynvml

            from virnucpro.core.telemetry import nvml_handle

            pynvml.nvmlInit()
            handles = [nvml_handle(pynvml, i) for i in self.gpus]
            if any(h is None for h in handles):
                pynvml.nvmlShutdown()
                raise RuntimeError("cannot tell the NVML device of each CUDA index "
                                   "(set CUDA_DEVICE_ORDER=PCI_BUS_ID)")
            self._nvml, self._handles = pynvml, handles
        except Exception as exc:   # no driver, no pynvml: the criterion says "not measured"
            self.samples.gpu_note = f"NVML unavailable to the harness: {exc}"

    def _loop(self) -> None:
        k = 0
        while True:
            now = time.time()
            if self.samples.cpu_note is None:
                c = tree_cpu_s(self.pid)
                if c is not None:
                    self.samples.cpu.append((now, c))
            if self._nvml is not None and k % self.gpu_every == 0:
                for idx, h in zip(self.gpus, self._handles):
                    try:
                        util = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                    except Exception:   # a transient NVML error: this sample is lost, not invented
                        continue
                    self.samples.gpu.append((now, idx, float(util)))
            k += 1
            if self._stop.wait(self.interval):
                return

    def stop(self) -> Samples:
        """Stop sampling (call once the process has exited and been waited for)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        end = time.time()
        self.samples.end = end
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            if not self.samples.gpu:
                self.samples.gpu_note = "NVML opened but returned no utilisation samples"
        return self.samples
