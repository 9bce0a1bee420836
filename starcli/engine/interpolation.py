"""Networks on the segment between two solutions, (1−t)θ_A + tθ_B, evaluated fast.

- One network is allocated per architecture and its tensors are overwritten in place for every t
  (`torch._foreach_lerp_`), instead of a deep copy per point. Integer buffers (BatchNorm's
  num_batches_tracked) are never interpolated: they are A's.
- BatchNorm: the running statistics of an interpolated network are meaningless, so at every interior t
  they are reset and re-estimated as a cumulative average over the calibration data before evaluation
  (`evaluation.recalibrate_bn`); on a CPU in cache-sized row slices (same batches, same estimate to
  float rounding).
- `renorm` chooses that policy (engine/renormalisation.py): `none` keeps the interpolated statistics;
  networks without BatchNorm can instead have REPAIR's per-channel correction (or rescale, reshift).
- Losses and correct counts accumulate on the device: one synchronisation per split and t.
- MLPs with a wide input (≥ WIDE_INPUT features, e.g. MNIST's 784) and no BatchNorm: the first layer's
  output is affine in t, (1−t)·(W_A x + b_A) + t·(W_B x + b_B), so it is computed once per solution
  and split, and each t combines the two and runs only the layers after it. At MNIST-1D's 40 inputs
  the first layer is cheap and this does not pay (benchmarks/bench_barrier.py --input-size), so the
  plain path stays there. Equal to the plain path to float rounding (tests: 1e-6).
- Networks without BatchNorm can evaluate several t in one pass (`torch.func.vmap` over stacked
  weights). Measured on the MNIST-1D MLP it does not pay (benchmarks/bench_barrier.py), so
  `barriers.measure` takes one t per pass; the option stays for larger-batch hardware.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call, vmap

from starcli import models

from starcli.errors import StarlightError

from . import evaluation, memory, precision, renormalisation

Curves = dict[str, dict[str, list[float]]]  # split -> {"loss": [...], "acc": [...]}
# Rows per chunk on a CPU: a chunk's activations stay in cache between the layers' passes. The widest
# layer output of one chunk is kept within CPU_CHUNK_BYTES: 1,024 rows for the default MLP (width 256),
# ~200 for the MNIST-1D CNN (32 channels × 40 positions), whose convolutions ran faster per row in such
# chunks than in 1,024- or 4,096-row ones on this CPU (benchmarks/bench_barrier.py --recipe mnist1d-cnn).
CPU_ROWS = 1024
CPU_MIN_ROWS = 64
CPU_CHUNK_BYTES = 1 << 20
# BatchNorm re-estimation on a CPU in the same row slices (evaluation.recalibrate_bn's `rows`);
# benchmarks/bench_barrier.py turns it off to time PyTorch's own kernel beside it.
STREAM_CALIBRATION = True
# Input features from which the first layer's outputs are computed once per solution (see above).
WIDE_INPUT = 256
# BatchNorm re-estimation on a CPU holds about this many copies of the widest layer's output for the whole
# calibration batch (the layer's output, its normalised copy, the activation, a residual branch): measured
# peak resident memory grew by 4.5-6x batch x widest bytes (MNIST-1D CNN width 128, CIFAR ResNet-18 widths
# 8 and 16, batches 256-4096). A calibration that would need more than the memory available is refused.
CALIBRATION_COPIES = 6


class LineEvaluator:
    """Evaluates one architecture at endpoints and interpolated weights on fixed splits.

    splits: name -> (x, y) on the device. calibration: inputs for BatchNorm re-estimation (the training
    split without augmentation, or a subset of it). t_batch: how many t share one pass (networks with
    BatchNorm always take one at a time).
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: dict[str, Any],
        device: torch.device,
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
        calibration: torch.Tensor | None,
        batch_size: int = evaluation.EVAL_BATCH,
        t_batch: int = 1,
        config: dict[str, Any] | None = None,
        renorm: str | None = None,
        temperature: float = 1.0,
    ):
        # The solutions' training config, for their precision and memory format (engine/precision.py).
        self.config = config
        self.device = device
        self.net = precision.prepare_model(models.create(arch, **arch_kwargs).to(device), config, device).eval()
        self.splits = splits
        self.calibration = calibration
        self.batch_size = batch_size
        widest = widest_output_bytes(self.net, splits, config)
        self.rows = min(batch_size, cache_rows(widest)) if device.type == "cpu" else batch_size
        self.has_bn = evaluation.has_batchnorm(self.net)
        self.t_batch = 1 if self.has_bn or renorm else max(1, t_batch)
        # --renorm (engine/renormalisation.py); None: BatchNorm statistics reset where there is BatchNorm.
        policy = renorm or renormalisation.default_policy(self.has_bn)
        renormalisation.check(policy, self.has_bn)
        self.reset_bn = policy == "reset"
        if self.reset_bn and calibration is not None and device.type == "cpu":
            check_calibration_memory(arch, min(batch_size, len(calibration)), widest)
        self.renorm = None
        if policy in renormalisation.STATISTICS_POLICIES:
            self.renorm = renormalisation.Renormaliser(self.net, policy, calibration, batch_size)
        # state_dict() tensors share storage with the network: writing them rewrites the network.
        own = self.net.state_dict()
        self.float_keys = [k for k, v in own.items() if v.is_floating_point()]
        self.other_keys = [k for k, v in own.items() if not v.is_floating_point()]
        self.targets = [own[k] for k in self.float_keys]
        self.others = [own[k] for k in self.other_keys]
        self.param_names = [n for n, _ in self.net.named_parameters()]
        self.first = None if self.has_bn or self.renorm or temperature != 1.0 else _wide_first_layer(self.net)
        if temperature != 1.0:  # the loss of softmax(logits / T); accuracy is unchanged
            self.net.register_forward_hook(lambda module, inputs, logits: logits / temperature)
        self._first_outputs: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []

    @torch.inference_mode()
    def endpoint(self, state: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
        """(loss, acc) per split of a solution as stored: its own BatchNorm statistics, nothing re-estimated."""
        _copy(self.targets + self.others, [state[k] for k in self.float_keys + self.other_keys])
        return self._evaluate()

    @torch.inference_mode()
    def curve(self, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], ts: list[float]) -> Curves:
        """Loss and accuracy per split at each t of `ts` (meant for interior points: BN is re-estimated)."""
        out: Curves = {split: {"loss": [], "acc": []} for split in self.splits}
        for i in range(0, len(ts), self.t_batch):
            group = ts[i : i + self.t_batch]
            results = self._batched(state_a, state_b, group) if len(group) > 1 else [self._single(state_a, state_b, group[0])]
            for result in results:
                for split, (loss, acc) in result.items():
                    out[split]["loss"].append(loss)
                    out[split]["acc"].append(acc)
        return out

    def _single(self, state_a, state_b, t: float) -> dict[str, tuple[float, float]]:
        _copy(self.targets, [state_a[k] for k in self.float_keys])
        torch._foreach_lerp_(self.targets, [state_b[k] for k in self.float_keys], t)
        _copy(self.others, [state_a[k] for k in self.other_keys])  # integer buffers: A's, never interpolated
        if self.reset_bn:
            # On a CPU the calibration batches stream through the cache in slices of `rows` samples.
            rows = self.rows if self.device.type == "cpu" and STREAM_CALIBRATION else None
            evaluation.recalibrate_bn(self.net, self.calibration, self.batch_size, config=self.config, rows=rows)
        if self.renorm is not None:
            with self.renorm.corrected(self.net, state_a, state_b, t):
                return self._evaluate()
        if self.first is not None:
            return self._evaluate_from_first(self.first_outputs(state_a), self.first_outputs(state_b), t)
        return self._evaluate()

    def first_outputs(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """W x + b of the first layer on every split, for one solution; the last few are kept (identity
        of the weight tensors), so a solution in many pairs is computed once."""
        w, b = (state[f"{self.first[0]}.{k}"] for k in ("weight", "bias"))
        for kw, kb, outputs in self._first_outputs:
            if kw is w and kb is b:
                return outputs
        outputs = {}
        for split, (x, _) in self.splits.items():
            flat = x.flatten(1)
            outputs[split] = torch.cat(
                [torch.nn.functional.linear(flat[i : i + self.rows], w, b) for i in range(0, len(x), self.rows)]
            )
        self._first_outputs = ([(w, b, outputs)] + self._first_outputs)[:4]
        return outputs

    def _evaluate_from_first(self, first_a, first_b, t: float) -> dict[str, tuple[float, float]]:
        rest = self.first[1]
        result = {}
        for split, (_, y) in self.splits.items():
            tally = Tally(y, 1)
            for i in range(0, len(y), self.rows):
                h = torch.lerp(first_a[split][i : i + self.rows], first_b[split][i : i + self.rows], t)
                tally.add(rest(h).unsqueeze(0), i)
            result[split] = tally.results()[0]
        return result

    def _evaluate(self) -> dict[str, tuple[float, float]]:
        self.net.eval()
        result = {}
        for split, (x, y) in self.splits.items():
            tally = Tally(y, 1)
            for i in range(0, len(y), self.rows):
                with precision.autocast(self.device, self.config):
                    outputs = self.net(precision.inputs(x[i : i + self.rows], self.config))
                tally.add(outputs.unsqueeze(0), i)
            result[split] = tally.results()[0]
        return result

    def _batched(self, state_a, state_b, ts: list[float]) -> list[dict[str, tuple[float, float]]]:
        """Several t in one vmapped pass; rows per pass shrink so that memory matches one plain batch."""
        weights = torch.tensor(ts, device=self.targets[0].device)
        params = {}
        for name in self.param_names:
            a, b = state_a[name].unsqueeze(0), state_b[name].unsqueeze(0)
            params[name] = torch.lerp(a, b, weights.view(-1, *[1] * (a.dim() - 1)))
        forward = vmap(lambda p, x: functional_call(self.net, p, (x,)), in_dims=(0, None))
        step = max(1, self.rows // len(ts))
        per_split = {}
        for split, (x, y) in self.splits.items():
            tally = Tally(y, len(ts))
            for j in range(0, len(y), step):
                with precision.autocast(self.device, self.config):
                    outputs = forward(params, precision.inputs(x[j : j + step], self.config))
                tally.add(outputs, j)
            per_split[split] = tally.results()
        return [{split: per_split[split][k] for split in self.splits} for k in range(len(ts))]


class Tally:
    """Loss and accuracy of n networks on one split, chunk by chunk, accumulated on the device. Same
    numbers as `evaluation.evaluate`: mean cross-entropy and accuracy in %, or for regression targets the
    mean squared error and R² in %.
    """

    def __init__(self, y: torch.Tensor, n: int):
        self.y = y
        self.loss_sum = torch.zeros(n, dtype=torch.float64, device=y.device)
        self.correct = torch.zeros(n, dtype=torch.int64, device=y.device)

    def add(self, outputs: torch.Tensor, start: int) -> None:
        """outputs: (n, rows, ...) for the rows of y from `start`."""
        outputs = outputs.float()
        yb = self.y[start : start + outputs.shape[1]]
        if yb.is_floating_point():
            per_sample = (outputs - yb.float()).pow(2).flatten(2).mean(2)  # as evaluation.loss_fn
        else:
            # log-sum-exp minus the true class's logit is the cross-entropy; on CPUs it runs ~3× faster
            # than F.cross_entropy, whose log_softmax kernel is slow for few classes.
            picked = outputs.gather(2, yb.expand(len(outputs), -1).unsqueeze(2)).squeeze(2)
            per_sample = torch.logsumexp(outputs, 2) - picked
            self.correct += (outputs.argmax(2) == yb).sum(1)
        self.loss_sum += per_sample.sum(1, dtype=torch.float64)

    def add_transposed(self, logits: torch.Tensor, start: int) -> None:
        """The n networks' class scores laid out (n, classes, rows), for the rows of y from `start`
        (classification only): the same per-sample cross-entropy and argmax as `add`, reduced along the
        class axis, where each step is one vectorised pass over rows (planes.py's MLP path computes in
        this layout; over the last axis of (rows, 10) scores, logsumexp took ~5× longer on this CPU)."""
        yb = self.y[start : start + logits.shape[2]]
        logits = logits.float()
        picked = logits.gather(1, yb.expand(len(logits), 1, -1)).squeeze(1)
        per_sample = torch.logsumexp(logits, 1) - picked
        self.loss_sum += per_sample.sum(1, dtype=torch.float64)
        self.correct += (logits.max(1).indices == yb).sum(1)  # the first maximum, as argmax (faster here)

    def results(self) -> list[tuple[float, float]]:
        n = len(self.y)
        losses = (self.loss_sum / n).tolist()
        if self.y.is_floating_point():
            y = self.y.float()
            variance = (y - y.mean(0)).pow(2).flatten(1).mean(1).mean().item()
            return [(loss, 100.0 * (1.0 - loss / variance)) for loss in losses]
        return [(loss, 100.0 * c / n) for loss, c in zip(losses, self.correct.tolist())]


@torch.inference_mode()
def widest_output_bytes(net: torch.nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], config) -> int:
    """Bytes per sample of the network's widest layer output (one forward pass of two samples); 1 without splits."""
    if not splits:
        return 1
    widest = 1
    x = next(iter(splits.values()))[0][:2]

    def record(_module, _inputs, output):
        nonlocal widest
        if isinstance(output, torch.Tensor) and output.dim() > 0 and len(output) == len(x):
            widest = max(widest, output[0].numel() * output.element_size())

    hooks = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    try:
        net(precision.inputs(x, config))
    finally:
        for hook in hooks:
            hook.remove()
    return widest


def cache_rows(widest: int) -> int:
    """Rows per CPU chunk: CPU_CHUNK_BYTES over the widest layer output's bytes per sample, within
    [CPU_MIN_ROWS, CPU_ROWS]."""
    return max(CPU_MIN_ROWS, min(CPU_ROWS, CPU_CHUNK_BYTES // widest))


def check_calibration_memory(label: str, batch: int, widest: int) -> None:
    """Refuse a BatchNorm re-estimation whose calibration batch would not fit in the memory available
    (engine/memory.py), naming the batch that would: the kernel would otherwise kill the run mid-pair."""
    available = memory.available_bytes()
    need = CALIBRATION_COPIES * batch * widest
    if available is None or need <= available:
        return
    fits = available // (CALIBRATION_COPIES * widest)
    advice = (f"pass --batch-size {fits} or lower (stored with each result: it sets the calibration batches)"
              if fits >= 2 else "free memory or raise $STARLIGHT_MEMORY_LIMIT")
    raise StarlightError(
        f"re-estimating {label}'s BatchNorm at each t on batches of {batch:,} samples needs about "
        f"{memory.human(need)} ({CALIBRATION_COPIES} copies of its widest layer, {memory.human(widest)} a sample), "
        f"more than the {memory.human(available)} available; {advice}, or calibrate on fewer samples (--bn-calibration N)"
    )


def _wide_first_layer(net: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    """(name of the first Linear, the layers after it) for our MLP when its input is wide, else None."""
    from starcli.models.mlp import MLP

    if not isinstance(net, MLP):
        return None
    layers = net.layers
    if not (isinstance(layers[0], torch.nn.Flatten) and isinstance(layers[1], torch.nn.Linear)):
        return None
    if layers[1].in_features < WIDE_INPUT or layers[1].bias is None:
        return None
    return "layers.1", layers[2:]


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    if targets:
        torch._foreach_copy_(targets, sources)


def interpolate_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """(1−t)·a + t·b for floating tensors; integer buffers (BatchNorm's step counter) are taken from a,
    never interpolated."""
    return {k: torch.lerp(v, b[k], t) if v.is_floating_point() else v.clone() for k, v in a.items()}


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating tensors; integer buffers (BatchNorm's step counter) come from the first state."""
    first = states[0]
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in first.items()
    }
