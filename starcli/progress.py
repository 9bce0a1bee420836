"""Progress on stderr (data goes to stdout). The engine reports through this small interface."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Reporter:
    """Silent by default: library callers get no output unless they ask for it."""

    def task(self, description: str, total: int | None) -> "Task":
        return Task()

    def log(self, message: str) -> None:
        pass


class Task:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def done(self) -> None:
        pass


class RichReporter(Reporter):
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self._live = self._started = False

    def task(self, description: str, total: int | None) -> Task:
        progress = self.progress
        if self._live and not self._started:
            # Started on the first task, not on entry: an early error then prints no empty display.
            progress.start()
            self._started = True
        tid = progress.add_task(description, total=total, info="")

        class _Task(Task):
            def advance(self, n: int = 1, **fields) -> None:
                info = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                progress.update(tid, advance=n, info=info)

            def done(self) -> None:
                progress.update(tid, completed=progress.tasks[tid].total or 0)

        return _Task()

    def log(self, message: str) -> None:
        self.progress.console.print(message, highlight=False, markup=False)

    @contextmanager
    def live(self) -> Iterator["RichReporter"]:
        self._live = True
        try:
            yield self
        finally:
            if self._started:
                self.progress.stop()
            self._live = self._started = False
