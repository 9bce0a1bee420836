"""Several seeds of one config trained together, stacked along a leading seed axis.

Why: on a CPU the default recipe's network (40 → 256 → 10) is so small that one training step is
mostly Python and dispatcher overhead, paid once per seed; with the seeds stacked, every operation of
a step (the gathers, `torch.baddbmm` per layer, the loss, the backward pass, the optimizer) is paid
once for all of them.

Contract: each seed's weights are bit-identical to `training.fit(config, seed, ...)`. Everything a seed
sees is taken from the one-seed loop itself, not re-derived: the initialisation is
`torch.manual_seed(seed); models.create(...)` (the same networks, then stacked), the shuffles and
augmentation come from `loop.epoch_generator(seed, epoch)` per seed, the learning rate from
`loop.lr_at`, and the optimizer is `loop.build_optimizer` applied to the stacked tensors: the
CPU runs torch.optim's single-tensor path for both, and its operations are elementwise, so each seed's
slice sees the same floating-point operations. The per-seed loss is `evaluation.loss_fn` on that
seed's logits alone (a mean over its batch), and the stacked loss is their sum, so
d(sum)/d(logits_i) = dL_i/d(logits_i) exactly. BatchNorm keeps statistics per seed (the seeds'
channels side by side in one `F.batch_norm`). Where a stacked kernel is known to round differently
(matrix-vector or tiny products, seed blocks not 64-byte aligned, BatchNorm widths not a multiple of
32) that one operation runs per seed, on fresh aligned copies, with fit's own calls.

Whether a stacked product or reduction rounds exactly as the one-seed one does is a property of the
kernels (MKL, the CPU reductions), not of this code: `stacking_is_exact` checks it on the machine at
hand, and callers stack only where it returns True. On the development CPU (MKL, AVX-512, torch 2.14)
it holds with one thread and fails with two (the batched and single gemms then split work differently).

Pure torch: part of the engine, it imports nothing of the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from starcli import models
from starcli.errors import StarlightError

from . import data, evaluation
from .data import Split
from .loop import ResumeFile, batches, build_optimizer, epoch_generator, lr_at, non_finite_message, prepare_model
from .training import fit

# Architectures whose networks are a plain chain of these layers: what `StackedNet` can run.
STACKABLE_ARCHS = ("mlp", "linear2")
_LAYERS = (nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU)
_BN_TENSORS = ("running_mean", "running_var", "weight", "bias")  # F.batch_norm's positional order


@dataclass
class SeedRun:
    """One seed of a stacked run: its trained network, or the error `fit` would have raised for it."""

    seed: int
    model: nn.Module | None
    error: StarlightError | None = None


def stackable(config: dict[str, Any], device: torch.device) -> bool:
    """Whether the config's network can be stacked at all (not whether stacking is exact here)."""
    if config["arch"] not in STACKABLE_ARCHS:
        return False
    if config.get("precision") == "bf16" and device.type == "cuda":
        return False  # autocast would cast inside _StackedLinear but not in its hand-written backward
    if config.get("memory_format", "contiguous") != "contiguous":
        return False  # fit would run channels_last tensors, StackedNet runs its own layout
    if config.get("compile"):
        return False  # fit would run inductor's fused kernels, StackedNet eager ones: other bits
    net = models.create(config["arch"], **config["arch_kwargs"])
    layers = net.layers if hasattr(net, "layers") else net
    return isinstance(layers, nn.Sequential) and all(type(m) in _LAYERS for m in layers)


# Fresh tensors are 64-byte aligned, so `fit`'s operands always are; MKL's kernels may round differently
# on data at other offsets, so a seed's block inside a stacked tensor must start at a multiple of this.
_ALIGN = 64


# The channels-last BatchNorm kernel walks channels two AVX-512 vectors at a time (measured: 16 or 48
# channels per seed side by side round differently, 32, 64 and 256 do not).
_BN_BLOCK = 128


