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
  (`evaluation.recalibrate_bn`), exactly as an interior point of a barrier's line (on a CPU in the same
  cache-sized row slices).
- Stacks of Linear and ReLU layers (our MLP without BatchNorm, or such an nn.Sequential; `LinearStack`): the
  first layer's output is affine in the plane's coordinates, W(x, y)·s + b(x, y) = P0 + x·P1 + y·P2 with P0
  = W_origin·s + b_origin, P1 = W_e1·s + b_e1, P2 = W_e2·s + b_e2 for every sample s, so the three are
  computed once per plane and split (in float64, kept in float32), P0 + y·P2 once per grid row, and each
  point adds x·P1 instead of multiplying the inputs by its weights. The layers after it run on the point's
  weights with samples as columns (features × samples), where the per-sample log-sum-exp over classes is a
  vectorised pass over samples (on a (samples, 10) layout it took ~5× longer on this CPU). A grid row is
  computed at once, chunk of samples by chunk, every point of the row in turn. Equal to the plain loop to
  float rounding: tests/test_planes.py holds it to 1e-5 relative of a plain loop and 1e-6 of the general
  path, so grids stored by either path read the same (benchmarks/bench_landscape.py measures ~1e-8 between
  the paths, ~2e-7 to the plain loop). Nets with BatchNorm, bf16 autocast, regression targets or first-layer
  outputs over STACK_BYTES take the general path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from starcli import models

from . import evaluation, precision
from . import interpolation
from .interpolation import Tally

# Below this, C − A is taken to lie on the line through A and B (relative to ‖C − A‖): no plane.
COLLINEAR = 1e-6
# The Linear/ReLU path keeps P0, P1, P2 and the row's P0 + y·P2 of every split's first-layer outputs (float32,
# and the float64 products they come from while they are made): above this many bytes it is not taken.
STACK_BYTES = 512 << 20
# Samples per pass of that path on a CPU (columns of its features × samples chunks). 512, 1,024, 2,048 and
# whole splits (5,000) ran within noise of each other on the benchmark (one thread, shared machine); 2,048
# bounds a pass's activations (8 MB at width 1,024) without a measured cost.
STACK_COLUMNS = 2048
# On a GPU (not measured: no GPU was lent to this work), chunks this large: one split of most datasets at
# once, with a chunk's activations within 256 MB at width 1,024.
STACK_GPU_COLUMNS = 1 << 16


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


def linear_stack(net: torch.nn.Module) -> tuple[list[torch.nn.Module], bool] | None:
    """(the Linear and ReLU layers, whether a Flatten comes first) of a network whose forward is exactly
    Flatten (optional), then Linear and ReLU layers ending in a Linear — our MLP without BatchNorm, or
    such an nn.Sequential; None for anything else."""
    from starcli.models.mlp import MLP

    seq = net.layers if isinstance(net, MLP) else net if type(net) is torch.nn.Sequential else None
    if seq is None:
        return None
    layers = list(seq)
    flattens = bool(layers) and type(layers[0]) is torch.nn.Flatten
    if flattens:
        if (layers[0].start_dim, layers[0].end_dim) != (1, -1):
            return None
        layers = layers[1:]
    if not layers or type(layers[0]) is not torch.nn.Linear or type(layers[-1]) is not torch.nn.Linear:
        return None
    if not all(type(m) in (torch.nn.Linear, torch.nn.ReLU) for m in layers):
        return None
    return layers, flattens


