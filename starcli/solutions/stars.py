"""Stars: `starlight star` as a function — train a star from registered anchors and register it (kind star).

The algorithm itself (paper Algorithm 1) is starcli/engine/starlight.py; this module finds the anchors,
reuses their recipe, keys the star by everything that changes its bits, and registers the result.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from starcli.alignment import align_state
from starcli.engine import compilation, devices, evaluation, threads
from starcli.engine.data import load_split
from starcli.engine.loop import ResumeFile
from starcli.engine.starlight import STAR_INITS, TSampling, fit_star
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.registry import Registry, Solution
from starcli.runners.jobs import raise_failures
from starcli.runners.local import pool_slots
from starcli.runners.options import LOCAL, RunOptions
from starcli.runners.run import run_jobs
from starcli.engine.star_presets import star_settings
from starcli.selectors import check_finite, check_int, check_seed

from . import manage, records
from .anchors import History, finish_tracking

# What a recipe config needs before a star can reuse it (imported checkpoints have none).
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augmentation")


def recipe_of(anchors: list[Solution], reporter: Reporter | None = None) -> dict[str, Any]:
    """The anchors' training recipe, which the star reuses (optimizer, schedule, batch size, augmentation)."""
    configs = [a.config or {} for a in anchors]
    lacking = [a.id for a, c in zip(anchors, configs) if any(k not in c for k in RECIPE_KEYS)]
    if lacking:
        raise StarlightError(
            f"solution {lacking[0]} has no training recipe (an imported checkpoint?); a star reuses its anchors' "
            "recipe, so choose anchors trained with `starlight train`"
        )
    differing = [a.id for a, c in zip(anchors[1:], configs[1:]) if c != configs[0]]
    if differing and reporter is not None:
        reporter.log(
            f"anchors {differing} were trained with other settings than {anchors[0].id}; using {anchors[0].id}'s recipe"
        )
    return dict(configs[0])


def aligner(arch: str, arch_kwargs: dict[str, Any], seed: int) -> Callable:
    """`align_state` bound to this architecture: re-permutes an anchor to the current star."""
    return lambda star_state, anchor_state: align_state(arch, arch_kwargs, star_state, anchor_state, seed=seed)


def anchor_order(anchors: list[Solution]) -> list[Solution]:
    """The anchors in the order the star draws them from: by (seed, key), what they are, never by registry id,
    so that the same anchors give the same star bits in any registry and whatever order they were registered
    in. Seed first: the demo's and sweeps' anchors, registered in seed order, keep the order (and the star
    bits, the README's numbers) they had when stars were ordered by id."""
    return sorted(anchors, key=lambda a: (a.seed is None, a.seed or 0, a.key))


def star_key(config: dict[str, Any], seed: int, anchors: list[Solution]) -> str:
    """The star's idempotency key: its config with the anchors' ids replaced by their keys, so the same
    anchors registered elsewhere (a cluster's database, an imported bundle) give the same key. The ids
    stay in the recorded config, for people."""
    star = dict(config["star"], anchors=[a.key for a in anchors])
    return records.solution_key("star", dict(config, star=star), seed)


def legacy_star_key(config: dict[str, Any], seed: int) -> str:
    """The key stars had before they were keyed by their anchors' keys: the config with the anchor ids sorted.
    Only looked up, so a registry's older stars are still found; never given to a new star."""
    star = dict(config["star"], anchors=sorted(config["star"]["anchors"]))
    return records.solution_key("star", dict(config, star=star), seed)


def registered_star(reg: Registry, config: dict[str, Any], key: str, seed: int) -> Solution | None:
    """The star registered for this request: under its key, else under the key of older registries. An old
    key names anchors by id, which mean other solutions in another registry (an imported bundle's star keeps
    its key), so an old-key star counts only if its anchors are these."""
    found = records.by_key(reg, key)
    if found is not None:
        return found
    old = records.by_key(reg, legacy_star_key(config, seed))
    if old is not None and sorted(old.anchors or []) == sorted(config["star"]["anchors"]):
        return old
    return None


