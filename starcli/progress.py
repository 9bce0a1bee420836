"""Progress on stderr (data goes to stdout). The engine reports through this small interface.

On a terminal, a rich display with elapsed time and an ETA; elsewhere (SLURM logs, `nohup`, a pipe)
plain lines, one per task at its start, every `PLAIN_INTERVAL` seconds while it runs, and at its end,
so that a log file shows how far a job got without carriage-return noise."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

# Seconds between two plain progress lines of one task ($STARLIGHT_PROGRESS_INTERVAL overrides).
PLAIN_INTERVAL = 30.0


class Reporter:
    """Silent by default: library callers get no output unless they ask for it."""

    def task(self, description: str, total: int | None, completed: int = 0) -> "Task":
        """A task of `total` steps, `completed` of them already done (a resumed run)."""
        return Task()

    def log(self, message: str) -> None:
        pass

    @contextmanager
    def live(self) -> Iterator["Reporter"]:
        yield self


class Task:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def done(self) -> None:
        pass


def _info(fields: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LogReporter(Reporter):
    """Progress messages only, no display (`--quiet`)."""

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class PlainReporter(LogReporter):
    """Periodic plain lines for a stderr that is not a terminal."""

    def __init__(self, interval: float | None = None, clock=time.monotonic):
        env = os.environ.get("STARLIGHT_PROGRESS_INTERVAL")
        self.interval = interval if interval is not None else float(env) if env else PLAIN_INTERVAL
        self.clock = clock

    def task(self, description: str, total: int | None, completed: int = 0) -> Task:
        log, interval, clock = self.log, self.interval, self.clock
        state = {"done": completed, "start": clock(), "last": clock(), "first": completed, "info": ""}
        log(f"{description}: started" + (f", resumed at {completed}/{total}" if completed else "")
            + (f" ({total} steps)" if total and not completed else ""))

        def line(final: bool = False) -> str:
            elapsed = clock() - state["start"]
            n, rate_steps = state["done"], state["done"] - state["first"]
            where = f"{n}/{total}" if total else f"{n}"
            eta = ""
            if not final and total and rate_steps > 0:
                eta = f", ETA {_duration(elapsed / rate_steps * (total - n))}"
            info = f"  {state['info']}" if state["info"] else ""
            return f"{description}: {where} ({_duration(elapsed)} elapsed{eta}){info}"

        class _Task(Task):
            def advance(self, n: int = 1, **fields) -> None:
                state["done"] += n
                state["info"] = _info(fields) or state["info"]
                if clock() - state["last"] >= interval:
                    state["last"] = clock()
                    log(line())

            def done(self) -> None:
                if total:
                    state["done"] = total
                log(line(final=True) + " done")

        return _Task()


class RichReporter(Reporter):
    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self._live = self._started = False

    def task(self, description: str, total: int | None, completed: int = 0) -> Task:
        progress = self.progress
        if self._live and not self._started:
            # Started on the first task, not on entry: an early error then prints no empty display.
            progress.start()
            self._started = True
        if completed:
            description = f"{description} (resumed at {completed})"
        # The bar starts where the run resumed; the ETA counts only the steps of this process.
        tid = progress.add_task(description, total=total, info="", completed=completed)

        class _Task(Task):
            def advance(self, n: int = 1, **fields) -> None:
                progress.update(tid, advance=n, info=_info(fields))

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


def for_stderr(quiet: bool = False) -> Reporter:
    """What a command shows: messages only under --quiet, a rich display on a terminal, plain lines elsewhere."""
    if quiet:
        return LogReporter()
    return RichReporter() if sys.stderr.isatty() else PlainReporter()
