"""`starlight train` as a whole process against a plain PyTorch script doing the same training, on the CPU.

Two comparisons, each a fresh process per run, the variants alternated REPEATS times (order swapped each
repeat), medians of the wall time:

- `starlight train --seed 1-8` (stacked, resume files and history, registry, final metrics) against a
  plain script training the same 8 seeds one at a time, saving each final checkpoint (target ≥ 1.5×);
- `starlight train --seed 1` against a hand-written loop with the same I/O guarantees: a resume file
  (safetensors, fsync, rename, folder fsync) at most every 60 s and after the last epoch, the history
  appended a line per epoch, the final checkpoint, train and test accuracy (target ≤ 1.05×).

Default recipe (MNIST-1D, MLP 40 → 256 → 10, SGD nesterov, cosine), its epochs cut to EPOCHS. One thread:

    OMP_NUM_THREADS=1 python benchmarks/bench_train_io.py [--epochs 40] [--repeats 3] [--before DIR] [--malloc-default]

--before DIR also runs `starlight` from another checkout's tree (e.g. `git archive` of an earlier
commit), interleaved with the others: a before and an after against the same plain script.
--malloc-default also runs `starlight` with glibc's adaptive allocator (STARLIGHT_MALLOC=default: the
allocator policy, starcli/engine/allocator.py, left off), interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = r'''
import json, math, os, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import save

torch.set_num_threads(1)
cache, out, seeds, epochs, guarded = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
d = np.load(cache)
x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
mean, std = x.mean(), x.std()
x, xt, yt = (x - mean) / std, (torch.from_numpy(d["x_test"]) - mean) / std, torch.from_numpy(d["y_test"])
steps = math.ceil(len(x) / 128)


def durable(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


for seed in range(1, seeds + 1):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    folder = os.path.join(out, str(seed))
    os.makedirs(folder)
    last = time.monotonic()
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        total, right = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for i, idx in enumerate(torch.randperm(len(x), generator=g).split(128)):
            for group in opt.param_groups:
                group["lr"] = 0.025 * (1 + math.cos(math.pi * (epoch * steps + i) / (epochs * steps)))
            logits = net(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            right += (logits.argmax(1) == y[idx]).sum()
        loss_sum, right_sum = torch.stack([total, right]).tolist()
        if guarded:
            now = time.monotonic()
            if epoch + 1 == epochs or now - last >= 60:
                tensors = {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}
                for n, state in opt.state_dict()["state"].items():
                    tensors[f"optim.{n}"] = state["momentum_buffer"].contiguous()
                durable(os.path.join(folder, "last.safetensors"), save(tensors, metadata={"epoch": str(epoch + 1)}))
                last = now
            with open(os.path.join(folder, "history.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch + 1, "train_loss": loss_sum / steps, "train_acc": 100 * right_sum / len(x)}) + "\n")
    with torch.no_grad():
        acc = [(net(a).argmax(1) == b).float().mean().item() for a, b in ((x, y), (xt, yt))]
    durable(os.path.join(folder, "final.safetensors"), save({k: v.contiguous() for k, v in net.state_dict().items()}))
'''


def dataset_cache(scratch: Path) -> Path:
    home = scratch / "cache-home"
    env = dict(os.environ, STARLIGHT_HOME=str(home), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from starcli.engine import data; data.load('mnist1d', 'train', cache_dir=Path(sys.argv[1]))",
                    str(home / "datasets")], env=env, check=True, cwd=scratch)
    return home / "datasets" / "mnist1d.npz"


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another tree to run `starlight` from as well, interleaved")
    parser.add_argument("--malloc-default", action="store_true",
                        help="also run `starlight` with glibc's own allocator behaviour (STARLIGHT_MALLOC=default), interleaved")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-io-"))
    try:
        cache = dataset_cache(scratch)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        for name in ("STARLIGHT_RESUME_EVERY_S", "STARLIGHT_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            env.pop(name, None)
        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            folder = scratch / f"run{runs}"
            (folder / "datasets").mkdir(parents=True)
            shutil.copy(cache, folder / "datasets" / "mnist1d.npz")
            return folder

        def starlight(seeds: str, code: Path = ROOT, extra: dict[str, str] | None = None):
            def go() -> float:
                home = fresh()
                return timed([sys.executable, "-m", "starcli", "train", "--seed", seeds, "--epochs", str(args.epochs)],
                             dict(env, STARLIGHT_HOME=str(home), PYTHONPATH=str(code.resolve()), **(extra or {})), home)
            return go

        def plain(seeds: int, guarded: bool):
            def go() -> float:
                home = fresh()
                return timed([sys.executable, "-c", PLAIN, str(cache), str(home / "out"), str(seeds), str(args.epochs),
                              "1" if guarded else "0"], env, home)
            return go

        comparisons = {
            "8 seeds": {"starlight train --seed 1-8": starlight("1-8"), "plain, one seed at a time": plain(8, False)},
            "1 seed": {"starlight train --seed 1": starlight("1"), "plain, same I/O guarantees": plain(1, True)},
        }
        if args.before is not None:
            comparisons["8 seeds"]["before: --seed 1-8"] = starlight("1-8", args.before)
            comparisons["1 seed"]["before: --seed 1"] = starlight("1", args.before)
        if args.malloc_default:
            default = {"STARLIGHT_MALLOC": "default"}
            comparisons["8 seeds"]["malloc default: --seed 1-8"] = starlight("1-8", extra=default)
            comparisons["1 seed"]["malloc default: --seed 1"] = starlight("1", extra=default)
        times = {name: {way: [] for way in ways} for name, ways in comparisons.items()}
        for r in range(args.repeats):
            for name, ways in comparisons.items():
                order = list(ways) if r % 2 == 0 else list(reversed(ways))
                for way in order:
                    wall = ways[way]()
                    times[name][way].append(wall)
                    print(f"  repeat {r + 1}: {way:<28} wall {wall:6.2f}s", flush=True)
        print(f"\nmnist1d-mlp width 256, {args.epochs} epochs, {args.repeats} repeats (medians):")
        for name, ways in times.items():
            med = {way: statistics.median(walls) for way, walls in ways.items()}
            plain_way = next(way for way in med if way.startswith("plain"))
            for way, wall in med.items():
                ratios = "" if way == plain_way else f"  plain/this {med[plain_way] / wall:.2f}x, this/plain {wall / med[plain_way]:.2f}x"
                print(f"  {name}: {way:<28} {wall:6.2f}s{ratios}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
