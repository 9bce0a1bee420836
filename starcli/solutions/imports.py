"""`starlight register`: import an outside checkpoint as an `external` solution.

`.pt`/`.pth` files are read only with `torch.load(weights_only=True)`, which refuses arbitrary pickled
objects without executing them; the weights are then re-saved as safetensors in the store.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from starcli import models
from starcli.engine import data, devices, evaluation
from starcli.engine.data import load_split
from starcli.errors import StarlightError, UsageError

from . import records


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise StarlightError(f"checkpoint file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            raise StarlightError(f"{path} is not a readable safetensors file: {e}") from None
    elif suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StarlightError(
                f"{path} is not a plain state dict that loads with weights_only=True (nothing in it was executed): "
                f"{_clip(first, 200)}"
            ) from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
            raise StarlightError(f"{path} holds no state dict (a dict of tensors, or one under 'state_dict')")
        state = obj
    else:
        raise StarlightError(f"{path}: unsupported checkpoint type {suffix or '(none)'}; use .safetensors, .pt or .pth")
    # Checkpoints saved from DataParallel / DistributedDataParallel prefix every key with `module.`.
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def prepare(
    path: str | Path,
    arch: str | None,
    dataset: str | None,
    arch_kwargs: dict[str, Any] | None = None,
    width: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> dict[str, Any]:
    """Everything `register` checks before it touches the registry: a Hugging Face / timm folder's
    config.json (model.safetensors + config.json name the architecture, its arguments, the dataset and the
    normalisation unless given here), the dataset, the complete arch_kwargs (built on the meta device),
    the file, finite weights, and a strict load. Returns what `register` needs."""
    from starcli.engine.config import check_arch

    from .bundles import HF_WEIGHTS, read_hf_config

    path = Path(path).expanduser().resolve()
    weights = path
    given_kwargs = dict(arch_kwargs or {})
    if path.is_dir():
        hf = read_hf_config(path)
        weights = path / HF_WEIGHTS
        arch = arch or hf["arch"]
        dataset = dataset or hf["dataset"]
        arch_kwargs = {**hf["arch_kwargs"], **given_kwargs}
        mean, std = mean or hf["mean"], std or hf["std"]
    if not arch or not dataset:
        raise UsageError("name the checkpoint's --arch and --dataset (only a Hugging Face / timm folder can say them itself)")
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
        raise UsageError("give --mean and --std together, one value per input channel each")
    if mean is not None and not all(math.isfinite(v) for v in [*mean, *std]) or std is not None and min(std) <= 0:
        raise UsageError(f"--mean must be finite and --std finite and > 0 (inputs are divided by it), got mean {list(mean)} std {list(std)}")
    if dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; available: {', '.join(data.DATASETS)}")
    meta = data.info(dataset)
    kwargs = dict(arch_kwargs or {})
    if width is not None:
        kwargs["width"] = width
    origins = {f"arch_kwargs.{k}": "--arch-kwargs" for k in given_kwargs} | ({"arch_kwargs.width": "--width"} if width is not None else {})
    # Complete, as every record is: the dataset's shape, then the architecture's own defaults (depth, ...).
    kwargs = models.complete_kwargs(arch, models.arch_kwargs_for(arch, meta, kwargs))
    check_arch(arch, kwargs, meta, origins | {"arch": "--arch"})
    state = read_state_dict(weights)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise StarlightError(f"{path.name} holds NaN or infinite weights (in {_preview(bad)}); a diverged checkpoint cannot be compared")
    # Sized on the meta device first: a small checkpoint whose config names huge dimensions is refused
    # here, before the network is allocated (it tried to allocate ~6 GB for a 52 KB folder).
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in models.create(arch, **kwargs).state_dict().items()}
    _check_fits(path, arch, kwargs, {k: tuple(v.shape) for k, v in state.items()}, expected)
    model = models.create(arch, **kwargs)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[-1])
        raise StarlightError(f"{path.name} does not fit {arch} {kwargs}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing keys {_preview(result.missing_keys)}")
        if result.unexpected_keys:
            parts.append(f"unexpected keys {_preview(result.unexpected_keys)}")
        raise StarlightError(f"{path.name} does not fit {arch} {kwargs}: {'; '.join(parts)}")
    return {"path": path, "weights": weights, "arch": arch, "dataset": dataset, "kwargs": kwargs, "model": model,
            "mean": mean, "std": std}


def _check_fits(path: Path, arch: str, kwargs: dict[str, Any], shapes: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """The checkpoint's tensors are exactly the network's (names and shapes), or one line saying how not."""
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        raise StarlightError(f"{path.name} does not fit {arch} {kwargs}: {'; '.join(parts)}")
    wrong = sorted(k for k in expected if shapes[k] != expected[k])
    if wrong:
        k = wrong[0]
        raise StarlightError(f"{path.name} does not fit {arch} {kwargs}: size mismatch for {k}: the checkpoint has "
                             f"{list(shapes[k])}, the network {list(expected[k])}")


def register(
    reg,
    path: str | Path,
    arch: str | None,
    dataset: str | None,
    arch_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    width: int | None = None,
    device: str = "auto",
    data_dir=None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    prepared: dict[str, Any] | None = None,
):
    """Load `path` strictly into `arch`, compute its metrics, register it; returns (solution, created).

    `path` may be a Hugging Face / timm folder (see `prepare`). `mean`/`std`, the input normalisation the
    checkpoint was trained with, are recorded in its config. `prepared` is `prepare(...)`'s result when the
    caller checked the request before opening the registry."""
    p = prepared or prepare(path, arch, dataset, arch_kwargs, width, mean, std)
    arch, dataset, kwargs, mean, std = p["arch"], p["dataset"], p["kwargs"], p["mean"], p["std"]
    dev = devices.resolve(device)
    model = p["model"].to(dev)
    splits = {s: load_split(dataset, s, dev, data_dir, False, records.dataset_cache(reg)) for s in data.SPLITS}
    metrics = evaluation.metrics(model, {s: (sp.x, sp.y) for s, sp in splits.items()})
    file_sha = hashlib.sha256(p["weights"].read_bytes()).hexdigest()
    tensors = model.state_dict()
    config = {"source": str(p["path"]), "source_sha256": file_sha, "arch": arch, "arch_kwargs": kwargs, "dataset": dataset}
    if mean is not None:
        config["input_normalisation"] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    # Keyed by content (the tensors, the network, the dataset), not by the file's path or the seed given:
    # the same weights registered twice, from anywhere, are one solution.
    identity = {"tensors_sha256": tensors_sha256(tensors), "arch": arch, "arch_kwargs": kwargs, "dataset": dataset}
    return records.register(
        reg, tensors, key=records.solution_key("external", identity, None), kind="external", arch=arch,
        arch_kwargs=kwargs, dataset=dataset, config=config, seed=seed, metrics=metrics, device=str(dev),
    )


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors themselves (names, dtypes, shapes and bytes), whatever file they came from."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def plausibility(metrics: dict[str, Any], dataset: str, mean=None, std=None) -> list[str]:
    """Warnings a person should read before trusting an imported checkpoint: a test accuracy near chance
    (wrong architecture variant, wrong label order, or another input normalisation), and a normalisation
    that differs from the one starlight feeds this dataset with."""
    meta = data.info(dataset)
    out = []
    if meta.task == "classification" and "test_acc" in metrics:
        chance = 100.0 / meta.num_classes
        if metrics["test_acc"] < 1.5 * chance:
            out.append(
                f"warning: test accuracy {metrics['test_acc']:.1f}% is near chance ({chance:.1f}%) for {dataset}: "
                "is this a trained model of this dataset, with the same labels and input normalisation?"
            )
    if mean is not None and meta.mean and (
        any(abs(a - b) > 1e-3 for a, b in zip(mean, meta.mean)) or any(abs(a - b) > 1e-3 for a, b in zip(std, meta.std))
    ):
        out.append(
            f"warning: the checkpoint was trained with mean {list(mean)} / std {list(std)}, but starlight feeds {dataset} "
            f"inputs {meta.normalisation}; "
            "its metrics here may be lower than its own"
        )
    return out


def _clip(text: str, n: int) -> str:
    """At most n characters, cut at a word boundary (torch's advice must not end mid-word)."""
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0].rstrip(" ,.;:") + " ..."


def _preview(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
