"""NVML device mapping: NVML numbers GPUs by PCI bus, CUDA numbers the visible ones."""

from __future__ import annotations

import pytest

from virnucpro.core.nvml import nvml_handle


class FakeNvml:
    """pynvml with ``names`` GPUs in PCI order; handles are ("index", i) or ("uuid", u)."""

    def __init__(self, names: list[str]):
        self.names = names

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i: int):
        return ("index", i)

    def nvmlDeviceGetHandleByUUID(self, u: str):
        return ("uuid", u)

    def nvmlDeviceGetName(self, h) -> str:
        return self.names[h[1]]


H200x4 = ["NVIDIA H200"] * 4


@pytest.mark.parametrize("visible, order, names, cuda_index, expected", [
    (None, None, H200x4, 1, ("index", 1)),                        # nothing hidden: same numbers
    ("2,3", None, H200x4, 1, ("index", 3)),                       # cuda:1 is the second visible GPU
    ("GPU-abc,GPU-def", None, H200x4, 0, ("uuid", "GPU-abc")),
    ("MIG-1234", None, H200x4, 0, None),                          # MIG slices: ask CUDA
    ("0", None, H200x4, 1, None),                                 # cuda:1 is not visible
    (None, None, ["NVIDIA H200", "NVIDIA L4"], 1, None),          # fastest-first may reorder mixed GPUs
    (None, "PCI_BUS_ID", ["NVIDIA H200", "NVIDIA L4"], 1, ("index", 1)),
    (None, None, H200x4, 7, None),                                # no such GPU
])
def test_nvml_handle_maps_cuda_numbering(monkeypatch, visible, order, names, cuda_index, expected) -> None:
    for key, value in (("CUDA_VISIBLE_DEVICES", visible), ("CUDA_DEVICE_ORDER", order)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    got = nvml_handle(FakeNvml(names), cuda_index)
    assert got == expected, f"CUDA_VISIBLE_DEVICES={visible} order={order}: cuda:{cuda_index} -> {got}, expected {expected}"
