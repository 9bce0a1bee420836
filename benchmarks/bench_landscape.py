"""The instruments against the plain implementations researchers use, same network, same data, same work.

Plane: `engine/planes.py`'s grid against two plain loops at the same points (the orthonormal plane through
three networks of the default recipe or of --plane-recipe, train and test splits): "deep copy" builds each
point's state dict, loads it into a deep copy of the network and evaluates each split in one batch under
`no_grad` with `F.cross_entropy` (what research scripts do); "loss-landscapes" walks the grid as its
`planar_interpolation` does, adding the step to every parameter tensor in place, one point after another.
"ours as before" is ours without its two speed-ups: for the MLP, the Linear/ReLU path turned off (each point
written into one network and the whole network evaluated); for a BatchNorm net (`--plane-recipe
mnist1d-cnn`, BatchNorm re-estimated at every point by all variants, the references as swa_utils.update_bn
does), 1,024-row chunks and PyTorch's train-mode kernel instead of cache-sized rows and streamed
re-estimation. Wall-clock and CPU (process) time are both reported: on a shared machine the wall clock
includes time the process waited for a core.

Sharpness: `engine/sharpness.py` against a PyHessian-style implementation written here from the algorithm
(PyHessian is GPL; none of its code is used): the parameters as a list of tensors, the gradient built once
with `create_graph=True` and every Hessian-vector product a double backward through that retained graph,
vector algebra per parameter tensor in Python, the top eigenvalue by power iteration (stopping when the
estimate changes by less than `tol` relative), the trace by Hutchinson's estimator one product per probe.

- trace, equal products: both estimate the trace from the same Rademacher vectors (drawn flat, split per
  parameter for the reference), so the numbers agree to float rounding; ours runs the probes in vmapped
  blocks of forward-over-reverse products.
- top-k eigenvalues (k = 5), each to its own stopping rule: power iteration with deflation, one run per
  eigenvalue, to relative change 1e-4 (PyHessian's default 1e-3 is looser), Lanczos to relative residual
  1e-4; values, product counts and (--dense) the dense Hessian's eigenvalues printed.
- per product: the same number of products through each operator (equal HVPs).

Variants interleaved in one process, repeated; the median of each and their ratio.

    OMP_NUM_THREADS=1 python benchmarks/bench_landscape.py [--repeats 5] [--subset 1000] [--width 128]
        [--plane-width 256] [--resolution 21] [--plane-epochs 0] [--plane-recipe mnist1d-cnn]
        [--only sharpness|plane]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import models  # noqa: E402
from starcli.engine import data, evaluation, interpolation, recipes  # noqa: E402
from starcli.engine import planes  # noqa: E402
from starcli.engine import sharpness as ours  # noqa: E402


# --- the PyHessian-style reference (written from the algorithm) ---------------------------------------


class ListHessian:
    """Hessian-vector products by double backward through one retained graph, vectors as tensor lists."""

    def __init__(self, net, x, y):
        self.params = [p for p in net.parameters() if p.requires_grad]
        loss = evaluation.loss_fn(net(x), y)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.products = 0

    def hvp(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        self.products += 1
        return list(torch.autograd.grad(self.grads, self.params, grad_outputs=v, retain_graph=True))


def _dot(a, b) -> float:
    return sum((x * y).sum() for x, y in zip(a, b)).item()


def _normalised(v):
    n = _dot(v, v) ** 0.5 + 1e-6
    return [x / n for x in v]


def power_top(h: ListHessian, k: int, max_iter: int, tol: float, seed: int) -> list[float]:
    """The top k by power iteration, one run per eigenvalue, each deflated by orthogonalising against the
    eigenvectors found before it; a run stops when its estimate changes by less than `tol` relative."""
    g = torch.Generator().manual_seed(seed)
    values, vectors = [], []
    for _ in range(k):
        v = _normalised([torch.randn(p.shape, generator=g) for p in h.params])
        value = None
        for _ in range(max_iter):
            for u in vectors:  # deflation
                c = _dot(u, v)
                v = [a - c * b for a, b in zip(v, u)]
            v = _normalised(v)
            hv = h.hvp(v)
            new = _dot(hv, v)
            v = _normalised(hv)
            if value is not None and abs(new - value) / (abs(value) + 1e-6) < tol:
                value = new
                break
            value = new
        values.append(value)
        vectors.append(v)
    return values


def hutchinson_list(h: ListHessian, probes: int, seed: int) -> float:
    """One product per probe, the probes drawn exactly as engine/sharpness.py draws them (flat, in blocks)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [p.numel() for p in h.params]
    dim = sum(sizes)
    total = []
    for start in range(0, probes, ours.PROBE_BLOCK):
        block = torch.randint(0, 2, (min(ours.PROBE_BLOCK, probes - start), dim), generator=g) * 2 - 1
        for flat in block.float():
            v = [t.view(p.shape) for t, p in zip(flat.split(sizes), h.params)]
            total.append(_dot(h.hvp(v), v))
    return sum(total) / len(total)