def _aligned(t: torch.Tensor, per_seed: int) -> bool:
    return (per_seed * t.element_size()) % _ALIGN == 0


def _per_seed_products(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a @ b must run as N separate `mm`s to round as `fit`'s `mm` does.

    Measured on the CPU: bmm rounds as mm does except where mm takes another kernel (a dimension of one,
    i.e. a matrix-vector product), where bmm does (under 400 multiply-adds per seed it has its own loop),
    and where a seed's matrices would not start 64-byte aligned inside the stacked tensors.
    """
    m, k, n = a.shape[1], a.shape[2], b.shape[2]
    aligned = _aligned(a, m * k) and _aligned(b, k * n) and _aligned(a, m * n)
    return min(m, k, n) == 1 or m * k * n < 400 or not aligned


def _bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, m, k) @ (N, k, n) [+ bias (N, n)], each seed's product rounded as `fit`'s mm/addmm rounds it."""
    if _per_seed_products(a, b):
        # clone(): a fresh, aligned copy with the slice's own strides (a transposed view stays transposed).
        if bias is None:
            return torch.stack([torch.mm(x.clone(), y.clone()) for x, y in zip(a, b)])
        return torch.stack([torch.addmm(c.clone(), x.clone(), y.clone()) for c, x, y in zip(bias, a, b)])
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b)


class _StackedLinear(torch.autograd.Function):
    """x (N, B, in) @ W(N, out, in)ᵀ + b, with the backward products laid out as autograd lays out `fit`'s.

    For F.linear's addmm autograd computes the weight gradient as grad.t().mm(x) (W.t() is column-major,
    see mm_mat2_backward), while bmm's own backward computes xᵀ·grad and transposes it: the same sums in
    another kernel order, which rounds differently. Here it is Gᵀ·x per seed, as in `fit`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _bmm(x, weight.transpose(1, 2), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = _bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class StackedNet:
    """The parameters and buffers of N identical-architecture chains, each as one (N, ...) tensor.

    `params` are leaf tensors in the order of `model.parameters()`, so optimizer state index k of a
    one-seed optimizer is stacked state k here.
    """

    def __init__(self, nets: list[nn.Module]):
        self.template = nets[0]
        self.layers = self.template.layers if hasattr(self.template, "layers") else self.template
        self.prefix = "layers." if hasattr(self.template, "layers") else ""
        states = [net.state_dict() for net in nets]
        self.param_names = [name for name, _ in self.template.named_parameters()]
        self.tensors: dict[str, torch.Tensor] = {}
        for name in states[0]:
            values = [s[name].detach() for s in states]
            if values[0].dim() == 0:  # num_batches_tracked: the same count for every seed
                self.tensors[name] = values[0].clone()
            else:
                self.tensors[name] = torch.stack(values)
        for name in self.param_names:
            self.tensors[name].requires_grad_(True)

    @property
    def n(self) -> int:
        return self.tensors[self.param_names[0]].shape[0]

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.tensors[name] for name in self.param_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, B, ...) → logits (N, B, classes); train-mode BatchNorm updates the running statistics."""
        t, n = self.tensors, self.n
        for k, layer in enumerate(self.layers):
            name = f"{self.prefix}{k}."
            if isinstance(layer, nn.Flatten):
                x = x.flatten(2)
            elif isinstance(layer, nn.Linear):
                # Contiguous like fit's activations, so each seed's gemm sees the same operand layout.
                x = _StackedLinear.apply(x.contiguous(), t[name + "weight"], t.get(name + "bias"))
            elif isinstance(layer, nn.BatchNorm1d):
                b, c = x.shape[1], x.shape[2]
                t[name + "num_batches_tracked"].add_(1)
                bn = dict(training=True, momentum=layer.momentum, eps=layer.eps)
                if (c * x.element_size()) % _BN_BLOCK:
                    # Seeds' channels would share SIMD vectors and tails unlike fit's: one call per seed.
                    x = torch.stack(
                        [
                            F.batch_norm(x[i].clone(), *(t[name + k][i] for k in _BN_TENSORS), **bn)
                            for i in range(n)
                        ]
                    )
                    continue
                # Seeds' channels side by side: a (B, N·C) batch whose per-channel statistics are each seed's own.
                flat = x.transpose(0, 1).reshape(b, n * c)
                flat = F.batch_norm(
                    flat,
                    t[name + "running_mean"].view(-1),
                    t[name + "running_var"].view(-1),
                    t[name + "weight"].view(-1),
                    t[name + "bias"].view(-1),
                    training=True,
                    momentum=layer.momentum,
                    eps=layer.eps,
                )
                x = flat.view(b, n, c).transpose(0, 1)
            elif isinstance(layer, nn.ReLU):
                x = torch.relu_(x)  # in place: x is a fresh intermediate nobody saved (exact either way)
            else:
                raise StarlightError(f"cannot stack a {type(layer).__name__} layer")
        return x

    def state_of(self, i: int) -> dict[str, torch.Tensor]:
        """Seed i's state dict, loadable into the one-seed network."""
        return {
            name: (v.detach().clone() if v.dim() == 0 else v.detach()[i].clone()) for name, v in self.tensors.items()
        }

    def keep(self, rows: list[int]) -> None:
        """Drop every seed but `rows` (new leaf tensors; the optimizer must be rebuilt)."""
        index = torch.tensor(rows, device=self.tensors[self.param_names[0]].device)
        for name, v in self.tensors.items():
            if v.dim() > 0:
                self.tensors[name] = v.detach().index_select(0, index)
        for name in self.param_names:
            self.tensors[name].requires_grad_(True)


