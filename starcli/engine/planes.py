"""Loss and accuracy over a 2-D plane of weight space (Garipov et al. 2018; Li et al. 2018), evaluated fast.

- Through three solutions A, B, C: the plane's axes are orthonormal (Gram–Schmidt: e1 along B − A, e2
  along the part of C − A orthogonal to e1), so distances in the figure are distances in weight space,
  and a point (x, y) is θ = θ_A + x·e1 + y·e2. The three solutions sit at (0, 0), (‖B − A‖, 0) and
  (⟨C − A, e1⟩, ‖C − A − ⟨C − A, e1⟩e1‖); the grid covers them with a margin.
- Around one solution (`random_basis`): two random Gaussian directions drawn from a seed, each
  filter-normalised as Li et al. 2018 do: every filter (slice along a weight's first axis) of a
  direction is scaled to the norm of the same filter of θ, and 1-D tensors (biases, BatchNorm's
  affine parameters) get no direction ("ignore biasbn"), so the plot's scale is the network's own.
- Every floating tensor of the state dict moves (BatchNorm's running statistics too, but they are
  re-estimated at every point, as on a line); integer buffers are A's.
- Points are written in place into one network (`torch._foreach_*`, no copy per point) and evaluated
  with `interpolation.Tally` on the device; BatchNorm is re-estimated at every point
  (`evaluation.recalibrate_bn`), exactly as an interior point of a barrier's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from starcli import models

from . import evaluation, precision
from .interpolation import CPU_ROWS, Tally

# Below this, C − A is taken to lie on the line through A and B (relative to ‖C − A‖): no plane.
COLLINEAR = 1e-6


class DegeneratePlane(ValueError):
    """Identical or collinear solutions span no plane."""


@dataclass(frozen=True)
class Basis:
    """θ(x, y) = origin + x·e1 + y·e2 over the floating tensors `keys`; `marks` are where named
    points (the solutions) sit in plane coordinates."""

    keys: list[str]
    origin: list[torch.Tensor]
    e1: list[torch.Tensor]
    e2: list[torch.Tensor]
    marks: dict[str, tuple[float, float]]

    def point(self, x: float, y: float) -> dict[str, torch.Tensor]:
        """The floating tensors of θ(x, y), fresh (for references and single points)."""
        return {k: o + x * a + y * b for k, o, a, b in zip(self.keys, self.origin, self.e1, self.e2)}


def _float_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def three_point_basis(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], c: dict[str, torch.Tensor],
                      names: tuple[str, str, str] = ("A", "B", "C")) -> Basis:
    """The orthonormal plane through three states (see the module's docstring); `DegeneratePlane` when
    two are identical or all three lie on one line."""
    keys = _float_keys(a)
    origin = [a[k] for k in keys]
    u = [b[k] - a[k] for k in keys]
    v = [c[k] - a[k] for k in keys]
    nu, nv = _dot(u, u) ** 0.5, _dot(v, v) ** 0.5
    if nu == 0 or nv == 0 or _dot([c[k] - b[k] for k in keys], [c[k] - b[k] for k in keys]) == 0:
        raise DegeneratePlane(f"two of {', '.join(names)} have identical weights, so the three span no plane")
    e1 = [t / nu for t in u]
    along = _dot(v, e1)
    w = [t - along * s for t, s in zip(v, e1)]
    nw = _dot(w, w) ** 0.5
    if nw <= COLLINEAR * nv:
        raise DegeneratePlane(f"{', '.join(names)} lie on one line in weight space, so they span no plane")
    e2 = [t / nw for t in w]
    marks = {names[0]: (0.0, 0.0), names[1]: (nu, 0.0), names[2]: (along, nw)}
    return Basis(keys, origin, e1, e2, marks)


def random_basis(state: dict[str, torch.Tensor], seed: int, filter_normalised: bool = True, name: str = "A") -> Basis:
    """Two random directions around `state` (Li et al. 2018), from `seed`, drawn on the CPU in float64
    so every device draws the same; filter-normalised unless told otherwise (then each direction is
    scaled to ‖θ‖ as a whole)."""
    keys = _float_keys(state)
    g = torch.Generator().manual_seed(seed)
    dirs = []
    for _ in range(2):
        d = []
        for k in keys:
            theta = state[k]
            r = torch.randn(theta.shape, generator=g, dtype=torch.float64)
            if not filter_normalised:
                d.append(r)
                continue
            if theta.dim() <= 1 or k.endswith(("running_mean", "running_var")):
                d.append(torch.zeros_like(r))  # biases and BatchNorm: no direction
                continue
            t64 = theta.detach().double().cpu()
            dims = tuple(range(1, theta.dim()))
            r = r * (t64.norm(dim=dims, keepdim=True) / (r.norm(dim=dims, keepdim=True) + 1e-10))
            d.append(r)
        if not filter_normalised:  # the whole direction scaled to ‖θ‖
            theta = [state[k].detach().double().cpu() for k in keys]
            scale = (_dot(theta, theta) / _dot(d, d)) ** 0.5
            d = [t * scale for t in d]
        dirs.append([t.to(device=state[k].device, dtype=state[k].dtype) for t, k in zip(d, keys)])
    return Basis(keys, [state[k] for k in keys], dirs[0], dirs[1], {name: (0.0, 0.0)})


def grid_axes(basis: Basis, resolution: int, margin: float, span: float | None = None) -> tuple[list[float], list[float]]:
    """The grid's x and y values: `resolution` each, over [−span, span]² for a random plane, else the
    bounding box of the marks widened by `margin` of its size on every side."""
    if span is not None:
        xs = torch.linspace(-span, span, resolution, dtype=torch.float64).tolist()
        return xs, list(xs)
    px = [p[0] for p in basis.marks.values()]
    py = [p[1] for p in basis.marks.values()]
    wx, wy = max(px) - min(px), max(py) - min(py)
    xs = torch.linspace(min(px) - margin * wx, max(px) + margin * wx, resolution, dtype=torch.float64).tolist()
    ys = torch.linspace(min(py) - margin * wy, max(py) + margin * wy, resolution, dtype=torch.float64).tolist()
    return xs, ys


class PlaneEvaluator:
    """Evaluates one architecture at points of a plane: one network, its tensors overwritten per point."""

    def __init__(self, net: torch.nn.Module, device: torch.device, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 calibration: torch.Tensor | None, batch_size: int = evaluation.EVAL_BATCH,
                 config: dict[str, Any] | None = None):
        """`net`: a network of the architecture (its tensors are overwritten); `config`: the solutions'
        training config, for their precision and memory format (engine/precision.py)."""
        self.config = config
        self.device = device
        self.net = net.eval()
        self.splits = splits
        self.calibration = calibration
        self.batch_size = batch_size
        self.rows = min(batch_size, CPU_ROWS) if device.type == "cpu" else batch_size
        self.has_bn = evaluation.has_batchnorm(self.net)
        self.own = self.net.state_dict()  # shares storage with the network

    @classmethod
    def for_arch(cls, arch: str, arch_kwargs: dict[str, Any], device: torch.device, *args: Any, **kwargs: Any) -> "PlaneEvaluator":
        net = precision.prepare_model(models.create(arch, **arch_kwargs).to(device), kwargs.get("config"), device)
        return cls(net, device, *args, **kwargs)

    @torch.inference_mode()
    def cells(self, basis: Basis, others: dict[str, torch.Tensor], points: list[tuple[float, float]]
              ) -> Iterator[dict[str, tuple[float, float]]]:
        """(loss, acc) per split at each point, in order; `others`: the non-floating tensors (A's)."""
        targets = [self.own[k] for k in basis.keys]
        for k, v in others.items():
            self.own[k].copy_(v)
        for x, y in points:
            torch._foreach_copy_(targets, basis.origin)
            torch._foreach_add_(targets, basis.e1, alpha=x)
            torch._foreach_add_(targets, basis.e2, alpha=y)
            if self.has_bn:
                evaluation.recalibrate_bn(self.net, self.calibration, self.batch_size, config=self.config)
            yield self._evaluate()

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


def evaluate_grid(evaluator: PlaneEvaluator, basis: Basis, others: dict[str, torch.Tensor], xs: list[float],
                  ys: list[float], done: dict[str, Any] | None = None,
                  on_row: Callable[[dict[str, Any], int], None] | None = None) -> dict[str, Any]:
    """The grid's loss and accuracy per split, row by row (one y per row); `done` is a partial grid to
    resume (rows already filled are skipped) and `on_row(grid, rows_done)` is called after each row."""
    grid = done or {split: {"loss": [None] * len(ys), "acc": [None] * len(ys)} for split in evaluator.splits}
    for i, y in enumerate(ys):
        first = next(iter(evaluator.splits))
        if grid[first]["loss"][i] is not None:
            continue
        row = list(evaluator.cells(basis, others, [(x, y) for x in xs]))
        for split in evaluator.splits:
            grid[split]["loss"][i] = [r[split][0] for r in row]
            grid[split]["acc"][i] = [r[split][1] for r in row]
        if on_row is not None:
            on_row(grid, i + 1)
    return grid
