"""Star models: the Starlight algorithm (paper Algorithm 1).

A star θ is trained to have low loss along the segment to every anchor: each step draws an anchor θ_i
and a t, and descends the loss of the network with weights (1−t)θ + tθ_i. The interpolated weights
are built with `torch._foreach_lerp` and fed to the network with `torch.func.functional_call`, so
autograd delivers d/dθ = (1−t)·∇L((1−t)θ + tθ_i) without copying parameters or gradients by hand.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from . import data, devices, evaluation, models, solutions, training
from .errors import StarlightError, UsageError
from .recipes import config_hash

# The star's initialisation and shuffles are seeded apart from the anchors', so that star seed 1 does
# not start from the same weights as the anchor trained with seed 1.
STAR_SEED_OFFSET = 1_000_000_007
# What a recipe config needs before a star can reuse it (imported checkpoints have none).
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augmentation")
STAR_INITS = ("random", "anchor-mean")


@dataclass(frozen=True)
class TSampling:
    """How t is drawn: `uniform` (U[0,1]), `beta:A,B`, or `constant:T`."""

    kind: str
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "TSampling":
        head, _, rest = text.strip().partition(":")
        try:
            values = [float(v) for v in rest.split(",")] if rest else []
        except ValueError:
            values = None
        if head == "uniform" and not rest:
            return cls("uniform")
        if head == "beta" and values and len(values) == 2 and min(values) > 0:
            return cls("beta", *values)
        if head == "constant" and values and len(values) == 1 and 0.0 <= values[0] <= 1.0:
            return cls("constant", values[0])
        raise UsageError(
            f"--t-sampling {text!r} is not valid; use uniform, beta:A,B (A, B > 0) or constant:T (0 ≤ T ≤ 1)"
        )

    def __str__(self) -> str:
        if self.kind == "beta":
            return f"beta:{self.a:g},{self.b:g}"
        if self.kind == "constant":
            return f"constant:{self.a:g}"
        return "uniform"

    def draw(self, rng: random.Random) -> float:
        if self.kind == "beta":
            return rng.betavariate(self.a, self.b)
        if self.kind == "constant":
            return self.a
        return rng.random()


def interpolated_loss(
    model: nn.Module,
    names: list[str],
    params: list[torch.Tensor],
    anchor: list[torch.Tensor],
    t: float,
    x: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.0,
    tie_weights: bool = True,
) -> torch.Tensor:
    """The training loss of the network with weights (1−t)·params + t·anchor (buffers: the model's own).

    In train mode BatchNorm normalises with the batch's statistics, as the paper's star training does.
    """
    lerped = torch._foreach_lerp(params, anchor, t)
    outputs = functional_call(model, dict(zip(names, lerped)), (x,), tie_weights=tie_weights)
    return evaluation.loss_fn(outputs, y, label_smoothing=label_smoothing)


def fit_star(
    config: dict[str, Any],
    anchors: list[dict[str, torch.Tensor]],
    seed: int,
    device: torch.device,
    train: training.Split,
    t_sampling: TSampling,
    samples_per_step: int = 1,
    mu_star: float = 0.0,
    realign: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    init: str = "random",
    own_epochs: int = 0,
) -> nn.Module:
    """Train a star from a fresh seeded initialisation toward `anchors` (state dicts); returns it (train mode).

    `realign(star_state, anchor_state)`, when given, re-permutes every anchor to the current star at the
    start of each epoch (Algorithm 1; off in the paper's released configs).
    `init="anchor-mean"` starts the star from the anchors' mean (each aligned to the first with `realign`
    when given) instead of a seeded random network. The last `own_epochs` epochs descend the star's own
    loss only, at the tail of the same schedule: a polish toward the nearest minimum of the star itself.
    """
    if init not in STAR_INITS:
        raise UsageError(f"--init must be one of {', '.join(STAR_INITS)}, got {init!r}")
    if not isinstance(own_epochs, int) or not 0 <= own_epochs < config["epochs"]:
        raise UsageError(f"--own-epochs must be an integer in [0, epochs) = [0, {config['epochs']}), got {own_epochs!r}")
    init_seed = STAR_SEED_OFFSET + seed
    torch.manual_seed(init_seed)
    model = training.prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
    if init == "anchor-mean":
        model.load_state_dict(anchor_mean(anchors, realign))
    optimizer = training.build_optimizer(model.parameters(), config)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    # Re-tying shared weights costs a search through the module at every step: only networks with
    # tied parameters (listed once by named_parameters) pay for it.
    tied = len(names) != sum(1 for _ in model.named_parameters(remove_duplicate=False))

    def anchor_params(states: list[dict[str, torch.Tensor]]) -> list[list[torch.Tensor]]:
        # empty_like keeps each parameter's device and memory format (channels_last on CUDA).
        return [[torch.empty_like(p).copy_(state[n]) for n, p in zip(names, params)] for state in states]

    targets = anchor_params(anchors)
    draws = random.Random(init_seed)
    steps_per_epoch = len(training.batches(len(train.x), config["batch_size"], training.epoch_generator(init_seed, 0)))
    model.train()
    for epoch in range(config["epochs"]):
        if realign is not None and epoch < config["epochs"] - own_epochs:
            star_state = {k: v.detach() for k, v in model.state_dict().items()}
            targets = anchor_params([realign(star_state, state) for state in anchors])
        g = training.epoch_generator(init_seed, epoch)
        torch.manual_seed(init_seed * 1_000_003 + epoch)  # dropout and other global-RNG users
        total = 0.0
        for i, idx in enumerate(training.batches(len(train.x), config["batch_size"], g)):
            for group in optimizer.param_groups:
                group["lr"] = training.lr_at(config, epoch * steps_per_epoch + i, steps_per_epoch)
            xb = data.augment(train.x[idx.to(train.x.device)], config["augmentation"], g)
            yb = train.y[idx.to(train.y.device)]
            with training.autocast(device, config):
                if epoch >= config["epochs"] - own_epochs:
                    loss = evaluation.loss_fn(model(xb), yb, label_smoothing=config["label_smoothing"])
                    total += training.descend(
                        optimizer, loss, f"star seed {seed}", f"epoch {epoch + 1}, step {i + 1}", "Lower the recipe's lr"
                    )
                    continue
                losses = [
                    interpolated_loss(
                        model, names, params, targets[draws.randrange(len(targets))], t_sampling.draw(draws), xb, yb,
                        config["label_smoothing"], tied,
                    )
                    for _ in range(samples_per_step)
                ]
                loss = losses[0] if samples_per_step == 1 else torch.stack(losses).mean()
                if mu_star > 0:
                    own = evaluation.loss_fn(model(xb), yb, label_smoothing=config["label_smoothing"])
                    loss = (loss + mu_star * own) / (1 + mu_star)
            total += training.descend(
                optimizer, loss, f"star seed {seed}", f"epoch {epoch + 1}, step {i + 1}",
                "Check the anchors, or lower the recipe's lr",
            )
        if on_epoch:
            on_epoch(epoch + 1, total / steps_per_epoch)
    return model


def anchor_mean(anchors: list[dict[str, torch.Tensor]], realign: Callable | None = None) -> dict[str, torch.Tensor]:
    """The mean of the anchors' state dicts, each first permuted to the first anchor by `realign` (if given).

    Integer buffers (BatchNorm's step counter) are the first anchor's; the star's BatchNorm statistics are
    re-estimated after training anyway.
    """
    first = anchors[0]
    aligned = [first] + [realign(first, a) if realign is not None else a for a in anchors[1:]]
    return {
        k: torch.stack([a[k].float() for a in aligned]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in first.items()
    }


def recipe_of(anchors: list[Any], reporter=None) -> dict[str, Any]:
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
    """`align_state` from the alignment module, bound to this architecture; a clear error while it is missing."""
    try:
        from .alignment import align_state
    except ImportError:
        raise StarlightError(
            "alignment is unavailable in this installation (starcli.alignment is missing); run without --align-anchors"
        ) from None
    return lambda star_state, anchor_state: align_state(arch, arch_kwargs, star_state, anchor_state, seed=seed)


def star_key(config: dict[str, Any], seed: int) -> str:
    return config_hash({"kind": "star", "config": config, "seed": seed})


def build_star(
    reg,
    anchor_ids: list[int],
    epochs: int | None = None,
    t_sampling: str = "uniform",
    samples_per_step: int = 1,
    mu_star: float = 0.0,
    seed: int = 0,
    device: str = "auto",
    reporter=None,
    align_anchors: bool = False,
    init: str = "random",
    own_epochs: int = 0,
):
    """Train and register a star from the anchors; returns (solution, created).

    The same anchors, settings and seed return the registered star instead of training another.
    """
    from .progress import Reporter

    reporter = reporter or Reporter()
    sampling = TSampling.parse(t_sampling)
    if not anchor_ids:
        raise UsageError("a star needs at least one anchor; pass --anchors, e.g. --anchors 1-5")
    if len(set(anchor_ids)) != len(anchor_ids):
        raise UsageError(f"--anchors lists a solution twice: {anchor_ids}")
    if not isinstance(samples_per_step, int) or samples_per_step < 1:
        raise UsageError(f"--samples-per-step must be a positive integer, got {samples_per_step!r}")
    if mu_star < 0:
        raise UsageError(f"--mu-star must be ≥ 0, got {mu_star}")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be a positive integer, got {epochs}")
    if init not in STAR_INITS:
        raise UsageError(f"--init must be one of {', '.join(STAR_INITS)}, got {init!r}")
    if not isinstance(own_epochs, int) or own_epochs < 0:
        raise UsageError(f"--own-epochs must be a non-negative integer, got {own_epochs!r}")
    anchor_ids = sorted(anchor_ids)  # the same set of anchors is the same star, whatever the order given
    anchors = solutions.get_many(reg, anchor_ids)
    solutions.require_same_task(anchors, "anchors")
    recipe = recipe_of(anchors, reporter)
    config = dict(recipe, epochs=epochs or recipe["epochs"])
    config["star"] = {
        "anchors": anchor_ids,
        "t_sampling": str(sampling),
        "samples_per_step": samples_per_step,
        "mu_star": float(mu_star),
        "seed": seed,
        "align_anchors": bool(align_anchors),
    }
    # Recorded only when used, so that stars built before these options keep their keys.
    if init != "random":
        config["star"]["init"] = init
    if own_epochs:
        config["star"]["own_epochs"] = own_epochs
    key = star_key(config, seed)
    existing = solutions.by_key(reg, key)
    if existing is not None:
        reporter.log(f"this star is already registered as solution {existing.id}")
        return existing, False
    realign = aligner(anchors[0].arch, anchors[0].arch_kwargs, seed) if align_anchors else None

    dev = devices.resolve(device)
    train_split = training.load_split(config["dataset"], "train", dev, home=reg.home)
    test_split = training.load_split(config["dataset"], "test", dev, home=reg.home)
    states = [solutions.state_dict(reg, a, dev) for a in anchors]
    task = reporter.task(f"star from {len(anchors)} anchors", config["epochs"])
    start = time.perf_counter()
    model = fit_star(
        config, states, seed, dev, train_split, sampling, samples_per_step, mu_star, realign,
        on_epoch=lambda e, loss: task.advance(loss=loss), init=init, own_epochs=own_epochs,
    )
    # The running statistics gathered during training describe interpolated networks, not the star.
    evaluation.recalibrate_bn(model, train_split.x)
    wall = time.perf_counter() - start
    task.done()
    metrics = evaluation.metrics(model, {"train": (train_split.x, train_split.y), "test": (test_split.x, test_split.y)})
    sol, created = solutions.add(
        reg,
        model.state_dict(),
        key=key,
        kind="star",
        arch=anchors[0].arch,
        arch_kwargs=anchors[0].arch_kwargs,
        width=anchors[0].width,
        seed=seed,
        dataset=anchors[0].dataset,
        recipe=recipe.get("recipe"),
        config=config,
        epochs=config["epochs"],
        metrics=metrics,
        device=str(dev),
        wall_seconds=wall,
        versions=solutions.versions(),
        anchors=anchor_ids,
    )
    reporter.log(
        f"star: solution {sol.id}  train acc {metrics['train_acc']:.1f}%  test acc {metrics['test_acc']:.1f}%  ({wall:.1f}s)"
    )
    return sol, created