def _stack_optimizer_state(optimizers: list[torch.optim.Optimizer], net: StackedNet, config) -> torch.optim.Optimizer:
    """A torch optimizer over the stacked parameters whose state is the seeds' states stacked."""
    stacked = build_optimizer(net.params, config)
    states = [opt.state_dict()["state"] for opt in optimizers]
    for k, p in enumerate(net.params):
        if k not in states[0]:
            continue
        entry = {}
        for key, value in states[0][k].items():
            if torch.is_tensor(value) and value.dim() > 0:
                entry[key] = torch.stack([s[k][key] for s in states]).to(p.device)
            else:
                # Scalars (Adam's step) advance together for all seeds of one run.
                entry[key] = value.clone() if torch.is_tensor(value) else value
        stacked.state[p] = entry
    return stacked


def _restack_optimizer(old: torch.optim.Optimizer, old_params, net: StackedNet, rows: list[int], config):
    new = build_optimizer(net.params, config)
    index = torch.tensor(rows, device=net.params[0].device)
    for p_old, p_new in zip(old_params, net.params):
        if p_old in old.state:
            new.state[p_new] = {
                key: (v.index_select(0, index) if torch.is_tensor(v) and v.dim() > 0 else v)
                for key, v in old.state[p_old].items()
            }
    return new


