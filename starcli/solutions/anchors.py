"""Anchors: `starlight train` as a function — train one solution per seed and register it (kind anchor).

Several seeds of one config train together, stacked (engine/stacked.py), where that is bit-identical to
training them one at a time on the machine at hand — checked by a short self-test, not assumed — so a
stacked run registers exactly the checkpoints (and keys) a sequential one would. Elsewhere (convolutional
nets, several threads, GPUs) the seeds train one after another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from registry import Registry, Solution
from starcli.engine import devices, evaluation, stacked, training
from starcli.engine.data import Split, load_split
from starcli.engine.loop import ResumeFile
from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError
from starcli.progress import Reporter

from . import records

# Whether stacking is exact, per (config, device, threads, number of seeds): the self-test costs a
# fraction of a second, once per process and setting.
_EXACT: dict[tuple, bool] = {}


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
) -> list[Outcome]:
    """Train and register one anchor per seed; seeds already registered with this config are skipped.

    A seed that diverges registers nothing; the others still register, then its error is raised."""
    reporter = reporter or Reporter()
    dev = devices.resolve(device)
    found: dict[int, Outcome] = {}
    todo: list[int] = []
    for seed in seeds:
        existing = records.by_key(reg, anchor_key(config, seed))
        if existing is not None:
            reporter.log(f"seed {seed}: already registered as solution {existing.id}, skipped")
            found[seed] = Outcome(existing, False)
        else:
            todo.append(seed)
    if todo:
        cache = records.dataset_cache(reg)
        train_split = load_split(config["dataset"], "train", dev, data_dir, download, cache)
        test_split = load_split(config["dataset"], "test", dev, data_dir, download, cache)
        fit_many = _fit_stacked if _stacks(config, dev, len(todo)) else _fit_one_by_one
        errors = []
        for seed, model, wall, error in fit_many(reg, config, todo, dev, train_split, reporter):
            if error is not None:
                errors.append(error)
                continue
            found[seed] = Outcome(*_register(reg, config, seed, model, dev, wall, train_split, test_split, reporter))
        if errors:
            raise errors[0]
    return [found[seed] for seed in seeds]


def _stacks(config: dict[str, Any], dev: torch.device, n: int) -> bool:
    if n < 2 or not stacked.stackable(config, dev):
        return False
    key = (config_hash(config), str(dev), torch.get_num_threads(), n)
    if key not in _EXACT:
        _EXACT[key] = stacked.stacking_is_exact(config, dev, seeds=n)
    return _EXACT[key]


def _resume(reg: Registry, config: dict[str, Any], seed: int) -> ResumeFile:
    return ResumeFile(reg.home / "runs" / anchor_key(config, seed)[:24])


def _fit_one_by_one(reg, config, seeds, dev, split: Split, reporter):
    """(seed, model, wall seconds, error) per seed, training them one after another."""
    for seed in seeds:
        task = reporter.task(f"seed {seed}", config["epochs"])
        start = time.perf_counter()
        try:
            model = training.fit(config, seed, dev, split, _resume(reg, config, seed), on_epoch=lambda e, loss: task.advance(loss=loss))
        except StarlightError as e:
            if not str(e).startswith(f"seed {seed}:"):
                raise
            task.done()
            yield seed, None, 0.0, e
            continue
        task.done()
        yield seed, model, time.perf_counter() - start, None


def _fit_stacked(reg, config, seeds, dev, split: Split, reporter):
    """The same, all seeds in one stacked pass; each seed's wall time is its share of the pass."""
    tasks = {seed: reporter.task(f"seed {seed}", config["epochs"]) for seed in seeds}
    start = time.perf_counter()
    runs = stacked.fit_stacked(
        config, seeds, dev, split, [_resume(reg, config, s) for s in seeds],
        on_epoch=lambda seed, e, loss: tasks[seed].advance(loss=loss),
    )
    wall = (time.perf_counter() - start) / len(seeds)
    for run in runs:
        tasks[run.seed].done()
        yield run.seed, run.model, wall, run.error


def _register(reg, config, seed, model, dev, wall, train_split, test_split, reporter) -> tuple[Solution, bool]:
    """(solution, created): created is False when a concurrent run of the same seed registered it first."""
    metrics = evaluation.metrics(model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)})
    sol, created = records.register(
        reg, model.state_dict(), key=anchor_key(config, seed), kind="anchor", arch=config["arch"],
        arch_kwargs=config["arch_kwargs"], dataset=config["dataset"], recipe=config["recipe"], config=config, seed=seed,
        epochs=config["epochs"], metrics=metrics, device=str(dev), wall_seconds=wall,
    )
    _resume(reg, config, seed).remove()
    reporter.log(
        f"seed {seed}: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%"
        f"  ({wall:.1f}s)"
    )
    return sol, created
