"""A torch.profiler trace of a window of the GPU loop's batches (EngineConfig.profile): host calls and
GPU kernels, Chrome trace format, gzipped, for finding where the GPU waits (e.g. the utilisation dips
at unit starts, docs/benchmarks.md#exp-cudnn-attention). It slows the profiled batches: never in a timed run."""

from __future__ import annotations

import logging
import os

import torch

from virnucpro.engines.config import ProfileSpec

log = logging.getLogger("virnucpro.engines.fast")


class ProfileWindow:
    """Traces batches ``spec.first`` .. ``spec.first + spec.count - 1`` into ``spec.path`` with the
    device and process id added to its name; does nothing without a spec."""

    def __init__(self, spec: ProfileSpec | None, device: torch.device) -> None:
        self.prof = None
        self.path, self.first, self.count = None, 0, 0
        self.device = device
        if spec is None:
            return
        self.first, self.count = spec.first, spec.count
        tag = f"{device.type}{device.index if device.index is not None else ''}-{os.getpid()}"
        root, dot, ext = spec.path.rpartition(".")
        self.path = f"{root}.{tag}.{ext}" if dot and "/" not in ext else f"{spec.path}.{tag}"

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
