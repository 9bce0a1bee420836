"""Star models: the Starlight algorithm (paper Algorithm 1).

A star θ is trained to have low loss along the segment to every anchor: each step draws an anchor θ_i
and a t, and descends the loss of the network with weights (1−t)θ + tθ_i. The interpolated weights
are built with `torch._foreach_lerp` and fed to the network with `torch.func.functional_call`, so
autograd delivers d/dθ = (1−t)·∇L((1−t)θ + tθ_i) without copying parameters or gradients by hand.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from starcli import models
from starcli.errors import StarlightError, UsageError

from . import compilation, evaluation, loop
from .data import Split
from .interpolation import average

# The star's initialisation and shuffles are seeded apart from the anchors', so that star seed 1 does
# not start from the same weights as the anchor trained with seed 1.
STAR_SEED_OFFSET = 1_000_000_007
STAR_INITS = ("random", "anchor-mean")
BETA_RANGE = (1e-3, 1e4)  # the Beta parameters t may be drawn with (see TSampling.parse)
# The resume file's name prefix for the star the anchors were last re-aligned to (realign_every > 1).
ALIGNED_TO = "aligned_to."


def realign_all(
    realign: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    target: dict[str, torch.Tensor],
    anchors: list[dict[str, torch.Tensor]],
    workers: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """`[realign(target, a) for a in anchors]`, the anchors after the first on `workers` threads (default:
    one, i.e. one after another).

    Each anchor's weight matching is independent of the others' and deterministic (its own seeded order,
    scipy's assignment, matrix products on torch's intra-op threads as before), so the list is the same,
    bit for bit, in any order (tests/test_star.py). scipy's linear_sum_assignment and torch's kernels
    release the GIL: threads overlap the assignments, which are most of a re-alignment. The first anchor
    is matched alone: its call derives and caches the architecture's permutation spec, which draws from
    torch's global generator, exactly once and at the same point as one anchor after another did.

    A new thread starts with OpenMP's default thread count, not the caller's `torch.set_num_threads`, and
    the count can change a matrix product's summation order: each thread is therefore given the caller's
    count. (A sweep once differed between a worker pool and one process while threads were on; the cause
    was the test suite's thread policy, which gave pool workers two intra-op threads, fixed in 017e821.)
    Threads pay only on cores nothing else uses (benchmarks/bench_realign.py, 20 anchors on 2 cores:
    1.2-1.5x idle, 0.97x at load 9; at 5 anchors the 6 ms are too little to share), so the caller decides:
    `stars.build` gives a star trained in its own process the spare cores (`threads.spare_workers`), a
    star in a worker pool one.
    """
    if not anchors:
        return []
    first = realign(target, anchors[0])
    rest = anchors[1:]
    workers = min(len(rest), workers or 1)
    if workers <= 1:
        return [first] + [realign(target, a) for a in rest]
    threads = torch.get_num_threads()

    def one(anchor):
        torch.set_num_threads(threads)  # this thread's OpenMP count, as the caller's
        return realign(target, anchor)

    with ThreadPoolExecutor(workers, thread_name_prefix="realign") as pool:
        return [first] + list(pool.map(one, rest))


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
        # Bounded: random.betavariate loops forever at beta:inf,1 and at beta:1e308,1 (sqrt(2a-1) overflows);
        # within BETA_RANGE it returns in microseconds (a Beta(1e4, 1e4) is already t = 0.5 ± 0.005).
        if head == "beta" and values and len(values) == 2 and all(BETA_RANGE[0] <= v <= BETA_RANGE[1] for v in values):
            return cls("beta", *values)
        if head == "constant" and values and len(values) == 1 and 0.0 <= values[0] <= 1.0:
            return cls("constant", values[0])
        raise UsageError(
            f"--t-sampling {text!r} is not valid; use uniform, beta:A,B (finite A, B > 0, each from {BETA_RANGE[0]:g} "
            f"to {BETA_RANGE[1]:,.0f}) or constant:T (0 ≤ T ≤ 1)"
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


def interpolated_outputs(
    model: nn.Module,
    names: list[str],
    params: list[torch.Tensor],
    anchor: list[torch.Tensor],
    t: float,
    x: torch.Tensor,
    tie_weights: bool = True,
) -> torch.Tensor:
    """The outputs of the network with weights (1−t)·params + t·anchor (buffers: the model's own).

    In train mode BatchNorm normalises with the batch's statistics, as the paper's star training does.
    """
    lerped = torch._foreach_lerp(params, anchor, t)
    return functional_call(model, dict(zip(names, lerped)), (x,), tie_weights=tie_weights)


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
    """The training loss of the network with weights (1−t)·params + t·anchor."""
    outputs = interpolated_outputs(model, names, params, anchor, t, x, tie_weights)
    return evaluation.loss_fn(outputs, y, label_smoothing=label_smoothing)


def fit_star(
    config: dict[str, Any],
    anchors: list[dict[str, torch.Tensor]],
    seed: int,
    device: torch.device,
    split: Split,
    t_sampling: TSampling,
    samples_per_step: int = 1,
    mu_star: float = 0.0,
    realign: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    resume: loop.ResumeFile | None = None,
    init: str = "random",
    realign_every: int = 1,
    realign_workers: int = 1,
) -> nn.Module:
    """Train a star toward `anchors` (state dicts); returns it (train mode).

    `init`: "random", a fresh seeded initialisation (the paper's), or "anchor-mean", the mean of the
    anchors, each first permuted to the first one by `realign` when given (docs/results/star-quality.md:
    with the star's own loss in the objective, this is what makes the star a solution that still connects).

    `realign(star_state, anchor_state)`, when given, re-permutes every anchor to the current star at the
    start of each epoch (Algorithm 1; off in the paper's released configs), or with `realign_every` K > 1
    at the start of epochs 0, K, 2K, ... only: between those the anchors keep their last permutation
    (a cheaper star, but another one: K is in the star's key). With `resume`, finished epochs are
    checkpointed (weights, optimizer state and the position of the anchor/t draws) and a rerun continues
    from the last one, bit for bit as if it had never stopped. The re-aligned anchors are not saved: they
    are recomputed, as weight matching is deterministic, from the star they were aligned to: at K = 1 the
    restored star itself (the next epoch re-aligns anyway); at K > 1 the star of the last re-alignment,
    which the resume file then carries beside the weights (one more copy of the star, not one per anchor).
    `realign_workers` threads share an epoch's re-alignments (`realign_all`): the same bits, not in the key.

    `on_epoch(epoch, mean_loss, train_acc)`: the loss is the mean of the steps' objective; the accuracy is
    that of the interpolated networks each step descended (anchor and t as drawn), averaged over the
    step's `samples_per_step` draws exactly as their losses are, over the epoch's samples. The μ* term
    (the star's own loss) is not part of it: the accuracy says how well the segments classify.
    """
    if init not in STAR_INITS:
        raise UsageError(f"--init must be one of {', '.join(STAR_INITS)}, got {init!r}")
    if isinstance(realign_every, bool) or not isinstance(realign_every, int) or realign_every < 1:
        raise UsageError(f"--realign-every must be a whole number of epochs ≥ 1, got {realign_every!r}")
    init_seed = STAR_SEED_OFFSET + seed
    torch.manual_seed(init_seed)
    model = loop.prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
    if init == "anchor-mean":
        first = anchors[0]
        model.load_state_dict(average([first] + (realign_all(realign, first, anchors[1:], realign_workers) if realign else anchors[1:])))
    optimizer = loop.build_optimizer(model.parameters(), config)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    # Re-tying shared weights costs a search through the module at every step: only networks with
    # tied parameters (listed once by named_parameters) pay for it.
    tied = len(names) != sum(1 for _ in model.named_parameters(remove_duplicate=False))

    def anchor_params(states: list[dict[str, torch.Tensor]]) -> list[list[torch.Tensor]]:
        # empty_like keeps each parameter's device and memory format (channels_last on CUDA).
        return [[torch.empty_like(p).copy_(state[n]) for n, p in zip(names, params)] for state in states]

    targets = anchor_params(anchors)
    draws = random.Random(init_seed)  # which anchor and which t, step after step
    start = resume.load(model, optimizer, device) if resume else 0
    if start:
        version, internal, gauss = resume.extra["draws"]
        draws.setstate((version, tuple(internal), gauss))

    # The star the anchors were last re-aligned to (only kept when realign_every > 1: the resume file needs it).
    aligned_to: dict[str, torch.Tensor] | None = None
    if start and realign is not None and realign_every > 1 and start % realign_every:
        # Resumed between two re-alignments: the anchors as the last one left them.
        aligned_to = {k[len(ALIGNED_TO):]: v for k, v in resume.extra_tensors.items() if k.startswith(ALIGNED_TO)}
        if not aligned_to:
            raise StarlightError(
                f"the resume file {resume.tensors} has no record of the star its anchors were re-aligned to; "
                f"delete the folder {resume.folder} to train this star from its start"
            )
        targets = anchor_params(realign_all(realign, aligned_to, anchors, realign_workers))

    def realign_anchors(epoch: int) -> None:
        nonlocal targets, aligned_to
        if epoch % realign_every:
            return  # between re-alignments: the anchors keep their last permutation
        star_state = {k: v.detach() for k, v in model.state_dict().items()}
        if realign_every > 1:
            aligned_to = {k: v.clone() for k, v in star_state.items()}
        targets = anchor_params(realign_all(realign, star_state, anchors, realign_workers))

    def resume_tensors() -> dict[str, torch.Tensor]:
        return {ALIGNED_TO + k: v for k, v in (aligned_to or {}).items()}

    def network_at(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, weights)), (x,), tie_weights=tied)

    # Under --compile the network is compiled, not the draw of anchor and t nor the lerp: t stays a
    # Python number outside the graph, so a new t every step compiles nothing again.
    segment_forward = compilation.compiled(network_at, config, device.type)
    own_forward = compilation.compiled(model, config, device.type)

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        smoothing = config["label_smoothing"]
        losses, rights = [], []
        for _ in range(samples_per_step):
            anchor = targets[draws.randrange(len(targets))]
            # (1−t)·θ + t·θ_i, as interpolated_outputs builds it.
            outputs = segment_forward(torch._foreach_lerp(params, anchor, t_sampling.draw(draws)), x)
            losses.append(evaluation.loss_fn(outputs, y, label_smoothing=smoothing))
            rights.append(evaluation.correct_count(outputs, y))
        loss = losses[0] if samples_per_step == 1 else torch.stack(losses).mean()
        right = None
        if rights[0] is not None:
            right = rights[0] if samples_per_step == 1 else torch.stack(rights).float().mean()
        if mu_star > 0:
            own = evaluation.loss_fn(own_forward(x), y, label_smoothing=smoothing)
            loss = (loss + mu_star * own) / (1 + mu_star)
        return loss, right

    return loop.run_epochs(
        model, optimizer, config, init_seed, device, split, step_loss, f"star seed {seed}",
        "Check the anchors, or lower the recipe's lr",
        start=start, resume=resume, before_epoch=realign_anchors if realign is not None else None,
        on_epoch=on_epoch, resume_extra=lambda: {"draws": list(draws.getstate())},
        resume_tensors=resume_tensors if realign is not None and realign_every > 1 else None,
    )
