"""Anchors: `starlight train` as a function — train one solution per seed and register it (kind anchor)."""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

from registry import Registry, Solution
from starcli.engine import devices, evaluation, training
from starcli.engine.data import load_split
from starcli.engine.loop import ResumeFile
from starcli.progress import Reporter

from . import manage, records

# Opens a live tracker run for one training: (name, resolved config, tags) -> a starcli.trackers.Logger.
Tracking = Callable[[str, dict[str, Any], dict[str, Any]], Any]


class History:
    """The per-epoch rows of one training ({"epoch", "train_loss"}: the mean loss of the epoch's batches),
    stored with the solution; forwarded to a live tracker run when there is one.

    With a file (beside the resume checkpoint) the rows survive a killed run, so a resumed training's
    history still starts at epoch 1; an epoch run again after the resume replaces its row."""

    def __init__(self, task=None, logger=None, file: Path | None = None):
        self.task, self.logger, self.file = task, logger, file
        self.rows: list[dict[str, Any]] = []
        if file is not None and file.is_file():
            try:
                self.rows = list(json.loads(file.read_text()))
            except ValueError:
                self.rows = []  # a torn write of a killed run: the epochs that follow still count

    def __call__(self, epoch: int, loss: float) -> None:
        row = {"epoch": int(epoch), "train_loss": float(loss)}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if self.file is not None:
            self._save()
        if self.task is not None:
            self.task.advance(loss=loss)
        if self.logger is not None:
            self.logger.log_epoch(epoch, row)

    def _save(self) -> None:
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}")
        for attempt in (1, 2):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.write_text(json.dumps(self.rows))
                os.replace(tmp, self.file)
                return
            except FileNotFoundError:  # another run of this seed finished and removed the folder meanwhile
                if attempt == 2:
                    raise

    def remove(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def replay(tracking: Tracking, reg: Registry, sol: Solution) -> None:
    """A run trained elsewhere (a worker), logged after the fact from its stored history."""
    with tracking(f"anchor seed {sol.seed}", sol.config, {"kind": sol.kind, "seed": sol.seed}) as logger:
        for row in sol.history or []:
            logger.log_epoch(row["epoch"], row)
        finish_tracking(logger, reg, sol)


def finish_tracking(logger, reg: Registry, sol: Solution) -> None:
    """The tracker run ends with the final metrics and, from a local store, the checkpoint as an artifact."""
    if logger is None:
        return
    path = reg.store.path(sol.sha256)
    checkpoint = path if not isinstance(path, str) and path.is_file() else None
    logger.finish(sol.metrics, checkpoint=checkpoint)


@dataclass
class Outcome:
    solution: Solution
    trained: bool  # False: the (config, seed) was already registered and was skipped


def anchor_key(config: dict[str, Any], seed: int) -> str:
    return records.solution_key("anchor", config, seed)


def train(
    reg: Registry,
    config: dict[str, Any],
    seeds: list[int],
    device: str = "auto",
    data_dir=None,
    download: bool = False,
    reporter: Reporter | None = None,
    tracking: Tracking | None = None,
) -> list[Outcome]:
    """Train and register one anchor per seed; seeds already registered with this config are skipped."""
    reporter = reporter or Reporter()
    dev = devices.resolve(device)
    outcomes: list[Outcome] = []
    for seed in seeds:
        key = anchor_key(config, seed)
        existing = records.by_key(reg, key)
        if existing is not None:
            reporter.log(f"seed {seed}: already registered as solution {existing.id}, skipped")
            outcomes.append(Outcome(existing, False))
            continue
        cache = records.dataset_cache(reg)
        train_split = load_split(config["dataset"], "train", dev, data_dir, download, cache)
        test_split = load_split(config["dataset"], "test", dev, data_dir, download, cache)
        resume = ResumeFile(reg.home / "runs" / key[:24])
        task = reporter.task(f"seed {seed}", config["epochs"])
        with ExitStack() as stack:
            # The lock tells `doctor --fix` this resume folder is live, however long an epoch takes.
            stack.enter_context(manage.run_lock(resume.folder))
            logger = None
            if tracking is not None:
                logger = stack.enter_context(tracking(f"anchor seed {seed}", config, {"kind": "anchor", "seed": seed}))
            history = History(task, logger, resume.folder / "history.json")
            start = time.perf_counter()
            model = training.fit(config, seed, dev, train_split, resume, on_epoch=history)
            wall = time.perf_counter() - start
            task.done()
            metrics = evaluation.metrics(
                model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)}
            )
            sol, created = records.register(
                reg, model.state_dict(), key=key, kind="anchor", arch=config["arch"], arch_kwargs=config["arch_kwargs"],
                dataset=config["dataset"], recipe=config["recipe"], config=config, seed=seed, epochs=config["epochs"],
                metrics=metrics, device=str(dev), wall_seconds=wall, history=history.rows,
            )
            history.remove()
            resume.remove()
            manage.release_run(resume.folder)
            finish_tracking(logger, reg, sol)
        reporter.log(
            f"seed {seed}: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%"
            f"  ({wall:.1f}s)"
        )
        outcomes.append(Outcome(sol, created))
    return outcomes
