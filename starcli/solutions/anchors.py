"""Anchors: `starlight train` as a function — train one solution per seed and register it (kind anchor).

Several seeds of one config train together, stacked (engine/stacked.py), where that is bit-identical to
training them one at a time on the machine at hand — checked by a short self-test, not assumed — so a
stacked run registers exactly the checkpoints (and keys) a sequential one would. Elsewhere (convolutional
nets, several threads, GPUs) the seeds train one after another.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from starcli.engine import compilation, devices, evaluation, stacked, training
from starcli.engine.data import Split, load_split
from starcli.engine.loop import ResumeFile
from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError
from starcli.progress import Reporter
from starcli.registry import Registry, Solution

from . import manage, records

# Opens a live tracker run for one training: (name, resolved config, tags) -> a starcli.trackers.Logger.
Tracking = Callable[[str, dict[str, Any], dict[str, Any]], Any]

# Whether stacking is exact, per (config, device, threads, number of seeds): the self-test costs a
# fraction of a second, once per process and setting.
_EXACT: dict[tuple, bool] = {}


class History:
    """The per-epoch rows of one training, stored with the solution; forwarded to a live tracker run when
    there is one. A row is {"epoch", "train_loss": the mean loss of the epoch's batches, "train_acc": the
    % of the epoch's samples classified right as each step saw them (see `loop.run_epochs`; absent for
    regression and in rows stored before it was kept)}.

    With a file (beside the resume checkpoint) the rows survive a killed run, so a resumed training's
    history still starts at epoch 1; an epoch run again after the resume replaces its row. Each row is
    appended as one JSON line (O(row) per epoch: rewriting every row so far cost O(epochs²) bytes); a
    file of the JSON list written before is read the same way, and one torn by a kill loses only its
    cut line, an epoch after the resume file's, which the resumed run trains and writes again."""

    def __init__(self, task=None, logger=None, file: Path | None = None):
        self.task, self.logger, self.file = task, logger, file
        self.rows: list[dict[str, Any]] = []
        if file is not None and file.is_file():
            for row in _history_rows(file.read_text()):
                self._keep(row)
            self._rewrite()  # whole lines only, in this format: the appends that follow stay readable

    def __call__(self, epoch: int, loss: float, acc: float | None = None) -> None:
        row = {"epoch": int(epoch), "train_loss": float(loss)}
        if acc is not None:
            row["train_acc"] = float(acc)
        self._keep(row)
        if self.file is not None:
            self._append(json.dumps(row) + "\n")
        if self.task is not None:
            self.task.advance(loss=loss)
        if self.logger is not None:
            self.logger.log_epoch(epoch, row)

    def _keep(self, row: dict[str, Any]) -> None:
        if self.rows and self.rows[-1]["epoch"] >= row["epoch"]:  # an epoch trained again after a resume
            self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]]
        self.rows.append(row)

    def _append(self, line: str) -> None:
        for attempt in (1, 2):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.file, "a") as f:
                    f.write(line)
                return
            except FileNotFoundError:  # another run of this seed finished and removed the folder meanwhile
                if attempt == 2:
                    raise

    def _rewrite(self) -> None:
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}")
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
            os.replace(tmp, self.file)
        except FileNotFoundError:  # another run of this seed finished and removed the folder meanwhile
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def _history_rows(text: str) -> list[dict[str, Any]]:
    """The rows of a history file: JSON lines, or the one JSON list of files written before; a line cut
    by a kill (or a list torn by one) is dropped."""
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        return whole
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


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


def already_registered(reg: Registry, config: dict[str, Any], seed: int, reporter: Reporter) -> Solution | None:
    """The registered anchor of (config, seed), if any, said so; a resume folder a killed run left behind
    after registering it is cleared."""
    existing = records.by_key(reg, anchor_key(config, seed))
    if existing is not None:
        reporter.log(f"seed {seed}: already registered as solution {existing.id}, skipped")
        manage.clear_registered_run(_resume(reg, config, seed).folder)
    return existing


