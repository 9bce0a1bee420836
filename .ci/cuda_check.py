"""A short check of the CUDA path on a GPU machine; prints one JSON report (about two minutes on an H100).

Devices, bf16 autocast and channels_last training, the local executor pinning worker processes to the
GPU, a star step and a barrier on cuda, then one-epoch timings of the paper's ResNet-18 on synthetic
CIFAR-shaped tensors (no download needed). Run from the repository root: `python .ci/cuda_check.py`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.getcwd())
HOME = tempfile.mkdtemp(prefix="starlight-cuda-")
os.environ["STARLIGHT_HOME"] = HOME
report: dict = {}


def section(name):
    def run(fn):
        start = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: done in {report['seconds'][name]}s", file=sys.stderr, flush=True)

    return run


def augment_few_syncs(x, kind, generator):
    """data.augment with its three per-step host-to-device copies made one non-blocking copy."""
    import torch

    if kind == "none":
        return x
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    draws = torch.stack([flip.long(), dx, dy]).to(x.device, non_blocking=True)
    flip, dx, dy = draws[0].bool(), draws[1], draws[2]
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w)).view(n, 1, 1, w)
    c = x.shape[1]
    return padded.gather(2, rows.expand(n, c, h, padded.shape[3])).gather(3, cols.expand(n, c, h, w))


def fit_fewer_syncs(config, seed, device, train):
    """training.fit without a host sync per step: the loss is summed on the GPU and checked per epoch."""
    import torch
    import torch.nn.functional as F

    from starcli import models
    from starcli.engine import loop

    torch.manual_seed(seed)
    model = loop.prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
    optimizer = loop.build_optimizer(model.parameters(), config)
    steps = len(loop.batches(len(train.x), config["batch_size"], loop.epoch_generator(seed, 0)))
    model.train()
    for epoch in range(config["epochs"]):
        g = loop.epoch_generator(seed, epoch)
        total = torch.zeros((), device=device)
        for i, idx in enumerate(loop.batches(len(train.x), config["batch_size"], g)):
            for group in optimizer.param_groups:
                group["lr"] = loop.lr_at(config, epoch * steps + i, steps)
            idx = idx.to(device, non_blocking=True)
            xb = augment_few_syncs(train.x[idx], config["augmentation"], g)
            with loop.autocast(device, config):
                loss = F.cross_entropy(model(xb), train.y[idx], label_smoothing=config["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        assert torch.isfinite(total)
    return model


if __name__ == "__main__":
    import torch

    from starcli.registry import open_registry
    from starcli import models
    from starcli.engine import data, devices, loop, recipes, training
    from starcli.errors import StarlightError
    from starcli.solutions import anchors as anchor_training
    from starcli.solutions import executors

    reg = open_registry(HOME)
    anchors: list[int] = []

    @section("devices")
    def _():
        out = {"torch": torch.__version__, "auto": devices.describe(devices.resolve("auto"))}
        for name in ("cuda:0", "cuda:7", "mps"):
            try:
                out[name] = str(devices.resolve(name))
            except StarlightError as e:
                out[name] = f"error: {e}"
        return out

    @section("train_bf16_channels_last")
    def _():
        dev = torch.device("cuda")
        cfg = recipes.resolve("cifar10-resnet18", width=16, epochs=2, overrides={"dataset": "digits", "precision": "bf16"})
        model = loop.prepare_model(models.create(cfg["arch"], **cfg["arch_kwargs"]), dev, cfg)
        conv = next(p for p in model.parameters() if p.ndim == 4)
        x = data.load_split("digits", "train", dev, cache_dir=reg.home / "datasets").x[:8]
        with loop.autocast(dev, cfg):
            logits_dtype = str(model(x).dtype)
        [o] = anchor_training.train(reg, cfg, [1], device="cuda")
        return {
            "channels_last": conv.is_contiguous(memory_format=torch.channels_last),
            "logits_dtype_under_autocast": logits_dtype,
            "data_device": str(x.device),
            "solution": {"id": o.solution.id, "device": o.solution.device, "metrics": o.solution.metrics},
        }

    @section("local_executor_two_workers_on_one_gpu")
    def _():
        cfg = recipes.resolve("mnist1d-mlp", width=64, epochs=3)
        outs = executors.train(reg, cfg, [1, 2, 3], executor="local", device="cuda", jobs=2)
        anchors.extend(o.solution.id for o in outs)
        again = executors.train(reg, cfg, [1, 2, 3], executor="local", device="auto")
        return {
            "slots": executors._pool_slots("cuda", 2),
            "solutions": [(o.solution.id, o.solution.seed, o.solution.device, o.solution.metrics["test_acc"]) for o in outs],
            "resubmitted_trained": [o.trained for o in again],
        }

    @section("star_and_barrier")
    def _():
        from starcli.solutions import barriers, stars

        sol, created = stars.build_star(reg, anchors[:2], epochs=2, device="cuda")
        result = barriers.measure(reg, star=sol.id, held_out=anchors[2:], points=5, device="cuda")
        return {"star": (sol.id, sol.device, sol.metrics), "created": created, "summary": result["summary"]}

    @section("resnet18_epoch_timings")
    def _():
        # The paper's recipe on 10240 synthetic CIFAR-shaped samples: one epoch = 80 steps of batch 128.
        dev = torch.device("cuda")
        g = torch.Generator().manual_seed(0)
        split = data.Split(torch.randn(10240, 3, 32, 32, generator=g).to(dev), torch.randint(0, 10, (10240,), generator=g).to(dev))
        out = {}
        for precision in ("fp32", "bf16"):
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                cfg = recipes.resolve("cifar10-resnet18", epochs=1, overrides={"precision": precision})
                training.fit(dict(cfg), 0, dev, data.Split(split.x[:1024], split.y[:1024]))  # warm-up
                torch.cuda.synchronize()
                start = time.perf_counter()
                training.fit(cfg, 1, dev, split)
                torch.cuda.synchronize()
                out[f"{precision}_cudnn_benchmark_{bench}_ms_per_step"] = round((time.perf_counter() - start) / 80 * 1000, 2)
        torch.backends.cudnn.benchmark = False
        cfg = recipes.resolve("cifar10-resnet18", epochs=1, overrides={"precision": "bf16"})
        for name, fit in (("bf16_no_augmentation", training.fit), ("bf16_fewer_syncs", fit_fewer_syncs)):
            c = dict(cfg, augmentation="none") if name == "bf16_no_augmentation" else cfg
            fit(c, 0, dev, data.Split(split.x[:1024], split.y[:1024]))
            torch.cuda.synchronize()
            start = time.perf_counter()
            fit(c, 1, dev, split)
            torch.cuda.synchronize()
            out[f"{name}_ms_per_step"] = round((time.perf_counter() - start) / 80 * 1000, 2)
        # The same model and optimizer with no host work between steps: the floor for the loop.
        model = loop.prepare_model(models.create(cfg["arch"], **cfg["arch_kwargs"]), dev, cfg)
        opt = loop.build_optimizer(model.parameters(), cfg)
        xb, yb = split.x[:128], split.y[:128]
        for i in range(90):
            if i == 10:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with loop.autocast(dev, cfg):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        out["bf16_compute_only_ms_per_step"] = round((time.perf_counter() - start) / 80 * 1000, 2)
        out["gpu"] = torch.cuda.get_device_name()
        return out

    reg.close()
    print(json.dumps(report, indent=1, default=str))