# --- the workload ------------------------------------------------------------------------------------


def trained_mlp(width: int, subset: int, epochs: int = 15):
    """The default recipe's MLP, trained briefly here (a realistic Hessian; the cost does not depend on it)."""
    config = recipes.resolve(recipes.DEFAULT_RECIPE, width=width)
    torch.manual_seed(0)
    net = models.create(config["arch"], **config["arch_kwargs"])
    x, y = data.load(config["dataset"], "train", cache_dir=Path.home() / ".cache" / "starlight-bench")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            evaluation.loss_fn(net(x[i : i + 128]), y[i : i + 128]).backward()
            opt.step()
    net.eval()
    xs, ys = ours.fixed_subset(x, y, subset, 0)
    return net, xs, ys


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--hvps", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--dense", action="store_true", help="also the dense Hessian's spectrum (slow: one backward per parameter)")
    ap.add_argument("--plane-width", type=int, default=None, help="the recipe's width unless given (256 for the MLP)")
    ap.add_argument("--plane-recipe", default=recipes.DEFAULT_RECIPE,
                    help="e.g. mnist1d-cnn (BatchNorm; use --resolution 5)")
    ap.add_argument("--resolution", type=int, default=21)
    ap.add_argument("--plane-epochs", type=int, default=0, help="train the plane's three MLPs this many epochs first")
    ap.add_argument("--only", choices=("sharpness", "plane"))
    args = ap.parse_args()
    if args.only != "sharpness":
        bench_plane(args)
    if args.only == "plane":
        return
    net, x, y = trained_mlp(args.width, args.subset)
    dim = sum(p.numel() for p in net.parameters())
    print(f"MNIST-1D MLP width {args.width}: {dim:,} parameters, {len(x)} samples, torch threads {torch.get_num_threads()}")

    times: dict[str, list[float]] = {k: [] for k in ("trace_ref", "trace_ours", "eig_ref", "eig_ours", "hvp_ref", "hvp_ours")}
    values: dict[str, float | int] = {}
    for _ in range(args.repeats):  # interleaved: every variant once per round
        t, tr_ref = timed(lambda: hutchinson_list(ListHessian(net, x, y), args.probes, 0))
        times["trace_ref"].append(t)
        t, tr = timed(lambda: ours.hutchinson(ours.HessianOperator(net, x, y), dim, args.probes, seed=0))
        times["trace_ours"].append(t)
        values.update(trace_ref=tr_ref, trace_ours=tr.mean)

        ref = ListHessian(net, x, y)
        t, lam_ref = timed(lambda: power_top(ref, args.top_k, 1000, 1e-4, 0))
        times["eig_ref"].append(t)
        op = ours.HessianOperator(net, x, y)
        t, eig = timed(lambda: ours.lanczos_top(op, dim, args.top_k, 1000, 1e-4, seed=0))
        times["eig_ours"].append(t)
        values.update(eig_ref=lam_ref, eig_ours=eig.values, hvps_ref=ref.products, hvps_ours=eig.iterations)

        ref = ListHessian(net, x, y)
        vs = [[torch.randn(p.shape) for p in ref.params] for _ in range(args.hvps)]
        t, _ = timed(lambda: [ref.hvp(v) for v in vs])
        times["hvp_ref"].append(t)
        op = ours.HessianOperator(net, x, y)
        flat = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in vs])
        t, _ = timed(lambda: [op(v) for v in flat])
        times["hvp_ours"].append(t)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"trace, {args.probes} probes (same vectors): reference {med['trace_ref']:.3f} s, ours {med['trace_ours']:.3f} s, "
          f"{med['trace_ref'] / med['trace_ours']:.2f}x; traces {values['trace_ref']:.6g} vs {values['trace_ours']:.6g} "
          f"(relative difference {abs(values['trace_ref'] - values['trace_ours']) / abs(values['trace_ref']):.1e})")
    if args.dense:  # the truth both are judged by
        h = torch.autograd.functional.hessian(lambda p: ours.HessianOperator(net, x, y).loss(p, x, y),
                                              ours.HessianOperator(net, x, y).theta).double()
        truth = torch.linalg.eigvalsh(h).flip(0)[: args.top_k].tolist()
        print("dense eigvalsh: " + ", ".join(f"{v:.7g}" for v in truth))
    print(f"top {args.top_k} eigenvalue(s) to 1e-4: power iteration with deflation {med['eig_ref']:.3f} s "
          f"({values['hvps_ref']} products), Lanczos {med['eig_ours']:.3f} s ({values['hvps_ours']} products), "
          f"{med['eig_ref'] / med['eig_ours']:.2f}x; power {', '.join(f'{v:.7g}' for v in values['eig_ref'])}; "
          f"Lanczos {', '.join(f'{v:.7g}' for v in values['eig_ours'])}")
    print(f"{args.hvps} single products: double backward through a retained graph {med['hvp_ref']:.3f} s, "
          f"the flat-vector operator {med['hvp_ours']:.3f} s, {med['hvp_ref'] / med['hvp_ours']:.2f}x")
    print(f"({args.repeats} interleaved repeats, medians)")