class LinearStack:
    """The plane's grid for a Linear/ReLU stack (see the module's docstring), a list of points at a time:
    the first layer's outputs P0, P1, P2 per split, computed once per basis; then, chunk of samples by
    chunk, every point's pass through the layers after the first and the tally of all the points' scores,
    so that memory is bounded by the chunk, not by points × samples."""

    def __init__(self, net: torch.nn.Module, layers: list[torch.nn.Module],
                 splits: dict[str, tuple[torch.Tensor, torch.Tensor]], columns: int):
        names = {m: name for name, m in net.named_modules()}
        self.first = layers[0]
        self.rest = layers[1:]
        self.names = [names[m] for m in layers]  # state-dict prefixes ("" for a bare Linear)
        self.splits = {split: (x.flatten(1), y) for split, (x, y) in splits.items()}
        self.columns = columns
        self.basis: Basis | None = None
        self.terms: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.row: tuple[float, dict[str, torch.Tensor]] | None = None

    @staticmethod
    def fits(net: torch.nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
             ) -> list[torch.nn.Module] | None:
        """The stack's layers when the path applies to `net` on `splits` (flat or flattenable inputs,
        class labels, first-layer outputs within STACK_BYTES), else None."""
        found = linear_stack(net)
        if found is None or any(y.is_floating_point() for _, y in splits.values()):
            return None
        layers, flattens = found
        if not flattens and any(x.dim() != 2 for x, _ in splits.values()):
            return None
        if any(m.weight.dtype != torch.float32 for m in layers if isinstance(m, torch.nn.Linear)):
            return None  # it computes in float32
        width = layers[0].out_features
        total = sum(len(y) for _, y in splits.values()) * width * (4 + 4 + 4 + 4 + 8)
        return layers if total <= STACK_BYTES else None

    def _tensor(self, tensors: list[torch.Tensor], keys: list[str], layer: int, name: str) -> torch.Tensor | None:
        key = f"{self.names[layer]}.{name}" if self.names[layer] else name
        return tensors[keys.index(key)] if key in keys else None

    def _prepare(self, basis: Basis) -> None:
        """P0, P1, P2 of every split for `basis` (float64 products, kept in float32)."""
        self.basis, self.row, self.terms = basis, None, {}
        for split, (x, _) in self.splits.items():
            wide = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
            xt = x.to(wide).T
            out = []
            for tensors in (basis.origin, basis.e1, basis.e2):
                w = self._tensor(tensors, basis.keys, 0, "weight").to(wide)
                b = self._tensor(tensors, basis.keys, 0, "bias")
                out.append((w @ xt if b is None else torch.addmm(b.to(wide).unsqueeze(1), w, xt)).float())
            self.terms[split] = (out[0], out[1], out[2])

    def _weights(self, basis: Basis, x: float, y: float) -> list[tuple[torch.Tensor, torch.Tensor | None] | None]:
        """Each later Linear's (weight, bias as a column) at (x, y), by the general path's operations in
        its order (origin, + x·e1, + y·e2); None for a ReLU."""
        out: list[tuple[torch.Tensor, torch.Tensor | None] | None] = []
        for i, layer in enumerate(self.rest, 1):
            if not isinstance(layer, torch.nn.Linear):
                out.append(None)
                continue
            at = []
            for name in ("weight", "bias"):
                o = self._tensor(basis.origin, basis.keys, i, name)
                at.append(None if o is None else torch.add(o, self._tensor(basis.e1, basis.keys, i, name), alpha=x)
                          .add_(self._tensor(basis.e2, basis.keys, i, name), alpha=y))
            out.append((at[0], None if at[1] is None else at[1].unsqueeze(1)))
        return out

    def cells(self, basis: Basis, points: list[tuple[float, float]]) -> list[dict[str, tuple[float, float]]]:
        """(loss, acc) per split at each point."""
        if self.basis is not basis:
            self._prepare(basis)
        weights = [self._weights(basis, x, y) for x, y in points]
        results: list[dict[str, tuple[float, float]]] = [{} for _ in points]
        classes = self.rest[-1].out_features
        for split, (_, labels) in self.splits.items():
            p1 = self.terms[split][1]
            rows = [self._row(split, y) for _, y in points]  # P0 + y·P2, shared by a grid row's points
            tally = Tally(labels, len(points))
            chunk = min(self.columns, len(labels))
            logits = torch.empty(len(points), classes, chunk, dtype=p1.dtype, device=p1.device)
            for start in range(0, len(labels), self.columns):
                end = min(start + self.columns, len(labels))
                for k, (x, _) in enumerate(points):
                    h = torch.add(rows[k][:, start:end], p1[:, start:end], alpha=x)
                    for i, at in enumerate(weights[k], 1):
                        out = logits[k, :, : end - start] if i == len(self.rest) else None
                        if at is None:
                            h = h.relu_()
                        elif at[1] is None:
                            h = torch.mm(at[0], h, out=out)
                        else:
                            h = torch.addmm(at[1], at[0], h, out=out)
                tally.add_transposed(logits[:, :, : end - start], start)  # every point's scores on this chunk
            for k, r in enumerate(tally.results()):
                results[k][split] = r
        return results

    def _row(self, split: str, y: float) -> torch.Tensor:
        """P0 + y·P2 for `split`, kept while y stays the same (one grid row)."""
        if self.row is None or self.row[0] != y:
            self.row = (y, {s: torch.add(p0, p2, alpha=y) for s, (p0, _, p2) in self.terms.items()})
        return self.row[1][split]


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
        # On a CPU, rows per chunk sized to the cache as a barrier's line does (~200 for the MNIST-1D CNN),
        # and BatchNorm re-estimated in the same row slices: the demo CNN's plane took 1.4× less CPU time
        # than with 1,024-row chunks and PyTorch's train-mode kernel over 4,096-row batches, losses within
        # 2e-7 relative, accuracies equal (a 4×4 plane through three trained mnist1d-cnn, one thread).
        widest = interpolation.widest_output_bytes(self.net, splits, config)
        self.rows = min(batch_size, interpolation.cache_rows(widest)) if device.type == "cpu" else batch_size
        self.has_bn = evaluation.has_batchnorm(self.net)
        if self.has_bn and calibration is not None and device.type == "cpu":
            interpolation.check_calibration_memory(type(self.net).__name__, min(batch_size, len(calibration)), widest)
        self.own = self.net.state_dict()  # shares storage with the network
        # The Linear/ReLU path where it applies and computes what the general one would (fp32 here).
        bf16 = bool(config) and config.get("precision") == "bf16" and device.type == "cuda"
        layers = None if self.has_bn or bf16 else LinearStack.fits(self.net, splits)
        columns = STACK_COLUMNS if device.type == "cpu" else STACK_GPU_COLUMNS
        self.stack = LinearStack(self.net, layers, splits, columns) if layers else None

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
        if self.stack is not None:
            yield from self.stack.cells(basis, points)
            return
        for x, y in points:
            torch._foreach_copy_(targets, basis.origin)
            torch._foreach_add_(targets, basis.e1, alpha=x)
            torch._foreach_add_(targets, basis.e2, alpha=y)
            if self.has_bn:
                rows = self.rows if self.device.type == "cpu" and interpolation.STREAM_CALIBRATION else None
                evaluation.recalibrate_bn(self.net, self.calibration, self.batch_size, config=self.config, rows=rows)
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
