"""Datasets as evaluation-ready tensors: `load(name, split, data_dir=None) -> (x, y)`.

Everything fits in memory and is held as tensors (on the training device during training): the
small datasets this project uses gain nothing from DataLoader worker processes, only start-up cost.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from starcli import settings
from starcli.errors import StarlightError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int
    input_size: int  # features per channel, what an MLP flattens
    shape: tuple[int, ...]  # one sample's shape
    augmentation: str  # the training augmentation the paper's recipes use on it
    embedded: bool  # generated or bundled: needs no --data-dir
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # "classification": int64 labels, cross-entropy. "regression": float targets of num_classes outputs,
    # mean squared error, and R² (%) where classification reports accuracy (see evaluation.loss_fn).
    task: str = "classification"

    @property
    def normalisation(self) -> str:
        """How inputs were normalised, recorded with every solution trained on them."""
        if self.name == "mnist1d":
            return "standardised with the training split's global mean and std"
        if self.name == "digits":
            return "pixel/16 mapped to [-1, 1]"
        if self.name == "linreg":
            return "synthetic: standard normal inputs, targets as generated (not normalised)"
        return f"pixel/255, then per-channel mean {list(self.mean)} and std {list(self.std)}"

LINREG_INPUTS, LINREG_OUTPUTS, LINREG_TRAIN, LINREG_TEST = 8, 1, 2000, 1000

DATASETS = {
    "mnist1d": DatasetInfo("mnist1d", 10, 1, 40, (40,), "none", True),
    "digits": DatasetInfo("digits", 10, 1, 64, (1, 8, 8), "none", True),
    "linreg": DatasetInfo("linreg", LINREG_OUTPUTS, 1, LINREG_INPUTS, (LINREG_INPUTS,), "none", True, task="regression"),
    "mnist": DatasetInfo("mnist", 10, 1, 784, (1, 28, 28), "none", False, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 784, (1, 28, 28), "none", False, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 1024, (3, 32, 32), "flip-crop", False, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 1024, (3, 32, 32), "flip-crop", False, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
}

_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise StarlightError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    cache_dir: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs (normalised, un-augmented, shaped as the models expect) and int64 labels, on the CPU.

    `cache_dir` keeps generated datasets (MNIST-1D) between processes; None generates them afresh.
    """
    meta = info(name)
    if split not in SPLITS:
        raise StarlightError(f"unknown split {split!r}; use train or test")
    if name == "mnist1d":
        return _mnist1d(split, cache_dir)
    if name == "digits":
        return _digits(split)
    if name == "linreg":
        return _linreg(split)
    return _torchvision(meta, split, data_dir, download)