# --- planes -------------------------------------------------------------------------------------------


def update_bn(model, calibration, batch_size: int) -> None:
    """swa_utils.update_bn's recipe: statistics reset, a cumulative average over the calibration batches
    (near-equal ones, as starlight takes them) in train mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for chunk in torch.tensor_split(calibration, -(-len(calibration) // batch_size)):
            model(chunk)
    model.eval()


def plain_plane(net, basis, points, splits, calibration=None, batch_size: int = 4096) -> list[dict]:
    """A deep copy per point, the point's state loaded (BatchNorm re-estimated where there is
    `calibration`), each split evaluated in one batch."""
    out = []
    for x, y in points:
        model = copy.deepcopy(net)
        state = dict(model.state_dict())
        state.update(basis.point(x, y))
        model.load_state_dict(state)
        if calibration is not None:
            update_bn(model, calibration, batch_size)
        model.eval()
        row = {}
        with torch.no_grad():
            for split, (xs, ys) in splits.items():
                logits = model(xs)
                row[split] = (torch.nn.functional.cross_entropy(logits, ys).item(),
                              100.0 * (logits.argmax(1) == ys).sum().item() / len(ys))
        out.append(row)
    return out


def walking_plane(net, basis, xs_axis, ys_axis, splits, calibration=None, batch_size: int = 4096) -> list[dict]:
    """loss-landscapes' planar_interpolation walk: start at the grid's corner, add the x step to every
    parameter in place along a row, then step y and walk back to the row's start (loss-landscapes does not
    re-estimate BatchNorm; with `calibration` this walk does, so that it computes what ours does)."""
    model = copy.deepcopy(net).eval()
    params = model.state_dict()  # parameters and BatchNorm's statistics, sharing the model's storage
    dx = xs_axis[1] - xs_axis[0]
    dy = ys_axis[1] - ys_axis[0]
    out = []
    with torch.no_grad():
        start = basis.point(xs_axis[0], ys_axis[0])
        for k in basis.keys:
            params[k].copy_(start[k])
        for _ in ys_axis:
            for _ in xs_axis:
                if calibration is not None:
                    update_bn(model, calibration, batch_size)
                row = {}
                for split, (xs, ys) in splits.items():
                    logits = model(xs)
                    row[split] = (torch.nn.functional.cross_entropy(logits, ys).item(),
                                  100.0 * (logits.argmax(1) == ys).sum().item() / len(ys))
                out.append(row)
                for k, e in zip(basis.keys, basis.e1):
                    params[k].add_(e, alpha=dx)
            for k, e1, e2 in zip(basis.keys, basis.e1, basis.e2):
                params[k].add_(e1, alpha=-dx * len(xs_axis)).add_(e2, alpha=dy)
    return out


def bench_plane(args) -> None:
    config = recipes.resolve(args.plane_recipe, width=args.plane_width)
    cache = Path.home() / ".cache" / "starlight-bench"
    splits = {s: data.load(config["dataset"], s, cache_dir=cache) for s in ("train", "test")}
    nets = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        net = models.create(config["arch"], **config["arch_kwargs"])
        x, y = splits["train"]
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(args.plane_epochs):  # trained solutions: realistic losses to compare (the cost is the same)
            for i in range(0, len(x), 128):
                opt.zero_grad()
                evaluation.loss_fn(net(x[i : i + 128]), y[i : i + 128]).backward()
                opt.step()
        nets.append(net.eval())
    bn = evaluation.has_batchnorm(nets[0])
    calibration = splits["train"][0] if bn else None  # --bn-calibration full
    batch = 4096  # PlaneSpec's batch_size
    basis = planes.three_point_basis(*(n.state_dict() for n in nets))
    xs, ys = planes.grid_axes(basis, args.resolution, 0.2)
    points = [(x, y) for y in ys for x in xs]
    others = {k: v for k, v in nets[0].state_dict().items() if not v.is_floating_point()}
    def ours(general: bool):
        """general: for an MLP, the Linear/ReLU path off (every point's weights through the whole network);
        with BatchNorm, as before the cache-sized rows and streamed re-estimation (1,024-row chunks,
        PyTorch's train-mode kernel)."""
        ev = planes.PlaneEvaluator(copy.deepcopy(nets[0]), torch.device("cpu"), splits, calibration, batch)
        assert (ev.stack is None) == bn, "MLPs without BatchNorm take the Linear/ReLU path"
        streamed = interpolation.STREAM_CALIBRATION
        if general and bn:
            ev.rows, interpolation.STREAM_CALIBRATION = min(batch, 1024), False
        elif general:
            ev.stack = None
        try:
            return planes.evaluate_grid(ev, basis, others, xs, ys)
        finally:
            interpolation.STREAM_CALIBRATION = streamed

    variants = {"plain": lambda: plain_plane(nets[0], basis, points, splits, calibration, batch),
                "walk": lambda: walking_plane(nets[0], basis, xs, ys, splits, calibration, batch),
                "general": lambda: ours(True), "ours": lambda: ours(False)}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    out: dict[str, object] = {}
    loads = []
    for r in range(args.repeats):  # interleaved, the order rotated every round
        names = list(variants)
        for name in names[r % len(names):] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            out[name] = variants[name]()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
        loads.append(os.getloadavg()[0])
    plain, walk, grid, general = out["plain"], out["walk"], out["ours"], out["general"]
    flat = [v for row in grid["train"]["loss"] for v in row]
    worst = max(abs(a - b["train"][0]) / abs(b["train"][0]) for a, b in zip(flat, plain))
    worst_walk = max(abs(a - b["train"][0]) / abs(b["train"][0]) for a, b in zip(flat, walk))
    acc_equal = all(a == b["train"][1] for a, b in zip([v for r in grid["train"]["acc"] for v in r], plain))
    worst_general = max(abs(a - b) / abs(b) for split in splits
                        for ra, rb in zip(grid[split]["loss"], general[split]["loss"]) for a, b in zip(ra, rb))
    acc_general = all(grid[sp]["acc"] == general[sp]["acc"] for sp in splits)
    print(f"plane {args.resolution}x{args.resolution} through three {args.plane_recipe} (width "
          f"{config['arch_kwargs'].get('width')}, BatchNorm re-estimated per point: {bn}), "
          f"train and test, torch threads {torch.get_num_threads()}, load average {min(loads):.1f}-{max(loads):.1f}:")
    for label, times in (("wall", wall), ("CPU", cpu)):
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  {label}: deep copy per point {med['plain']:.3f} s ({med['plain'] / med['ours']:.2f}x ours), "
              f"loss-landscapes walk {med['walk']:.3f} s ({med['walk'] / med['ours']:.2f}x), ours as before "
              f"{med['general']:.3f} s ({med['general'] / med['ours']:.2f}x), "
              f"ours {med['ours']:.3f} s")
        rounds = {k: ", ".join(f"{a / b:.2f}" for a, b in zip(times[k], times["ours"])) for k in ("plain", "walk")}
        print(f"    per round, deep copy / ours: {rounds['plain']}; walk / ours: {rounds['walk']}")
    train = [v for row in grid["train"]["loss"] for v in row]
    print(f"  train loss over the grid {min(train):.4g} to {max(train):.4g} ({args.plane_epochs} training epochs)")
    print(f"  train loss: largest relative difference {worst:.1e} to the deep-copy loop, {worst_walk:.1e} to the walk "
          f"(its accumulated steps); accuracies equal to the deep-copy loop: {acc_equal}")
    print(f"  ours vs ours as before: largest relative loss difference {worst_general:.1e} (train and test), "
          f"accuracies equal: {acc_general}")

if __name__ == "__main__":
    main()
