"""Recipes: TOML files naming a dataset, an architecture and how to train it, resolved into one flat config.

The resolved config is what gets stored with every solution, and its hash (with the seed) is the key
that makes training idempotent. Lookup order for `--recipe NAME`: a path to a .toml file, then the
recipes shipped in the `recipes` package.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from starcli.errors import StarlightError, UsageError

DEFAULT_RECIPE = "mnist1d-mlp"

# Every key a resolved config has, with its default. Anything else in a recipe or --set is an error.
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "arch": None,
    "arch_kwargs": {},
    "epochs": 10,
    "batch_size": 128,
    "optimizer": "sgd",  # sgd | adam | adamw
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "cosine",  # cosine | constant | step
    "milestones": [],  # epochs at which `step` multiplies the lr by gamma
    "gamma": 0.1,
    "warmup_epochs": 0,
    "augmentation": None,  # none | flip-crop; None: the dataset's default
    "label_smoothing": 0.0,
    "precision": "fp32",  # fp32 | bf16 (autocast, CUDA only)
}
# Keys a resolved config has only when set (by a recipe, --set or the device policy, engine/precision.py):
# a config without them keeps the key it had before they existed.
OPTIONAL: dict[str, Any] = {"memory_format": "contiguous", "compile": "off"}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant", "step")


def available() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("starcli.recipes").iterdir() if p.name.endswith(".toml"))


def read(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """The recipe's name and its raw table."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise StarlightError(f"recipe file {path} does not exist")
        text, name = path.read_text(), path.stem
    else:
        res = resources.files("starcli.recipes") / f"{name_or_path}.toml"
        if not res.is_file():
            raise StarlightError(f"unknown recipe {name_or_path!r}; available: {', '.join(available())}, or a .toml path")
        text, name = res.read_text(), name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StarlightError(f"recipe {name_or_path} is not valid TOML: {e}") from None


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as TOML (numbers, booleans, lists), else as strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def resolve(
    recipe: str = DEFAULT_RECIPE,
    *,
    width: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    compile_step: bool = False,
) -> dict[str, Any]:
    """The complete training config: defaults < device policy < recipe < --set < the named flags.

    `compile_step` (--compile): compile the training step in torch.compile's default mode, unless the
    recipe or --set already names a mode (engine/compilation.py).

    `device` (a --device value) picks the precision policy's defaults (engine/precision.py): on CUDA a
    convolutional network trains in bf16 and channels_last unless the recipe or --set says otherwise;
    None or a CPU gives the config as it always was."""
    # Imported here: reading recipes and hashing configs stays free of torch (list, show, sweep listings).
    from starcli import models

    from . import compilation, data, precision

    name, table = read(recipe)
    config = copy.deepcopy(DEFAULTS)
    # Where each value came from, for the error messages: a recipe file, --set or a flag.
    origins: dict[str, str] = {}
    _merge(config, table, f"recipe {name}", origins)
    _merge(config, overrides or {}, "--set", origins)
    for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)):
        if value is not None:
            if origins.get(key) == "--set":
                _check_overridden(key, config[key])
            config[key] = value
            origins[key] = f"--{key.replace('_', '-')}"
    if width is not None:
        config["arch_kwargs"]["width"] = width
        origins["arch_kwargs.width"] = "--width"
    if compile_step and config.get("compile") in (None, False, "off"):
        config["compile"] = "default"
        origins["compile"] = "--compile"
    if not config["dataset"] or not config["arch"]:
        raise UsageError(f"recipe {name} must name a dataset and an arch")
    if not isinstance(config["dataset"], str) or config["dataset"] not in data.DATASETS:
        raise UsageError(
            f"unknown dataset {config['dataset']!r} (from {origins.get('dataset', f'recipe {name}')}); "
            f"available: {', '.join(data.DATASETS)}"
        )
    meta = data.info(config["dataset"])
    config["arch_kwargs"] = models.arch_kwargs_for(config["arch"], meta, config["arch_kwargs"])
    if config["augmentation"] is None:
        config["augmentation"] = meta.augmentation
    precision.apply_defaults(config, meta.shape, precision.device_type(device), explicit=set(origins))
    compilation.normalise(config)  # compile = false / "off" keys as eager
    config["recipe"] = name
    config["normalisation"] = meta.normalisation
    validate(config, origins)
    return config


def _check_overridden(key: str, value: Any) -> None:
    """A --set value that a named flag overrides (the flag wins) is still checked: an invalid one is an error
    the user should hear of, not a value silently dropped (`--set epochs=true --epochs 2`)."""
    import math

    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = (number and math.isfinite(value) and value > 0) if key == "lr" else (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not ok:
        kind = "a positive number" if key == "lr" else "a positive integer"
        raise UsageError(f"--set {key}={value!r} is not {kind} (the --{key.replace('_', '-')} flag overrides it, but fix or drop it)")


def _merge(config: dict[str, Any], updates: dict[str, Any], origin: str, origins: dict[str, str] | None = None) -> None:
    origins = origins if origins is not None else {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if head == "arch_kwargs" and rest:
            if "." in rest:
                raise UsageError(f"{origin}: {key!r} is not a setting; architecture settings are arch_kwargs.NAME")
            config["arch_kwargs"][rest] = value
            origins[key] = origin
        elif key == "arch_kwargs":
            if not isinstance(value, dict):
                raise UsageError(f"{origin}: arch_kwargs must be a table such as {{ width = 64 }}, got {value!r}")
            config["arch_kwargs"].update(value)
            origins.update({"arch_kwargs": origin, **{f"arch_kwargs.{k}": origin for k in value}})
        elif key in DEFAULTS or key in OPTIONAL:
            config[key] = value
            origins[key] = origin
        elif key not in ("name", "description"):
            raise UsageError(f"{origin}: unknown setting {key!r}; known: {', '.join([*DEFAULTS, *OPTIONAL])}, arch_kwargs.NAME")


def validate(config: dict[str, Any], origins: dict[str, str] | None = None) -> None:
    """The typed schema (engine/config.py) and the architecture built on the meta device; raises UsageError."""
    from starcli.engine import data

    from . import config as schema

    schema.check(config, origins)
    shape = data.info(config["dataset"]).shape
    if config.get("memory_format") == "channels_last" and len(shape) != 3:
        where = (origins or {}).get("memory_format", "the defaults")
        raise UsageError(
            f"memory_format = channels_last (from {where}) needs image inputs, but {config['dataset']} samples have "
            f"shape {tuple(shape)}; use memory_format=contiguous"
        )
    schema.check_arch(config["arch"], config["arch_kwargs"], data.info(config["dataset"]), origins)


def config_hash(payload: dict[str, Any]) -> str:
    """A stable hash of a JSON-able dict (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