def _mnist1d(split: str, cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    # Generated procedurally by the mnist1d package (seeded, ~1 s), then cached: never downloaded.
    cache = cache_dir / "mnist1d.npz" if cache_dir is not None else None
    if cache is None or not cache.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        x, xt = d["x"].astype(np.float32), d["x_test"].astype(np.float32)
        mean, std = x.mean(), x.std()
        arrays = {"x": (x - mean) / std, "y": d["y"], "x_test": (xt - mean) / std, "y_test": d["y_test"]}
        if cache is None:
            return _mnist1d_split(arrays, split)
        _write_cache(cache, arrays)
    try:
        with np.load(cache) as d:
            return _mnist1d_split(d, split)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError) as e:
        # A truncated or foreign cache (a killed writer of an old version, a full disk): say which file.
        raise StarlightError(f"the dataset cache {cache} is damaged ({e}); delete it and rerun to regenerate it") from None


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write, fsync, rename into place, fsync the folder: only a whole cache ever bears the cache's name
    (the one a later run trusts), and the temp file goes on any failure (a full disk mid-write)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, cache)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(cache.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mnist1d_split(arrays, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (arrays["x"], arrays["y"]) if split == "train" else (arrays["x_test"], arrays["y_test"])
    return torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(np.asarray(y).astype(np.int64))


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0 - 0.5) / 0.5
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return torch.from_numpy(x.reshape(-1, 1, 8, 8)), torch.from_numpy(y.astype(np.int64))


def _linreg(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's toy task for two-layer linear networks: y = a·x + 0.1·noise, x ~ N(0, I_8).

    Generated from a fixed seed on every call (no file, no download): 2000 train and 1000 test samples.
    The target map a is a fixed random vector (Var(y) ≈ 0.8 for this draw): predicting the mean scores
    MSE ≈ 0.8 and R² 0; the noise floor is MSE 0.01.
    """
    g = torch.Generator().manual_seed(2403_07968)  # the paper's arXiv id
    a = torch.randn(LINREG_INPUTS, LINREG_OUTPUTS, generator=g) / LINREG_INPUTS**0.5
    x = torch.randn(LINREG_TRAIN + LINREG_TEST, LINREG_INPUTS, generator=g)
    y = x @ a + 0.1 * torch.randn(len(x), LINREG_OUTPUTS, generator=g)
    part = slice(0, LINREG_TRAIN) if split == "train" else slice(LINREG_TRAIN, None)
    return x[part].contiguous(), y[part].contiguous()


def _torchvision(meta: DatasetInfo, split: str, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    root = settings.data_dir(data_dir)
    if root is None:
        raise StarlightError(
            f"dataset {meta.name} is read from a data folder: pass --data-dir DIR or set STARLIGHT_DATA_DIR"
            " (add --download to fetch it there)"
        )
    cls = getattr(torchvision.datasets, _TORCHVISION[meta.name])
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except RuntimeError:
        raise StarlightError(
            f"dataset {meta.name} not found under {root} (torchvision's {cls.__name__} layout);"
            " pass --download to fetch it, or point --data-dir at the folder that holds it"
        ) from None
    x = torch.as_tensor(np.asarray(ds.data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # MNIST is N×H×W, CIFAR N×H×W×C
    return normalise(x, meta), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def normalise(x_uint8: torch.Tensor, meta: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    return ((x_uint8.float() / 255.0) - mean) / std


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation on a whole batch at once, on its own device.

    `flip-crop` is the paper's CIFAR augmentation: random horizontal flip, then a random 32×32 crop of
    the image zero-padded by 4 pixels. The random draws come from `generator` (CPU), so a seed fixes them.
    """
    if kind == "none":
        return x
    return apply_augmentation(x, draw_augmentation(kind, [len(x)], generator, x.device)[0])


AUGMENT_PAD = 4


def draw_augmentation(kind: str, sizes: list[int], generator: torch.Generator, device: torch.device) -> list:
    """The random draws of `augment` for batches of `sizes`, in the order `augment` would make them
    batch after batch (so the values are the same), drawn on the CPU and uploaded in one copy: a GPU
    step then waits on no host-to-device transfer. One entry per batch (None for `none`)."""
    if kind == "none":
        return [None] * len(sizes)
    if kind != "flip-crop":
        raise StarlightError(f"unknown augmentation {kind!r}; use none or flip-crop")
    per_batch = []
    for n in sizes:
        flip = (torch.rand(n, generator=generator) < 0.5).long()
        dx = torch.randint(0, 2 * AUGMENT_PAD + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * AUGMENT_PAD + 1, (n,), generator=generator)
        per_batch.append(torch.stack([flip, dx, dy]))
    uploaded = torch.cat(per_batch, dim=1)
    if torch.device(device).type == "cuda":
        uploaded = uploaded.pin_memory()  # a pinned copy does not block the host
    uploaded = uploaded.to(device, non_blocking=True)
    return list(uploaded.split(sizes, dim=1))


def apply_augmentation(x: torch.Tensor, draws) -> torch.Tensor:
    """flip-crop of one batch with its draws from `draw_augmentation` (already on x's device)."""
    if draws is None:
        return x
    n, _, h, w = x.shape
    flip, dx, dy = draws[0].bool(), draws[1], draws[2]
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    pad = AUGMENT_PAD
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w)).view(n, 1, 1, w)
    c = x.shape[1]
    return padded.gather(2, rows.expand(n, c, h, padded.shape[3])).gather(3, cols.expand(n, c, h, w))


def available(data_dir=None) -> dict[str, str]:
    """For `doctor`: which datasets can be loaded here, and why not."""
    out = {}
    root = settings.data_dir(data_dir)
    for name, meta in DATASETS.items():
        if meta.embedded:
            out[name] = "embedded"
        elif root is None:
            out[name] = "needs --data-dir"
        else:
            folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}.get(name, _TORCHVISION[name])
            out[name] = f"found in {root}" if (root / folder).exists() else f"missing under {root}"
    return out


@dataclass
class Split:
    """A split as tensors on the training device."""

    x: torch.Tensor
    y: torch.Tensor


_SPLIT_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def load_split(dataset: str, split: str, device: torch.device, data_dir=None, download=False, cache_dir=None) -> Split:
    """A split as tensors on `device`, loaded once per process and reused by every seed."""
    key = (dataset, split, str(device), str(data_dir), str(cache_dir))
    if key not in _SPLIT_CACHE:
        x, y = load(dataset, split, data_dir=data_dir, download=download, cache_dir=cache_dir)
        _SPLIT_CACHE[key] = (x.to(device), y.to(device))
    return Split(*_SPLIT_CACHE[key])
