"""virnucpro.core.nvml: one NVML session helper, with a fake pynvml that counts init and shutdown."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest

from virnucpro.core import nvml
from virnucpro.core.nvml import gpu_count, gpu_name, nvml_session


class FakePynvml:
    def __init__(self, names=("NVIDIA H200",), fail_init: bool = False, name_bytes: bool = False):
        self.names, self.fail_init, self.name_bytes = list(names), fail_init, name_bytes
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def _check(self) -> None:
        assert self.inits > self.shutdowns, "NVML called outside a session"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i: int):
        self._check()
        return ("index", i)

    def nvmlDeviceGetName(self, h):
        self._check()
        name = self.names[h[1]]
        return name.encode() if self.name_bytes else name

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=2**30, total=2**31, free=2**30)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert nvml._open == 0, "a session leaked from an earlier test"

    def install(**kw) -> FakePynvml:
        f = FakePynvml(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", f)
        return f
    yield install
    assert nvml._open == 0, "the test left an NVML session open"


def test_nested_sessions_init_and_shut_down_once(fake) -> None:
    f = fake()
    with nvml_session() as a:
        assert a is f and (f.inits, f.shutdowns) == (1, 0)
        with nvml_session() as b:
            assert b is f
            with nvml_session():
                pass
        assert (f.inits, f.shutdowns) == (1, 0), "an inner session shut NVML down under the outer one"
    assert (f.inits, f.shutdowns) == (1, 1)
    with nvml_session():
        pass
    assert (f.inits, f.shutdowns) == (2, 2), "a later session must initialise again"


def test_failed_init_gives_none_and_no_shutdown(fake) -> None:
    f = fake(fail_init=True)
    with nvml_session() as nv:
        assert nv is None
        with nvml_session() as inner:   # nested in a failed one: tries again, fails again
            assert inner is None
    assert (f.inits, f.shutdowns) == (2, 0), "NVML was shut down though it never started"
    assert "Shared Library Not Found" in (nvml.last_error or "")
    assert gpu_name(0) is None and gpu_count() is None


def test_session_ends_even_when_the_block_raises(fake) -> None:
    f = fake()
    with pytest.raises(ValueError):
        with nvml_session():
            raise ValueError("boom")
    assert (f.inits, f.shutdowns) == (1, 1)


def test_without_pynvml_the_session_is_none(monkeypatch, fake) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)   # import pynvml -> ImportError
    with nvml_session() as nv:
        assert nv is None
    assert "ImportError" in (nvml.last_error or "") or "ModuleNotFoundError" in (nvml.last_error or "")


def test_sessions_from_threads_share_one_init(fake) -> None:
    f = fake()
    inside = threading.Barrier(4)

    def work() -> None:
        with nvml_session():
            inside.wait(timeout=10)   # all four sessions open at once
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (f.inits, f.shutdowns) == (1, 1)


@pytest.mark.parametrize("name_bytes", [False, True])
def test_gpu_name_and_count(fake, name_bytes) -> None:
    f = fake(names=["NVIDIA H200", "NVIDIA H200"], name_bytes=name_bytes)
    assert gpu_name(1) == "NVIDIA H200"
    assert gpu_name(5) is None, "no such GPU"
    assert gpu_count() == 2
    assert f.inits == f.shutdowns == 3


def test_gpu_sampler_holds_one_session_until_stop(fake) -> None:
    from virnucpro.core.telemetry import GpuSampler, Telemetry
    f = fake()
    sampler = GpuSampler(Telemetry(), [0], interval=0.01).start()
    assert (f.inits, f.shutdowns) == (1, 0)
    with nvml_session():   # e.g. free_gpu_memory in the same process while sampling
        pass
    assert f.shutdowns == 0, "another session shut NVML down under the sampler"
    sampler.stop()
    assert (f.inits, f.shutdowns) == (1, 1)


def test_gpu_sampler_without_nvml_warns_and_runs_on(fake, monkeypatch) -> None:
    from virnucpro.core import telemetry
    f = fake(fail_init=True)
    warned: list[str] = []
    monkeypatch.setattr(telemetry.log, "warning", lambda msg, *a: warned.append(msg % a))
    sampler = telemetry.GpuSampler(telemetry.Telemetry(), [0]).start()
    sampler.stop()
    assert len(warned) == 1 and "NVML unavailable" in warned[0] and "Shared Library Not Found" in warned[0], warned
    assert f.shutdowns == 0 and not sampler.samples