@dataclass(frozen=True, kw_only=True)
class StarSpec:
    """A star to build: its anchors and every setting of Algorithm 1 that changes its bits, checked once,
    when built, by the same rules for the command line, a sweep file's [star] and the library.

    `StarSpec.preset(name, ...)` starts from a named preset (engine/star_presets.py); the fields are the
    settings themselves, so a spec says exactly what is built whatever preset it came from."""

    anchor_ids: tuple[int, ...]
    epochs: int | None = None  # None: the anchors' recipe
    t_sampling: str = "uniform"  # uniform | beta:A,B | constant:T, kept in its one spelling
    samples_per_step: int = 1
    mu_star: float = 0.0
    seed: int = 0
    realign: bool = False  # --realign: re-permute every anchor to the star at each epoch start
    realign_every: int = 1  # --realign-every K: re-align at epochs 0, K, 2K, ... only (K > 1: in the key)
    init: str = "random"
    compile_step: bool | None = None  # None: as the anchors were trained

    def __post_init__(self) -> None:
        anchor_ids = tuple(self.anchor_ids)
        if self.init not in STAR_INITS:
            raise UsageError(f"--init must be one of {', '.join(STAR_INITS)}, got {self.init!r}")
        if len(anchor_ids) < 2:
            raise UsageError(f"a star needs at least 2 anchors, got {list(anchor_ids)}; pass e.g. --anchors 1-5")
        if len(set(anchor_ids)) != len(anchor_ids):
            raise UsageError(f"--anchors lists a solution twice: {list(anchor_ids)}")
        # The command line's bounds, for every caller.
        check_int(self.epochs, "--epochs", 1, 100_000)
        check_int(self.samples_per_step, "--samples-per-step", 1, 1_000)
        check_finite(self.mu_star, "--mu-star")
        check_seed(self.seed)
        if not isinstance(self.realign, bool):
            raise UsageError(f"--realign must be true or false, got {self.realign!r}")
        check_int(self.realign_every, "--realign-every", 1, 100_000)
        if self.realign_every is None:
            object.__setattr__(self, "realign_every", 1)
        if self.realign_every > 1 and not self.realign:
            raise UsageError(
                f"--realign-every {self.realign_every} says how often to re-align the anchors, but re-alignment is off "
                "(--no-realign or --preset paper); add --realign or leave --realign-every out"
            )
        object.__setattr__(self, "anchor_ids", anchor_ids)
        object.__setattr__(self, "t_sampling", str(TSampling.parse(self.t_sampling)))
        object.__setattr__(self, "mu_star", float(self.mu_star))

    @classmethod
    def preset(cls, name: str | None = None, *, realign: bool | None = None, init: str | None = None,
               mu_star: float | None = None, **fields: Any) -> "StarSpec":
        """The spec of preset `name` (default: the default preset), with every override not None on top."""
        return cls(**star_settings(name, realign=realign, init=init, mu_star=mu_star), **fields)

    @classmethod
    def check_settings(cls, **settings: Any) -> None:
        """Check settings before the anchors exist (a sweep file's [star]: its grid says the anchors)."""
        cls(anchor_ids=(0, 1), **settings)


@dataclass
class StarPlan:
    """A star's validated settings: its config and key, its anchors, and the star if already registered."""

    config: dict[str, Any]
    key: str
    anchors: list[Solution]
    recipe: dict[str, Any]
    sampling: TSampling
    existing: Solution | None


def plan_star(reg: Registry, spec: StarSpec, reporter: Reporter | None = None) -> StarPlan:
    """Check a star's anchors and key it, training nothing: what `build_star` does first, and what a
    runner's caller does before it submits a star job (bad input fails here, not in a worker)."""
    # The same set of anchors is the same star, whatever the order given (or registered).
    anchors = anchor_order(records.get_many(reg, list(spec.anchor_ids)))
    anchor_ids = [a.id for a in anchors]
    records.require_same_task(anchors, "anchors")
    recipe = recipe_of(anchors, reporter)
    config = dict(recipe, epochs=spec.epochs or recipe["epochs"])
    # --compile / --no-compile; None: as the anchors were trained (engine/compilation.py; in the key).
    if spec.compile_step and not config.get("compile"):
        config["compile"] = "default"
    elif spec.compile_step is False:
        config.pop("compile", None)
    config["star"] = {
        "anchors": anchor_ids,
        "t_sampling": spec.t_sampling,
        "samples_per_step": spec.samples_per_step,
        "mu_star": spec.mu_star,
        "seed": spec.seed,
        "align_anchors": spec.realign,  # the stored key keeps its first name: stars are keyed by it
    }
    # Recorded only when not every epoch (Algorithm 1's), so that every star built before the option keeps its key.
    if spec.realign_every != 1:
        config["star"]["realign_every"] = spec.realign_every
    # Recorded only when not the paper's random start, so that stars built before the option keep their keys.
    if spec.init != "random":
        config["star"]["init"] = spec.init
    key = star_key(config, spec.seed, anchors)
    sampling = TSampling.parse(spec.t_sampling)
    return StarPlan(config, key, anchors, recipe, sampling, registered_star(reg, config, key, spec.seed))


