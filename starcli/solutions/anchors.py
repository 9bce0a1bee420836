"""Anchors: `starlight train` as a function — train one solution per seed and register it (kind anchor)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from registry import Registry, Solution
from starcli.engine import devices, evaluation, training
from starcli.engine.data import load_split
from starcli.engine.loop import ResumeFile
from starcli.progress import Reporter

from . import records


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
        task = reporter.task(f"seed {seed}", config["epochs"], completed=resume.epoch())
        start = time.perf_counter()
        model = training.fit(config, seed, dev, train_split, resume, on_epoch=lambda e, loss: task.advance(loss=loss))
        wall = time.perf_counter() - start
        task.done()
        metrics = evaluation.metrics(model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)})
        sol, created = records.register(
            reg, model.state_dict(), key=key, kind="anchor", arch=config["arch"], arch_kwargs=config["arch_kwargs"],
            dataset=config["dataset"], recipe=config["recipe"], config=config, seed=seed, epochs=config["epochs"],
            metrics=metrics, device=str(dev), wall_seconds=wall,
        )
        resume.remove()
        reporter.log(
            f"seed {seed}: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%"
            f"  ({wall:.1f}s)"
        )
        outcomes.append(Outcome(sol, created))
    return outcomes
