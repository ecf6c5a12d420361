"""virnucpro.core.background.Background: a daemon-thread call whose value or exception reaches the caller."""

from __future__ import annotations

import threading

import pytest

from virnucpro.core.background import Background
from virnucpro.errors import ModelError


def test_value_and_exception_reach_the_caller() -> None:
    gate = threading.Event()
    call = Background(lambda a, b: (gate.wait(5), a + b)[1], 2, 3, name="t-sum")
    gate.set()
    assert call.result() == 5

    def broken():
        raise ModelError("cannot read the ESM-2 checkpoint x.pt")
    with pytest.raises(ModelError, match="x.pt"):
        Background(broken).result()


def test_runs_in_a_daemon_thread_so_a_failing_command_does_not_wait_for_it() -> None:
    seen = {}
    release = threading.Event()

    def probe():
        seen["daemon"] = threading.current_thread().daemon
        seen["name"] = threading.current_thread().name
        release.wait(5)
    call = Background(probe, name="load-models")
    release.set()
    call.result()
    assert seen == {"daemon": True, "name": "load-models"}, seen


def test_result_with_a_timeout_says_it_is_still_running() -> None:
    release = threading.Event()
    call = Background(release.wait, 5)
    with pytest.raises(TimeoutError):
        call.result(timeout=0.05)
    assert not call.done()
    release.set()
    assert call.result(timeout=5) is True and call.done()



@pytest.mark.parametrize("enabled_before", [True, False])
def test_gc_paused_turns_the_collector_off_and_restores_it(enabled_before):
    import gc
    from virnucpro.core.background import gc_paused
    (gc.enable if enabled_before else gc.disable)()
    try:
        with pytest.raises(KeyError):
            with gc_paused():
                assert not gc.isenabled(), "collector still on inside gc_paused"
                raise KeyError("an error leaves the block")
        assert gc.isenabled() is enabled_before, "collector state not restored"
    finally:
        gc.enable()