def _unstack_into(net: StackedNet, stacked_opt, i: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Seed i's slice of the stacked weights and optimizer state, written into its one-seed objects."""
    model.load_state_dict(net.state_of(i))
    optimizer.state.clear()
    for p_stacked, p in zip(net.params, model.parameters()):
        if p_stacked in stacked_opt.state:
            optimizer.state[p] = {
                key: (v[i].clone() if torch.is_tensor(v) and v.dim() > 0 else (v.clone() if torch.is_tensor(v) else v))
                for key, v in stacked_opt.state[p_stacked].items()
            }


def stacked_loss(logits: torch.Tensor, targets: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    """Per-seed losses (N,), each exactly `evaluation.loss_fn` of that seed's logits, as `fit` computes it.

    Plain cross-entropy is log_softmax then nll_loss: the log_softmax is row by row, so one call serves all
    seeds, while the batch mean stays nll_loss's own (its cascade sum rounds unlike a `.mean(1)`). Label
    smoothing and regression losses mix reductions, so they run per seed.
    """
    if not targets.is_floating_point() and config["label_smoothing"] == 0:
        log_p = F.log_softmax(logits, dim=-1)
        return torch.stack([F.nll_loss(lp, y) for lp, y in zip(log_p.unbind(0), targets.unbind(0))])
    return torch.stack(
        [
            evaluation.loss_fn(out, y, label_smoothing=config["label_smoothing"])
            for out, y in zip(logits.unbind(0), targets.unbind(0))
        ]
    )


def fit_stacked(
    config: dict[str, Any],
    seeds: list[int],
    device: torch.device,
    train: Split,
    resume: list[ResumeFile] | None = None,
    on_epoch: Callable[[int, int, float, float | None], None] | None = None,
) -> list[SeedRun]:
    """Train `seeds` together; seed i's network is bit-identical to `fit(config, seeds[i], ...)` where
    `stacking_is_exact` holds. A seed whose loss becomes non-finite stops there (its SeedRun carries the
    error `fit` would raise) while the others go on. `resume`: one `loop.ResumeFile` per seed, in
    `fit`'s own format, so a run may be resumed stacked or one seed at a time, whichever way it began.
    `on_epoch(seed, epochs_done, mean_loss, train_acc)`, each value as `fit` reports it for that seed.
    """
    if not stackable(config, device):
        raise StarlightError(
            f"architecture {config['arch']!r} with precision {config.get('precision')} on {device.type} cannot be"
            " stacked; train its seeds one at a time"
        )
    if resume is not None and len(resume) != len(seeds):
        raise StarlightError(f"{len(seeds)} seeds but {len(resume)} resume files")
    if len(set(seeds)) != len(seeds):
        raise StarlightError(f"seeds repeat: {seeds}")
    nets, optimizers, starts = [], [], []
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)  # exactly fit's initialisation
        net = prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
        opt = build_optimizer(net.parameters(), config)
        starts.append(resume[k].load(net, opt, device) if resume else 0)
        net.train()
        nets.append(net)
        optimizers.append(opt)
    runs = [SeedRun(seed, net) for seed, net in zip(seeds, nets)]
    # Seeds resumed from different epochs cannot share a step: each group of equal start runs on its own.
    for start in sorted(set(starts)):
        group = [k for k, s in enumerate(starts) if s == start]
        _fit_group(config, [seeds[k] for k in group], [nets[k] for k in group], [optimizers[k] for k in group],
                   [resume[k] for k in group] if resume else None, [runs[k] for k in group], start, device, train,
                   on_epoch)
    return runs


def _fit_group(config, seeds, nets, optimizers, resume, runs, start, device, train, on_epoch) -> None:
    stacked = StackedNet(nets)
    opt = _stack_optimizer_state(optimizers, stacked, config)
    alive = list(range(len(seeds)))  # positions (in this group) of the seeds still in the stack
    n_train = len(train.x)
    steps_per_epoch = len(batches(n_train, config["batch_size"], epoch_generator(seeds[0], 0)))
    for epoch in range(start, config["epochs"]):
        gens = [epoch_generator(seeds[k], epoch) for k in alive]
        orders = [batches(n_train, config["batch_size"], g) for g in gens]
        totals = [0.0] * len(alive)
        rights = None  # per seed, the epoch's correctly classified samples, summed on the device
        for i in range(steps_per_epoch):
            lr = lr_at(config, epoch * steps_per_epoch + i, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.stack([order[i] for order in orders]).to(train.x.device)
            if config["augmentation"] == "none":
                # index_select of the flat indices: the same rows as fit's x[idx], with a cheaper kernel.
                xb = train.x.index_select(0, idx.view(-1)).view(*idx.shape, *train.x.shape[1:])
            else:
                xb = torch.stack(
                    [data.augment(train.x[row], config["augmentation"], g) for row, g in zip(idx, gens)]
                )
            yb = train.y[idx.to(train.y.device)]
            logits = stacked.forward(xb)
            losses = stacked_loss(logits, yb, config)
            right = evaluation.correct_count(logits, yb)
            if right is not None:
                rights = right if rights is None else rights + right
            values = losses.tolist()
            finite = [math.isfinite(v) for v in values]
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if not all(finite):
                for pos in [p for p, ok in enumerate(finite) if not ok]:
                    k = alive[pos]
                    runs[k].model = None
                    runs[k].error = StarlightError(
                        non_finite_message(f"seed {seeds[k]}", epoch + 1, "Lower --lr or check the data")
                    )
                rows = [p for p, ok in enumerate(finite) if ok]
                alive = [alive[p] for p in rows]
                gens = [gens[p] for p in rows]
                orders = [orders[p] for p in rows]
                totals = [totals[p] for p in rows]
                values = [values[p] for p in rows]
                if rights is not None:
                    rights = rights.index_select(0, torch.tensor(rows, device=rights.device))
                if not alive:
                    return
                old_params, grads = stacked.params, [p.grad for p in stacked.params]
                stacked.keep(rows)
                index = torch.tensor(rows, device=grads[0].device)
                for p, g in zip(stacked.params, grads):
                    p.grad = g.index_select(0, index)
                opt = _restack_optimizer(opt, old_params, stacked, rows, config)
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.step()
            totals = [t + v for t, v in zip(totals, values)]
        accs = [None] * len(alive) if rights is None else [100.0 * r / n_train for r in rights.tolist()]
        for pos, k in enumerate(alive):
            if resume and resume[k].due(final=epoch + 1 == config["epochs"]):
                _unstack_into(stacked, opt, pos, nets[k], optimizers[k])
                resume[k].save(nets[k], optimizers[k], epoch + 1)
            if on_epoch:
                on_epoch(seeds[k], epoch + 1, totals[pos] / steps_per_epoch, accs[pos])
    for pos, k in enumerate(alive):
        _unstack_into(stacked, opt, pos, nets[k], optimizers[k])


def _state_bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


def stacking_is_exact(config: dict[str, Any], device: torch.device, seeds: int = 2, samples: int = 512) -> bool:
    """Train `seeds` seeds for 2 epochs on `samples` synthetic samples of the dataset's shape both
    ways, and compare every weight and buffer byte for byte, and the reported epoch losses and accuracies.

    Callers stack only where this returns True, so a stacked run never silently stands in for a
    sequential one. Pass the number of seeds the real run will stack: the kernels' blocking may
    depend on it.
    """
    if not stackable(config, device):
        return False
    info = data.info(config["dataset"])
    cfg = dict(config, epochs=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, *info.shape, generator=g)
    if info.task == "regression":
        y = torch.randn(samples, info.num_classes, generator=g)
    else:
        y = torch.randint(0, info.num_classes, (samples,), generator=g)
    split = Split(x.to(device), y.to(device))
    ids = list(range(1, seeds + 1))
    stacked_losses: dict[int, list] = {s: [] for s in ids}
    single_losses: dict[int, list] = {s: [] for s in ids}
    with torch.random.fork_rng(devices=[]):
        runs = fit_stacked(cfg, ids, device, split, on_epoch=lambda s, e, loss, acc: stacked_losses[s].append((loss, acc)))
        singles = [
            fit(cfg, s, device, split, on_epoch=lambda e, loss, acc, s=s: single_losses[s].append((loss, acc)))
            for s in ids
        ]
    same_weights = all(
        r.model is not None and _state_bytes(r.model) == _state_bytes(m) for r, m in zip(runs, singles)
    )
    return same_weights and stacked_losses == single_losses
