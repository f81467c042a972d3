"""Progress bars for long commands: on a terminal only, never under --quiet, always on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def progress_observer(quiet: bool) -> Any:
    """A sync observer drawing a rich progress bar, or None when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    class _Observer:
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn("sync"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self.task: Any = None

        def planned(self, plan: Any) -> None:
            total = sum(o.size for o in plan.to_fetch)
            if total:
                self.progress.start()
                self.task = self.progress.add_task("sync", total=total)

        def object_done(self, key: str, nbytes: int) -> None:
            if self.task is not None:
                self.progress.advance(self.task, nbytes)

        def close(self) -> None:
            self.progress.stop()

    return _Observer()


@contextmanager
def step_progress(quiet: bool, title: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A counted progress bar ``(label, done, total)`` on a terminal; None elsewhere."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=label)

        yield update
