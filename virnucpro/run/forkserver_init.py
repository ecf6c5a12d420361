"""Imported by the fork server (the first module of ``spawn.PRELOAD``): the fork server dies with
the coordinator that started it (Linux's parent-death signal, ``virnucpro.core.lifeline``), and
ignores SIGTERM as it ignores SIGINT (multiprocessing's own choice).

Without it, a fork server whose coordinator was killed (kill -9) waits for its "alive" pipe, i.e.
for its last worker to exit, then tears its interpreter and torch down: 2.3 s on the 2-core
development machine after the workers were gone (docs/reliability.md). Its workers do not depend on
it: they watch their coordinator through their lifelines. But the coordinator learns its workers'
exit codes through the fork server: one killed by the group's SIGTERM (docker stop, Slurm) made
every worker look dead (exit 255) in the middle of their clean stop. Imported anywhere else (a
test, a tool), this module does nothing.
"""

from __future__ import annotations

import signal
import sys

from virnucpro.core.lifeline import die_with_parent


def imported_by_fork_server() -> bool:
    """This import runs inside ``multiprocessing.forkserver.main`` (its preload loop)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if imported_by_fork_server():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # its children set their own handlers
    die_with_parent(signal.SIGKILL)
