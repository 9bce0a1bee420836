"""Sharpness of a network at its weights: the top Hessian eigenvalues of its loss and the Hessian's trace,
from Hessian-vector products alone (the Hessian itself is never formed).

- The loss is the mean training loss (`evaluation.loss_fn`) over one fixed data subset, with the network
  in eval mode: BatchNorm uses its stored statistics, so the loss is a fixed function of the weights
  (in train mode every product would also move the statistics, and the "Hessian" would not be symmetric).
- Hessian-vector products are double backward through the gradient's retained graph, on the weights
  as one flat vector, several in one batched backward where they are independent (the trace's probes).
- Top-k eigenvalues: Lanczos with full reorthogonalisation. Each product enlarges a Krylov space, and
  the Ritz values of that space converge to the extreme eigenvalues far faster than power iteration
  with deflation (which spends a whole run per eigenvalue). Convergence is measured, not assumed: the
  residual ‖H u − θ u‖ of each of the k Ritz pairs is |β_m s_m| (Golub & Van Loan §10.1.4), and every
  one must fall below `tol`·|θ|; otherwise `NotConverged`, and the caller stores nothing.
- Trace: Hutchinson's estimator, tr H = E[vᵀ H v] for Rademacher v, from a fixed seed, reported with its
  standard error and a 95% t-interval over the probes (the probes are independent draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from . import evaluation, evidence

# Probes per batched backward: several products at once amortise the per-pass overhead; the memory is
# one backward's times this.
PROBE_BLOCK = 16
# The fixed subset: drawn with this seed offset by the user's seed (in the key), on the CPU so that the
# same seed gives the same samples on every device.
SUBSET_SEED = 0


class NotConverged(Exception):
    """Lanczos did not reach the tolerance within its iteration limit; the message says by how much."""


@dataclass(frozen=True)
class Eigen:
    values: list[float]  # the k largest eigenvalues, largest first
    residuals: list[float]  # ‖H u − θ u‖ / |θ| of each
    iterations: int  # Hessian-vector products spent


@dataclass(frozen=True)
class Trace:
    mean: float
    se: float  # standard error of the mean over probes
    ci95: tuple[float, float]  # t-interval over the probes
    probes: int


def fixed_subset(x: torch.Tensor, y: torch.Tensor, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` samples drawn without replacement from a generator seeded with `seed` (all of them when
    `size` >= len(x)), in a fixed order, the same on every device."""
    if size >= len(x):
        return x, y
    g = torch.Generator().manual_seed(SUBSET_SEED + seed)
    idx = torch.randperm(len(x), generator=g)[:size].to(x.device)
    return x[idx], y[idx]


class HessianOperator:
    """v ↦ H v for the loss of `net` on (x, y), with the floating parameters as one flat vector.

    Buffers (BatchNorm statistics) are held fixed (eval mode). Each product is a double backward: the
    gradient is built once with `create_graph=True` and every product differentiates ⟨∇L, v⟩ again
    through that retained graph; a block of products (the trace's probes) is one batched backward
    (`is_grads_batched`, a vmap over the vectors). Measured on the MNIST-1D MLP on one CPU thread this is
    3.7× faster per product than forward-over-reverse `jvp(grad(L))`, which repeats the forward pass
    every time; the batched block did not pay there (0.84× one product at a time, within the machine's
    noise), and is kept for devices with more parallelism than one core (benchmarks/bench_landscape.py). When the subset is larger than `batch_size` the graphs are not
    retained: each product rebuilds each chunk's gradient (memory one chunk's) and sums the chunks'
    products weighted by their share.
    """

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = evaluation.EVAL_BATCH):
        self.net = net.eval()
        self.names = [n for n, _ in net.named_parameters()]
        self.params = [p.detach().requires_grad_(True) for _, p in net.named_parameters()]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.buffers = {n: b for n, b in net.named_buffers()}
        self.chunks = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        self.n = len(x)
        self.dim = self.theta.numel()
        self.products = 0  # Hessian-vector products computed (a block counts each)
        self._retained = self._gradient(*self.chunks[0]) if len(self.chunks) == 1 else None

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss at the flat weights `flat` (differentiable in them): the reference tests' form."""
        out = functional_call(self.net, (self.unflatten(flat), self.buffers), (x,))
        return evaluation.loss_fn(out.float(), y)

    def _gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            params = dict(zip(self.names, self.params))
            out = functional_call(self.net, (params, self.buffers), (x,))
            loss = evaluation.loss_fn(out.float(), y)
            return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, self.params, create_graph=True)])

    def _product(self, flat_grad: torch.Tensor, v: torch.Tensor, block: bool, retain: bool) -> torch.Tensor:
        with torch.enable_grad():
            parts = torch.autograd.grad(flat_grad, self.params, grad_outputs=v, retain_graph=retain, is_grads_batched=block)
        return torch.cat([p.reshape(len(v), -1) if block else p.reshape(-1) for p in parts], dim=-1)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """H v for one vector (dim,) or for a block of vectors (b, dim), one batched backward."""
        block = v.dim() == 2
        self.products += len(v) if block else 1
        if self._retained is not None:
            return self._product(self._retained, v, block, retain=True)
        total = None
        for x, y in self.chunks:
            part = self._product(self._gradient(x, y), v, block, retain=False) * (len(x) / self.n)
            total = part if total is None else total + part
        return total

    def loss_value(self) -> float:
        with torch.no_grad():
            return sum(self.loss(self.theta, x, y).item() * len(x) for x, y in self.chunks) / self.n


