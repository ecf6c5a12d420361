"""Host tensors (memory-mapped from a checkpoint) -> device tensors, fast.

A plain ``t.to("cuda")`` of a memory-mapped tensor is one thread doing everything in turn: faulting
the file's pages in, copying them into the driver's small staging buffer, waiting for each piece
to cross the bus. ESM-2 3B's 5.7 GB took ~1.0 s that way on an H200 host when nothing else ran,
2.5-4.5 s beside other start-up work (docs/benchmarks.md#h200-startup).

``copy_to_device`` splits the tensors over a few threads; each copies its pieces into two pinned
buffers of its own, in turn, and hands each filled buffer to its own CUDA stream, so page faults,
host copies and bus transfers of different pieces overlap. The destination tensors are allocated
by the caller (on its stream), so the caching allocator keeps them with the stream that uses them.

``PackedESM2.from_checkpoint`` copies this way to every CUDA device; a CPU destination (the tests)
runs the same steps synchronously. One ``copy_`` per tensor took 2.0-2.2 s for ESM-2 3B where this
copy took 1.8-2.2 s, beside the rest of a worker's start-up on an H200 (docs/benchmarks.md#exp-weight-copy).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

CHUNK_BYTES = 32 << 20     # per pinned buffer; two per thread
THREADS = 4


def copy_to_device(pairs: list[tuple[torch.Tensor, torch.Tensor]], threads: int = THREADS,
                   chunk_bytes: int = CHUNK_BYTES) -> None:
    """``dst.copy_(src)`` for every (src on the host, dst on one CUDA device, same number of
    elements, any dtypes); returns when every copy is complete. A failure in any thread is raised
    here."""
    if not pairs:
        return
    device = pairs[0][1].device
    lanes: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(max(1, threads))]
    load = [0] * len(lanes)
    for src, dst in sorted(pairs, key=lambda p: -p[0].numel() * p[0].element_size()):
        k = load.index(min(load))                 # largest first onto the least loaded lane
        lanes[k].append((src, dst))
        load[k] += src.numel() * src.element_size()
    errors: list[BaseException] = []

    def lane(work: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        try:
            _Lane(device, chunk_bytes).run(work)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            errors.append(exc)

    workers = [threading.Thread(target=lane, args=(w,), name=f"weights-{i}", daemon=True)
               for i, w in enumerate(lanes) if w]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]


class _Lane:
    """One thread's share: two pinned buffers used in turn, one CUDA stream."""

    def __init__(self, device: torch.device, chunk_bytes: int):
        self.cuda = device.type == "cuda"        # a CPU destination (the tests): the same steps, synchronous
        if self.cuda:
            torch.cuda.set_device(device)        # the current device is per thread
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.bufs = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(2)]
        self.done: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def run(self, work: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for src, dst in work:
            self.copy(src, dst)
        if self.cuda:
            self.stream.synchronize()

    def copy(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        s = src.reshape(-1)
        d = dst.view(-1)
        if s.numel() != d.numel():
            raise ValueError(f"copy of {s.numel()} elements into {d.numel()}")
        per = len(self.bufs[0]) // s.element_size()
        for a in range(0, s.numel(), per):
            b = min(s.numel(), a + per)
            k, self.turn = self.turn, self.turn ^ 1
            if self.done[k] is not None:
                self.done[k].synchronize()      # the bus has taken this buffer's last piece
            stage = self.bufs[k][:(b - a) * s.element_size()].view(s.dtype)
            _host_copy(stage, s[a:b])
            if not self.cuda:
                d[a:b].copy_(stage)
                continue
            with torch.cuda.stream(self.stream):
                d[a:b].copy_(stage, non_blocking=True)   # a dtype change happens on the device
                ev = torch.cuda.Event()
                ev.record(self.stream)
            self.done[k] = ev


def _host_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """A single-threaded memcpy that releases the interpreter lock (numpy), so that the lanes run
    side by side without each starting a pool of OpenMP threads (torch's copy_ would)."""
    try:
        np.copyto(dst.numpy(), src.numpy())
    except TypeError:   # a dtype numpy lacks (bfloat16)
        dst.copy_(src)
