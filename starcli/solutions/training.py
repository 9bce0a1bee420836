"""Anchors trained on any runner: the seed jobs, and `train_where`, what `starlight train` calls.

`anchors.train` trains seeds in this process; `train_where` here sends the missing ones to a local pool, SLURM
or Ray as jobs (`SeedJob`, or a `SeedGroupJob` stacked inside one local worker) and gathers what they
registered, so every executor registers exactly what a local run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from starcli.engine import data, devices, stacked
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.runners.jobs import raise_failures
from starcli.runners.local import pool_slots
from starcli.runners.options import LOCAL, RunOptions
from starcli.runners.run import run_jobs

from . import anchors, records


@dataclass(frozen=True, kw_only=True)
class SeedJob:
    """One seed to train: everything a worker on another machine needs, all of it picklable."""

    kind: ClassVar[str] = "seed"

    home: str
    db_url: str
    config: dict[str, Any]
    seed: int
    device: str
    data_dir: str | None = None
    download: bool = False
    # Where the checkpoints go ($STARLIGHT_STORE_URL as this process resolved it): a worker on another
    # node has no shared home, only the database and the object store.
    store_url: str | None = None

    def label(self) -> str:
        return f"seed {self.seed}"

    def weight(self) -> int:
        return 1

    def seeds(self) -> list[int]:
        return [self.seed]

    def per_seed(self, result) -> list[tuple[int, bool]]:
        """This job's result as (solution id, trained) per seed, in the order of `seeds()`."""
        return [result]

    def describe(self, result) -> str:
        return "\n".join(
            f"seed {seed}: {'solution' if trained else 'already registered as solution'} {sid}"
            for seed, (sid, trained) in zip(self.seeds(), self.per_seed(result))
        )

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(solution id, trained)."""
        [outcome] = anchors.train(reg, self.config, [self.seed], device=self.device, data_dir=self.data_dir, download=self.download)
        return outcome.solution.id, outcome.trained


@dataclass(frozen=True, kw_only=True)
class SeedGroupJob(SeedJob):
    """Several seeds of one config for one local worker, trained together: `anchors.train` stacks them
    where that is bit-identical to one seed at a time (engine/stacked.py), so a pool of N one-thread
    workers gets both gains, N cores and stacking. `seed` is the first; `more` holds the rest."""

    more: tuple[int, ...] = ()

    def seeds(self) -> list[int]:
        return [self.seed, *self.more]

    def label(self) -> str:
        return f"seeds {', '.join(map(str, self.seeds()))}"

    def weight(self) -> int:
        return len(self.seeds())

    def per_seed(self, result) -> list[tuple[int, bool]]:
        return list(result)

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[tuple[int, bool], ...]:
        """(solution id, trained) per seed, in seed order."""
        outcomes = anchors.train(reg, self.config, self.seeds(), device=self.device, data_dir=self.data_dir, download=self.download)
        return tuple((o.solution.id, o.trained) for o in outcomes)


@dataclass(frozen=True, kw_only=True)
class TrainAheadJob(SeedGroupJob):
    """A seed group trained to its last epoch and left in its resume folders, registered by nobody yet
    (`anchors.train(register=False)`): the caller registers it later, in an order of its choosing, by
    training the same seeds again, which then runs no epoch. What a sweep's pool trains."""

    def per_seed(self, result) -> list[tuple[int, bool]]:
        return []

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, ...]:
        """The seeds of the group (trained now, or found trained or registered)."""
        anchors.train(reg, self.config, self.seeds(), device=self.device, data_dir=self.data_dir, download=self.download,
                      register=False)
        return tuple(self.seeds())


def seed_groups(seeds: list[int], workers: int) -> list[list[int]]:
    """Seeds dealt round-robin into at most `workers` groups (balanced to within one seed)."""
    groups = [seeds[i::workers] for i in range(min(workers, len(seeds)))]
    return [g for g in groups if g]


def train_where(
    reg,
    config: dict[str, Any],
    seeds: list[int],
    run: RunOptions = LOCAL,
    device: str = "auto",
    data_dir=None,
    download: bool = False,
    reporter=None,
    tracking=None,
) -> list:
    """Train one anchor per seed where `run` says; returns `anchors.Outcome`s in seed order.

    `tracking` (see anchors.Tracking) streams epochs live when training runs in this process; runs in
    workers are logged to the tracker once registered, from the history stored with them."""
    reporter = reporter or Reporter()
    slots = pool_slots(device, run.jobs) if run.executor == "local" else []
    if run.executor == "local" and not slots:  # one slot: the same as calling it here
        return anchors.train(
            reg, config, seeds, device=device, data_dir=data_dir, download=download, reporter=reporter, tracking=tracking
        )
    registered = {seed: anchors.already_registered(reg, config, seed, reporter) for seed in seeds}
    missing = [seed for seed in seeds if registered[seed] is None]
    if not missing:  # nothing for a worker to do (and no worker's device to check)
        return [anchors.Outcome(registered[seed], False) for seed in seeds]
    # Load (and download) the data once here, not in every worker at once: no download race, and a
    # missing --data-dir is one line now rather than fifty failed jobs later. A remote Ray cluster has
    # its own disks, so there each worker loads (and downloads) for itself.
    remote = run.remote
    if reg.url.startswith("sqlite") and run.on_several_nodes():
        # SQLite's WAL needs one machine's shared memory: on a network filesystem it corrupts or locks.
        reporter.log("note: the registry is SQLite, which is safe on one node only; set STARLIGHT_DB_URL to a "
                     "PostgreSQL database when jobs may land on several nodes")
    if not remote:
        data.load(config["dataset"], "train", data_dir=data_dir, download=download, cache_dir=records.dataset_cache(reg))

    where = dict(home=str(reg.home), db_url=reg.url, config=config, device=device, data_dir=_str(data_dir),
                 download=download and remote, store_url=reg.store_url)
    if run.executor == "local" and stacked.stackable(config, devices.resolve(device)):
        # One group per worker, stacked inside it: cores and stacking together.
        todo = [SeedGroupJob(seed=g[0], more=tuple(g[1:]), **where) for g in seed_groups(missing, len(slots))]
    else:
        todo = [SeedJob(seed=seed, **where) for seed in missing]
    results = run_jobs(reg, todo, run, device, reporter, slots=slots)
    trained = _trained(reg, todo, results)
    outcomes = [anchors.Outcome(registered[seed], False) if registered[seed] is not None else trained[seed] for seed in seeds]
    if tracking is not None:
        for o in outcomes:
            if o.trained:
                anchors.replay(tracking, reg, o.solution)
    return outcomes


def _trained(reg, todo: list, results: list) -> dict[int, "anchors.Outcome"]:
    """`anchors.Outcome` per seed the jobs ran (one seed or a group each)."""
    raise_failures(todo, results, "seed")
    by_seed = {seed: pair for job, result in zip(todo, results) for seed, pair in zip(job.seeds(), job.per_seed(result))}
    sols = {sol.id: sol for sol in records.get_many(reg, [sid for sid, _ in by_seed.values()])}
    return {seed: anchors.Outcome(sols[sid], trained) for seed, (sid, trained) in by_seed.items()}


def _str(path) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