def run_folder(reg: Registry, key: str) -> Path:
    """The star's resume folder (runs/<key>/), kept until its row is in."""
    return reg.home / "runs" / key[:24]


def build_star(
    reg: Registry,
    anchor_ids: list[int],
    epochs: int | None = None,
    t_sampling: str = "uniform",
    samples_per_step: int = 1,
    mu_star: float = 0.0,
    seed: int = 0,
    device: str = "auto",
    reporter: Reporter | None = None,
    realign: bool = False,
    tracking: Callable | None = None,
    init: str = "random",
    compile_step: bool | None = None,
    realign_every: int = 1,
) -> tuple[Solution, bool]:
    """Train and register a star from the anchors (a `StarSpec`'s fields); returns (solution, created).

    The same anchors, settings and seed return the registered star instead of training another.
    """
    devices.resolve(device)  # before any check: a registered star must not hide --device tpu
    spec = StarSpec(anchor_ids=anchor_ids, epochs=epochs, t_sampling=t_sampling, samples_per_step=samples_per_step,
                    mu_star=mu_star, seed=seed, realign=realign, init=init, compile_step=compile_step,
                    realign_every=realign_every)
    return build(reg, spec, device, reporter, tracking)


def build(reg: Registry, spec: StarSpec, device: str = "auto", reporter: Reporter | None = None,
          tracking: Callable | None = None, realign_workers: int | None = None) -> tuple[Solution, bool]:
    """`build_star` of a spec: train and register the star, or return the registered one.

    `realign_workers`: threads for each epoch's re-alignments (the same bits whatever the number, so not in
    the key); None: the cores this process's torch threads leave free, as a star trained alone has them."""
    reporter = reporter or Reporter()
    dev = devices.resolve(device)  # before any lookup: a registered star must not hide --device tpu
    seed, init = spec.seed, spec.init
    plan = plan_star(reg, spec, reporter)
    config, key, anchors, recipe, sampling = plan.config, plan.key, plan.anchors, plan.recipe, plan.sampling
    anchor_ids = config["star"]["anchors"]
    existing = plan.existing
    if existing is not None:
        reporter.log(f"this star is already registered as solution {existing.id}")
        manage.clear_registered_run(run_folder(reg, key))
        return existing, False
    compilation.check_toolchain(config, dev.type)  # before the data is loaded, not at the first step
    realign = aligner(anchors[0].arch, anchors[0].arch_kwargs, seed) if spec.realign else None

    train_split = load_split(config["dataset"], "train", dev, cache_dir=records.dataset_cache(reg))
    test_split = load_split(config["dataset"], "test", dev, cache_dir=records.dataset_cache(reg))
    states = [records.state_dict(reg, a, dev) for a in anchors]
    # A rerun star says where it resumes, and its bar starts there, as a resumed anchor's does.
    task = reporter.task(f"star from {len(anchors)} anchors", config["epochs"], completed=ResumeFile(run_folder(reg, key)).epoch())
    with ExitStack() as stack:
        logger = None
        if tracking is not None:
            logger = stack.enter_context(tracking(f"star from {len(anchors)} anchors", config, {"kind": "star", "seed": seed}))
        history = History(task, logger)
        # A killed or requeued star resumes from its last saved epoch (at most 60 s back), as anchor training
        # does; the file's clock adds the killed segments' seconds to this one's.
        resume = ResumeFile(run_folder(reg, key))
        model = fit_star(
            config, states, seed, dev, train_split, sampling, spec.samples_per_step, spec.mu_star, realign, on_epoch=history, init=init,
            resume=resume, realign_every=spec.realign_every,
            realign_workers=threads.spare_workers() if realign_workers is None else realign_workers,
        )
        # The running statistics gathered during training describe interpolated networks, not the star.
        evaluation.recalibrate_bn(model, train_split.x, config=config)
        wall = resume.seconds()
        task.done()
        metrics = evaluation.metrics(
            model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)}, config=config
        )
        sol, created = records.register(
            reg, model.state_dict(), key=key, kind="star", arch=anchors[0].arch, arch_kwargs=anchors[0].arch_kwargs,
            dataset=anchors[0].dataset, recipe=recipe.get("recipe"), config=config, seed=seed, epochs=config["epochs"],
            metrics=metrics, device=str(dev), wall_seconds=wall, anchors=anchor_ids, history=history.rows,
        )
        resume.remove()
        finish_tracking(logger, reg, sol)
    reporter.log(
        f"star: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%  ({wall:.1f}s)"
    )
    return sol, created


