"""Seeds trained stacked (`stacked.fit_stacked`) against one at a time (`training.fit`), on the CPU.

8 seeds of the default recipe (MNIST-1D, MLP 40 → 256 → 10, SGD nesterov, cosine) on the real MNIST-1D
training split, with the epochs cut to EPOCHS (default 40 of the recipe's 400: the time per epoch is
the same for every epoch, so the ratio does not depend on it). The two ways run alternately REPEATS
times, the order swapped each repeat; the table shows the median wall and CPU time of each, the
ratio of the medians (target ≥ 2), and whether every seed's weights agree byte for byte.

One thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)), as the project's CPU runs use:

    OMP_NUM_THREADS=1 python benchmarks/bench_stacked.py [--epochs 40] [--seeds 8] [--repeats 3] [--conv]

--conv adds a forward+backward timing of a small conv net, N separate convolutions against one
grouped convolution (groups=N, the way conv seeds would be stacked), and whole training steps of the
demo's CNN (mnist1d-cnn: conv1d–BatchNorm–ReLU × 4, max-pool, linear head; SGD nesterov with weight
decay; batch 128): N networks one after another against one network whose seeds' channels sit side by
side (grouped convolutions, one BatchNorm over all channels, which keeps per-seed statistics, a batched
head). It is timing only, to say whether stacking conv seeds can pay here: stacked training is not
implemented for conv nets (grouped kernels round differently, so it would need its own key).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import (
    data,  # noqa: E402
    recipes,
    stacked,
    training,
)


def state_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


def timed(run):
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_mlp(args, split: data.Split) -> bool:
    config = recipes.resolve("mnist1d-mlp", epochs=args.epochs)
    seeds = list(range(1, args.seeds + 1))
    device = torch.device("cpu")
    times = {"stacked": ([], []), "one at a time": ([], [])}
    identical = True
    for r in range(args.repeats):
        order = ["stacked", "one at a time"] if r % 2 == 0 else ["one at a time", "stacked"]
        results = {}
        for way in order:
            if way == "stacked":
                out, wall, cpu = timed(lambda: [run.model for run in stacked.fit_stacked(config, seeds, device, split)])
            else:
                out, wall, cpu = timed(lambda: [training.fit(config, s, device, split) for s in seeds])
            results[way] = out
            times[way][0].append(wall)
            times[way][1].append(cpu)
            print(f"  repeat {r + 1}: {way:<14} wall {wall:6.2f}s  cpu {cpu:6.2f}s", flush=True)
        same = all(state_bytes(a) == state_bytes(b) for a, b in zip(results["stacked"], results["one at a time"]))
        identical &= same
    med = {way: (statistics.median(w), statistics.median(c)) for way, (w, c) in times.items()}
    print(f"\n{args.seeds} seeds, mnist1d-mlp width 256, {args.epochs} epochs, {args.repeats} repeats (medians):")
    for way, (w, c) in med.items():
        print(f"  {way:<14} wall {w:6.2f}s  cpu {c:6.2f}s")
    print(
        f"  ratio (one at a time / stacked): wall {med['one at a time'][0] / med['stacked'][0]:.2f}x"
        f"  cpu {med['one at a time'][1] / med['stacked'][1]:.2f}x   target >= 2x"
    )
    print(f"  every seed bit-identical to training.fit: {identical}")
    return identical


def bench_demo_cnn(args) -> None:
    """Training steps of N demo CNNs (width 32, depth 3, kernel 5): one after another vs grouped."""
    import torch.nn as nn
    import torch.nn.functional as F

    from starcli import models

    n, b, width, depth, kernel, classes = args.seeds, 128, 32, 3, 5, 10
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, b, 40, generator=g)
    y = torch.randint(0, classes, (n, b), generator=g)
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(models.create("mnist1d_cnn", width=width, depth=depth, kernel=kernel))
    sgd = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizers = [torch.optim.SGD(net.parameters(), **sgd) for net in nets]

    def one_after_another():
        for i, (net, opt) in enumerate(zip(nets, optimizers)):
            loss = F.cross_entropy(net(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    # The same networks, seeds side by side: conv weights (n·out, in, k) with groups=n, BatchNorm over n·width.
    convs = [torch.cat([net.stem.conv.weight.detach() for net in nets])]
    convs += [torch.cat([net.blocks[j].conv.weight.detach() for net in nets]) for j in range(depth)]
    bns = [nn.BatchNorm1d(n * width) for _ in range(depth + 1)]
    head_w = torch.stack([net.head.weight.detach() for net in nets])  # (n, classes, width)
    head_b = torch.stack([net.head.bias.detach() for net in nets])
    params = [w.clone().requires_grad_() for w in convs] + [head_w.clone().requires_grad_(), head_b.clone().requires_grad_()]
    params += [p for bn in bns for p in bn.parameters()]
    stacked_opt = torch.optim.SGD(params, **sgd)

    def stacked_logits():
        h = x.transpose(0, 1)
        for w, bn in zip(params[: depth + 1], bns):
            h = F.relu(bn(F.conv1d(h, w, padding=kernel // 2, groups=n)))
        pooled = h.amax(2).view(b, n, width).transpose(0, 1)
        return torch.baddbmm(params[depth + 2].unsqueeze(1), pooled, params[depth + 1].transpose(1, 2))

    def stacked():
        logits = stacked_logits()  # (n, b, classes); seed i's samples are channel group i
        loss = sum(F.cross_entropy(logits[i], y[i]) for i in range(n))  # each seed's own mean loss
        stacked_opt.zero_grad(set_to_none=True)
        loss.backward()
        stacked_opt.step()

    with torch.no_grad():  # the same networks: equal outputs (to rounding) before any step
        assert torch.allclose(stacked_logits(), torch.stack([net(x[i]) for i, net in enumerate(nets)]), atol=1e-4)
    for fn in (one_after_another, stacked):  # warm-up
        fn()
    times: dict[str, list[float]] = {"one after another": [], "stacked": []}
    for _ in range(args.repeats):
        for label, fn in (("one after another", one_after_another), ("stacked", stacked)):
            _, _, cpu = timed(lambda fn=fn: [fn() for _ in range(10)])
            times[label].append(cpu / 10)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\ndemo CNN (mnist1d-cnn, width {width}, depth {depth}), {n} seeds, one training step each, batch {b} "
          f"(median cpu of {args.repeats}, load {os.getloadavg()[0]:.1f}):")
    print(f"  one after another {med['one after another'] * 1e3:7.1f} ms   grouped {med['stacked'] * 1e3:7.1f} ms"
          f"   ratio {med['one after another'] / med['stacked']:.2f}x   target >= 1.5x")


def bench_conv(args) -> None:
    """Forward+backward of a small CNN for N seeds: N calls against one grouped (groups=N) call."""
    import torch.nn.functional as F

    n, b = args.seeds, 128
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, b, 3, 32, 32, generator=g)
    w1 = torch.randn(n, 16, 3, 3, 3, generator=g).requires_grad_()
    w2 = torch.randn(n, 32, 16, 3, 3, generator=g).requires_grad_()

    def separate():
        for i in range(n):
            h = F.relu(F.conv2d(x[i], w1[i], padding=1))
            h = F.relu(F.conv2d(F.max_pool2d(h, 2), w2[i], padding=1))
            h.mean().backward()

    def grouped():
        xs = x.transpose(0, 1).reshape(b, n * 3, 32, 32)  # seeds' channels side by side
        h = F.relu(F.conv2d(xs, w1.reshape(n * 16, 3, 3, 3), padding=1, groups=n))
        h = F.relu(F.conv2d(F.max_pool2d(h, 2), w2.reshape(n * 32, 16, 3, 3), padding=1, groups=n))
        h.view(b, n, -1).mean((0, 2)).sum().backward()

    bench_demo_cnn(args)
    for fn in (separate, grouped):  # warm-up
        fn()
    best = {}
    for _ in range(args.repeats):
        for label, fn in (("separate", separate), ("grouped", grouped)):
            _, _, cpu = timed(lambda fn=fn: [fn() for _ in range(5)])
            best[label] = min(best.get(label, float("inf")), cpu / 5)
    print(f"\nsmall CNN (conv 3→16→32 on 32×32, batch {b}), {n} seeds, fwd+bwd per step (best cpu):")
    print(f"  separate {best['separate'] * 1e3:7.1f} ms   grouped {best['grouped'] * 1e3:7.1f} ms"
          f"   ratio {best['separate'] / best['grouped']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conv", action="store_true")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: OMP_NUM_THREADS is not 1; set it for comparable figures", file=sys.stderr)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as home:
        x, y = data.load("mnist1d", "train", cache_dir=Path(home) / "datasets")
    ok = bench_mlp(args, data.Split(x, y))
    if args.conv:
        bench_conv(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
