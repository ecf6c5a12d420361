"""The progress bar of long work (rich): count, rate, elapsed time and ETA.

A multi-sample ``predict`` shows one display for the whole command (``shared_display``): its
"samples" bar, with each sample's own bar added below while that sample runs (rich allows one live
display at a time, so a run's ``progress_bar`` becomes a task of the shared one meanwhile)."""

from __future__ import annotations

import contextlib
from typing import Iterator

_shared = None      # the Progress of a multi-sample command, while it runs


def _new(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def progress_bar(enabled: bool):
    """A context manager giving ``add_task``/``update`` (a rich Progress); inside ``shared_display``
    the tasks go to the shared display and are removed when the block ends."""
    if _shared is not None:
        return _Nested(_shared)
    return _new(enabled)


@contextlib.contextmanager
def shared_display(enabled: bool) -> Iterator:
    """One display for the block (the rich Progress, for the caller's own task); every
    ``progress_bar`` opened meanwhile adds its task to it."""
    global _shared
    with _new(enabled) as bar:
        _shared = bar
        try:
            yield bar
        finally:
            _shared = None


class _Nested:
    """A run's bar inside the shared display: its tasks leave the display when the run ends."""

    def __init__(self, bar):
        self.bar, self.tasks = bar, []

    def __enter__(self) -> "_Nested":
        return self

    def __exit__(self, *exc) -> None:
        for t in self.tasks:
            self.bar.remove_task(t)

    def add_task(self, *args, **kwargs):
        task = self.bar.add_task(*args, **kwargs)
        self.tasks.append(task)
        return task

    def update(self, *args, **kwargs) -> None:
        self.bar.update(*args, **kwargs)