def train(
    reg: Registry,
    config: dict[str, Any],
    seeds: list[int],
    device: str = "auto",
    data_dir=None,
    download: bool = False,
    reporter: Reporter | None = None,
    tracking: Tracking | None = None,
    register: bool = True,
) -> list[Outcome]:
    """Train and register one anchor per seed; seeds already registered with this config are skipped.
    Each run's per-epoch losses are stored with it (and streamed to `tracking`, a live tracker, if given).

    A seed that diverges registers nothing; the others still register, then its error is raised.

    `register=False` trains every missing seed to its last epoch and leaves it in its resume folder
    (weights and history), registering nothing; it returns only the seeds already registered. A later
    `train` of the same seeds resumes there, runs no epoch and registers the very same bytes: so a caller
    that trains in any order (a sweep's worker pool) can still register in a fixed one, and the ids that
    key later stars do not depend on which worker finished first."""
    reporter = reporter or Reporter()
    dev = devices.resolve(device)
    found: dict[int, Outcome] = {}
    todo: list[int] = []
    for seed in seeds:
        existing = already_registered(reg, config, seed, reporter)
        if existing is not None:
            found[seed] = Outcome(existing, False)
        else:
            todo.append(seed)
    if todo:
        compilation.check_toolchain(config, dev.type)  # before the data is loaded, not at the first step
        cache = records.dataset_cache(reg)
        train_split = load_split(config["dataset"], "train", dev, data_dir, download, cache)
        test_split = load_split(config["dataset"], "test", dev, data_dir, download, cache)
        fit_many = _fit_stacked if _stacks(config, dev, len(todo)) else _fit_one_by_one
        errors = []
        with ExitStack() as stack:
            # The locks tell `doctor --fix` these resume folders are live, however long an epoch takes.
            for seed in todo:
                stack.enter_context(manage.run_lock(_resume(reg, config, seed).folder))
            loggers = {
                seed: stack.enter_context(tracking(f"anchor seed {seed}", config, {"kind": "anchor", "seed": seed}))
                for seed in todo
            } if tracking is not None else {}
            histories = {
                seed: History(None, loggers.get(seed), _resume(reg, config, seed).folder / "history.json") for seed in todo
            }
            for seed, model, wall, error in fit_many(reg, config, todo, dev, train_split, histories, reporter):
                histories[seed].task.done()
                if error is not None:
                    errors.append(error)
                    continue
                if not register:
                    continue
                found[seed] = Outcome(*_register(reg, config, seed, model, dev, wall, train_split, test_split, reporter,
                                                 histories[seed], loggers.get(seed)))
        if errors:
            raise errors[0]
    return [found[seed] for seed in seeds if seed in found]


def _stacks(config: dict[str, Any], dev: torch.device, n: int) -> bool:
    if n < 2 or not stacked.stackable(config, dev):
        return False
    key = (config_hash(config), str(dev), torch.get_num_threads(), n)
    if key not in _EXACT:
        _EXACT[key] = stacked.stacking_is_exact(config, dev, seeds=n)
    return _EXACT[key]


def _resume(reg: Registry, config: dict[str, Any], seed: int, share: float = 1.0) -> ResumeFile:
    return ResumeFile(reg.home / "runs" / anchor_key(config, seed)[:24], share)


def _progress(reporter: Reporter, reg, config, seed: int):
    # A resumed run's bar starts where it resumed.
    return reporter.task(f"seed {seed}", config["epochs"], completed=_resume(reg, config, seed).epoch())


def _fit_one_by_one(reg, config, seeds, dev, split: Split, histories: dict[int, History], reporter: Reporter):
    """(seed, model, wall seconds, error) per seed, training them one after another."""
    for seed in seeds:
        histories[seed].task = _progress(reporter, reg, config, seed)
        resume = _resume(reg, config, seed)  # its clock adds the killed segments' seconds to this one's
        try:
            model = training.fit(config, seed, dev, split, resume, on_epoch=histories[seed])
        except StarlightError as e:
            if not str(e).startswith(f"seed {seed}:"):
                raise
            yield seed, None, 0.0, e
            continue
        yield seed, model, resume.seconds(), None


def _fit_stacked(reg, config, seeds, dev, split: Split, histories: dict[int, History], reporter: Reporter):
    """The same, all seeds in one stacked pass; each seed's wall time is its share of the pass (plus its
    own killed segments')."""
    for seed in seeds:
        histories[seed].task = _progress(reporter, reg, config, seed)
    resumes = {s: _resume(reg, config, s, share=1 / len(seeds)) for s in seeds}
    runs = stacked.fit_stacked(
        config, seeds, dev, split, [resumes[s] for s in seeds],
        on_epoch=lambda seed, e, loss, acc: histories[seed](e, loss, acc),
    )
    walls = {s: r.seconds() for s, r in resumes.items()}  # read before registering any seed
    for run in runs:
        yield run.seed, run.model, walls[run.seed], run.error


def _register(reg, config, seed, model, dev, wall, train_split, test_split, reporter, history, logger) -> tuple[Solution, bool]:
    """(solution, created): created is False when a concurrent run of the same seed registered it first."""
    metrics = evaluation.metrics(
        model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)}, config=config
    )
    sol, created = records.register(
        reg, model.state_dict(), key=anchor_key(config, seed), kind="anchor", arch=config["arch"],
        arch_kwargs=config["arch_kwargs"], dataset=config["dataset"], recipe=config["recipe"], config=config, seed=seed,
        epochs=config["epochs"], metrics=metrics, device=str(dev), wall_seconds=wall, history=history.rows,
    )
    resume = _resume(reg, config, seed)
    history.remove()  # before the resume folder goes: it lives there
    resume.remove()
    manage.release_run(resume.folder)
    finish_tracking(logger, reg, sol)
    reporter.log(
        f"seed {seed}: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%"
        f"  ({wall:.1f}s)"
    )
    return sol, created