# --- on a runner: a star as a job, and several stars at once -------------------------------------


@dataclass(frozen=True, kw_only=True)
class StarJob:
    """One star to build (its spec); it resumes from its last epoch when rerun."""

    kind: ClassVar[str] = "star"

    home: str
    db_url: str
    spec: StarSpec
    device: str
    store_url: str | None = None

    def label(self) -> str:
        return f"star from anchors {','.join(map(str, self.spec.anchor_ids))} (seed {self.spec.seed})"

    def weight(self) -> int:
        return 1

    def describe(self, result: tuple[int, bool]) -> str:
        sid, trained = result
        return f"{self.label()}: {'solution' if trained else 'already registered as solution'} {sid}"

    def run(self, reg: Registry, reporter: Reporter | None = None, tracking=None,
            realign_workers: int | None = 1) -> tuple[int, bool]:
        """(solution id, trained); `tracking` streams its epochs to a live tracker when it runs here.

        One re-alignment thread by default: a job shares its machine with the pool's other jobs (None:
        `build`'s default, the spare cores of a star trained alone)."""
        sol, created = build(reg, self.spec, self.device, reporter, tracking, realign_workers)
        return sol.id, created


def build_stars(
    reg,
    specs: list[StarSpec],
    run: RunOptions = LOCAL,
    device: str = "auto",
    reporter=None,
    tracking=None,
) -> list[tuple[Any, bool]]:
    """Build one star per spec on the runner `run` names, several at once; returns (solution, created) in spec order. Every spec is checked here
    first, and stars already registered are not submitted."""
    reporter = reporter or Reporter()
    plans, jobs_of = star_jobs(reg, specs, device, reporter)
    where, todo = [i for i, _ in jobs_of], [job for _, job in jobs_of]
    if run.executor == "local" and todo and not pool_slots(device, run.jobs):
        # One slot: here, with this process's progress bars, exactly as `build_star` runs (its spare cores
        # re-align the anchors).
        results = [job.run(reg, reporter, tracking, realign_workers=None) for job in todo]
    else:
        results = run_jobs(reg, todo, run, device, reporter)
    raise_failures(todo, results, "star")
    out: list[tuple[Any, bool]] = [(plan.existing, False) for plan in plans]
    for i, (sid, created) in zip(where, results):
        out[i] = (records.get(reg, sid), created)
    return out


def star_jobs(reg, specs: list[StarSpec], device: str, reporter: Reporter) -> tuple[list, list[tuple[int, StarJob]]]:
    """Every spec keyed (`plan_star`), and a `StarJob` for each star not yet registered:
    (plans in spec order, [(spec index, job)]). A job names the anchors in the order the star draws them."""
    plans = [plan_star(reg, spec) for spec in specs]
    todo = []
    for i, (spec, plan) in enumerate(zip(specs, plans)):
        if plan.existing is None:
            drawn = replace(spec, anchor_ids=tuple(plan.config["star"]["anchors"]))
            todo.append((i, StarJob(home=str(reg.home), db_url=reg.url, spec=drawn, device=device, store_url=reg.store_url)))
        else:
            reporter.log(f"star from anchors {plan.config['star']['anchors']}: already registered as solution {plan.existing.id}")
            # A star killed between its row's commit and its resume folder's removal left that folder.
            manage.clear_registered_run(run_folder(reg, plan.key))
    return plans, todo