def lanczos_top(op: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int, max_iter: int, tol: float,
                seed: int = 0, device: torch.device | str = "cpu", dtype=torch.float32) -> Eigen:
    """The k largest eigenvalues of the symmetric operator `op` on R^dim by Lanczos with full
    reorthogonalisation, checked every few products; `NotConverged` when `max_iter` products do not get
    every relative residual below `tol`."""
    if k > dim:
        raise ValueError(f"asked for {k} eigenvalues of a {dim}-dimensional Hessian")
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    q = q / q.norm()
    m_max = min(max_iter, dim)
    basis = torch.empty(m_max, dim, device=device, dtype=dtype)
    alphas: list[float] = []
    betas: list[float] = []
    best = (float("inf"), [], [])
    for j in range(m_max):
        basis[j] = q
        w = op(q)
        alpha = torch.dot(w, q).item()
        # Full reorthogonalisation, twice ("twice is enough", Parlett): without it the Krylov vectors
        # lose orthogonality as Ritz values converge and copies of the top eigenvalue appear.
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = w.norm().item()
        alphas.append(alpha)
        exhausted = beta <= 1e-10 * max(1.0, abs(alpha))  # an invariant subspace: the Ritz values are exact
        if j + 1 >= k and (exhausted or j + 1 == m_max or (j + 1) % 5 == 0):
            values, residuals = _ritz(alphas, betas, beta, k)
            worst = 0.0 if exhausted else max(residuals)
            if worst < best[0]:
                best = (worst, values, residuals)
            if worst <= tol:
                return Eigen(values, [0.0] * k if exhausted else residuals, j + 1)
        if exhausted:
            break
        betas.append(beta)
        q = w / beta
    worst, values, _ = best
    raise NotConverged(
        f"the top {k} Hessian eigenvalue(s) did not converge in {m_max} Hessian-vector products "
        f"(relative residual {worst:.2g} > tolerance {tol:g})"
    )


def _ritz(alphas: list[float], betas: list[float], beta_next: float, k: int) -> tuple[list[float], list[float]]:
    """The k largest Ritz values of the tridiagonal T (in float64) and their relative residuals."""
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(t)
    top = torch.argsort(evals, descending=True)[:k]
    values = evals[top].tolist()
    residuals = [abs(beta_next * evecs[-1, i].item()) / max(abs(v), 1e-30) for i, v in zip(top.tolist(), values)]
    return values, residuals


def hutchinson(op: Callable[[torch.Tensor], torch.Tensor], dim: int, probes: int, seed: int = 0,
               device: torch.device | str = "cpu", dtype=torch.float32, block: int = PROBE_BLOCK) -> Trace:
    """Hutchinson's estimate of tr H over `probes` Rademacher vectors drawn from `seed` (on the CPU, so
    every device draws the same), `block` products per batched backward."""
    if probes < 2:
        raise ValueError("the trace needs at least 2 probes for its standard error")
    g = torch.Generator().manual_seed(seed)
    samples: list[torch.Tensor] = []
    for start in range(0, probes, block):
        n = min(block, probes - start)
        v = (torch.randint(0, 2, (n, dim), generator=g) * 2 - 1).to(device=device, dtype=dtype)
        samples.append((v * op(v)).sum(1).double().cpu())
    values = torch.cat(samples)
    mean = values.mean().item()
    sd = values.std(unbiased=True).item()
    se = sd / math.sqrt(probes)
    interval = evidence.t_interval(values.tolist())  # the probes are independent draws: the t-interval
    if interval is None:
        raise ValueError("the Hessian's quadratic forms are not finite (a diverged network?)")
    lo, hi = interval
    return Trace(mean, se, (lo, hi), probes)


def measure(net: nn.Module, x: torch.Tensor, y: torch.Tensor, top_k: int, probes: int, max_iter: int, tol: float,
            seed: int = 0, batch_size: int = evaluation.EVAL_BATCH) -> dict[str, Any]:
    """The sharpness record of `net` on (x, y): loss, top-k eigenvalues, and the trace (when probes > 0)."""
    op = HessianOperator(net, x, y, batch_size)
    dev, dtype = op.theta.device, op.theta.dtype
    eig = lanczos_top(op, op.dim, top_k, max_iter, tol, seed=seed, device=dev, dtype=dtype)
    out: dict[str, Any] = {
        "loss": op.loss_value(),
        "parameters": op.dim,
        "eigenvalues": eig.values,
        "residuals": eig.residuals,
        "lanczos_products": eig.iterations,
    }
    if probes:
        tr = hutchinson(op, op.dim, probes, seed=seed, device=dev, dtype=dtype)
        out["trace"] = {"mean": tr.mean, "se": tr.se, "ci95": list(tr.ci95), "probes": tr.probes}
    return out
