"""The sweep file: one of the paper's experiments as one TOML file, parsed and checked before any work.

A sweep file declares a grid over a recipe — widths, how many anchors build each star, how t is
sampled, which seeds are held out. Running it is sweep.py.

    name = "width-mnist1d"            # default: the file's stem
    description = "..."
    recipe = "mnist1d-mlp"
    [train]                           # recipe overrides, as `train --set`
    epochs = 60
    [grid]
    widths = [4, 8, 16]               # default: the recipe's own width
    anchor_seeds = "1-10"             # a seed selector or a list
    anchors = [2, 10]                 # star sizes: the first N anchor seeds (default: all of them)
    held_out_seeds = "101-103"
    t_sampling = ["uniform"]          # uniform | beta:A,B | constant:T
    star_seeds = [0]
    align = ["weight", "activation"]  # barrier-protocol axes (optional): how each star's pairs are measured,
    renorm = ["none", "repair"]       # none | reset | repair | rescale | reshift (as barrier --renorm)
    definition = ["eq1"]              # eq1 | endpoint-mean | error; stars and anchors are shared by every value
    replicates = 3                    # independent repeats of every star: replicate r shifts every anchor and
                                      # held-out seed by r × the seed block's span, and the star seed by r
    [star]                            # preset (solution | paper) and build_star options: epochs, samples_per_step, mu_star, realign, realign_every, init
    [barriers]                        # measure options: points, splits, bn_calibration, batch_size, align, renorm,
                                      # definition, temperature (one value each; a [grid] axis varies one of them)
    [baselines]
    soup = true                       # also test the aligned average of each star's anchors (baselines.py)
    [paper]                           # optional reference numbers quoted in the report
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from starcli.engine.star_presets import star_settings
from starcli.errors import StarlightError, UsageError
from starcli.selectors import MAX_IDS, MAX_SEED, parse_ids

SECTIONS = {"name", "description", "recipe", "train", "grid", "star", "barriers", "baselines", "paper", "report"}
# The barrier protocol's axes: how a star's pairs are measured, not how the star is built. Each value of one
# is a summary cell like a width, but trains nothing: every value measures the same stars and anchors.
PROTOCOL_AXES = ("align", "renorm", "definition")
GRID_KEYS = {"widths", "anchor_seeds", "anchors", "held_out_seeds", "t_sampling", "star_seeds", "replicates"} | set(PROTOCOL_AXES)
# Replicates per cell: enough for a CI over anchor sets, bounded so a typo cannot plan a million stars.
MAX_REPLICATES = 100
STAR_KEYS = {"epochs", "samples_per_step", "mu_star", "realign", "realign_every", "init", "preset"}
# [star] keys renamed, still read with their old meaning: {old: new}.
RENAMED_STAR_KEYS = {"align_anchors": "realign"}
BARRIER_KEYS = {"points", "splits", "bn_calibration", "batch_size", "align", "renorm", "definition", "temperature"}
BASELINE_KEYS = {"soup"}
REPORT_KEYS = {"x"}
# The grid axes a figure can put on its x axis, in the order the summary table lists them.
AXES = ("width", "n_anchors", "t_sampling", "star_seed") + PROTOCOL_AXES


@dataclass(frozen=True)
class Cell:
    """One star of the grid: the anchors it is built from and how. Replicate r of a setting uses its own
    block of anchor and held-out seeds and star seed `star_seed + r` (Sweep.replicate_seeds)."""

    width: int | None
    n_anchors: int
    t_sampling: str
    star_seed: int
    replicate: int = 0

    def setting(self) -> tuple:
        """The grid values without the replicate: the cells one summary row pools."""
        return (self.width, self.n_anchors, self.t_sampling, self.star_seed)


@dataclass
class Sweep:
    name: str
    description: str
    recipe: str
    train: dict[str, Any]
    widths: list[int | None]
    anchor_seeds: list[int]
    anchors: list[int]
    held_out_seeds: list[int]
    t_sampling: list[str]
    star_seeds: list[int]
    star: dict[str, Any] = field(default_factory=dict)
    barriers: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    soup: bool = False  # [baselines] soup: also test the aligned average of each star's anchors
    source: str = ""
    replicates: int = 1
    # The barrier-protocol axes the [grid] names (PROTOCOL_AXES order): axis → its values. Empty: every star's
    # pairs are measured once, with the [barriers] settings, exactly as before these axes existed.
    protocol: dict[str, list[str]] = field(default_factory=dict)

    def config(self, width: int | None, device: str | None = None) -> dict[str, Any]:
        """The resolved training config of every anchor and held-out at `width` (on `device`: the
        precision policy's defaults, engine/precision.py)."""
        from starcli.engine import recipes

        return recipes.resolve(self.recipe, width=width, overrides=self.train, device=device)

    def cells(self) -> list[Cell]:
        return [
            Cell(*c)
            for c in itertools.product(self.widths, self.anchors, self.t_sampling, self.star_seeds, range(self.replicates))
        ]

    def protocols(self) -> list[dict[str, str]]:
        """Every combination of the barrier-protocol axes' values, each one measurement of every star
        ([{}]: the one measurement of a sweep without such axes)."""
        axes = list(self.protocol)
        return [dict(zip(axes, values)) for values in itertools.product(*(self.protocol[a] for a in axes))]

    def seed_span(self) -> int:
        """How far replicate r+1's seeds sit from replicate r's: the span of replicate 0's seed block, so blocks
        never overlap and replicate 0 keeps the seeds the file names (and the models already registered)."""
        seeds = self.anchor_seeds + self.held_out_seeds
        return max(seeds) - min(seeds) + 1

    def replicate_seeds(self, replicate: int) -> tuple[list[int], list[int]]:
        """(anchor seeds, held-out seeds) of one replicate."""
        shift = replicate * self.seed_span()
        return [s + shift for s in self.anchor_seeds], [s + shift for s in self.held_out_seeds]

    def star_seed_of(self, cell: Cell) -> int:
        return cell.star_seed + cell.replicate

    def varying(self) -> list[str]:
        """The grid axes with more than one value: what the report's figures are about."""
        values = {"width": self.widths, "n_anchors": self.anchors, "t_sampling": self.t_sampling, "star_seed": self.star_seeds}
        values |= self.protocol
        return [a for a in AXES if len(values.get(a, ())) > 1]

    def x_axis(self) -> str:
        return self.report.get("x") or (self.varying() or ["width"])[0]

    def seeds_to_train(self) -> list[int]:
        seeds: list[int] = []
        for r in range(self.replicates):
            anchor_seeds, held_out = self.replicate_seeds(r)
            seeds += anchor_seeds[: max(self.anchors)] + held_out
        return seeds

    def measured_protocols(self) -> int:
        """How many protocols measure curves of their own: the definition only reads stored curves another
        way (a pair measured under one is copied under the others), so it multiplies no measurement."""
        return len({tuple((k, v) for k, v in p.items() if k != "definition") for p in self.protocols()})

    def soups_per_cell(self) -> int:
        """Distinct soups per star's anchors: one aligned by weight matching for every aligning protocol
        (weight or activation), one plain average for align none."""
        aligns = self.protocol.get("align")
        return len({a != "none" for a in aligns}) if aligns else 1

    def plan(self) -> dict[str, Any]:
        """What a full run needs, cached or not: training runs, stars, soups and distinct barrier pairs
        (regular pairs are shared by every star of a width; every barrier protocol measures its own)."""
        stars = len(self.anchors) * len(self.t_sampling) * len(self.star_seeds)  # per width and replicate
        centers = stars * (2 if self.soup else 1)
        n_pairs = len(self.widths) * self.replicates * len(self.held_out_seeds) * self.measured_protocols() * (
            centers + max(self.anchors))
        plan = {
            "sweep": self.name,
            "recipe": self.recipe,
            "widths": self.widths,
            "training_runs": len(self.widths) * len(self.seeds_to_train()),
            "replicates": self.replicates,
            "stars": len(self.cells()),
            "soups": len(self.cells()) * self.soups_per_cell() if self.soup else 0,
            "barrier_pairs": n_pairs,
        }
        if self.protocol:  # only then: the plan of a sweep without these axes reads as it always did
            plan["barrier_axes"] = dict(self.protocol)
            plan["protocols"] = len(self.protocols())  # measurements of every star
        return plan


# --- finding and reading sweep files ----------------------------------------------------------------


def available() -> list[str]:
    folder = resources.files("starcli.recipes") / "sweeps"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml")) if folder.is_dir() else []


def description(name: str) -> str:
    """A shipped sweep's description, read from its TOML alone: listing the sweeps resolves no recipe and
    imports no torch (validation is `load`'s)."""
    res = resources.files("starcli.recipes") / "sweeps" / f"{name}.toml"
    try:
        return str(tomllib.loads(res.read_text()).get("description", ""))
    except (OSError, tomllib.TOMLDecodeError) as e:
        return f"(unreadable: {e})"


def load(name_or_path: str) -> Sweep:
    """A sweep by bare name (shipped under recipes/sweeps/) or by path to a .toml file, validated."""
    path = Path(name_or_path)
    # A file is a sweep file; a folder named like a shipped sweep (its own report, `--out NAME`) is not one.
    if name_or_path.endswith(".toml") or path.is_file() or (path.exists() and name_or_path not in available()):
        if not path.is_file():
            raise StarlightError(f"sweep file {path} does not exist")
        text, stem, source = path.read_text(), path.stem, str(path)
    else:
        res = resources.files("starcli.recipes") / "sweeps" / f"{name_or_path}.toml"
        if not res.is_file():
            raise StarlightError(
                f"unknown sweep {name_or_path!r}; available: {', '.join(available()) or 'none'}, or a .toml path"
            )
        text, stem, source = res.read_text(), name_or_path, f"recipes/sweeps/{name_or_path}.toml"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StarlightError(f"sweep {name_or_path} is not valid TOML: {e}") from None
    return parse(table, stem, source)


def parse(table: dict[str, Any], default_name: str = "sweep", source: str = "") -> Sweep:
    where = source or default_name
    _known(table, SECTIONS, where, "top-level key")
    if "recipe" not in table:
        raise UsageError(f"sweep {where}: name a recipe, e.g. recipe = \"mnist1d-mlp\"")
    grid = _table(table, "grid", where)
    _known(grid, GRID_KEYS, where, "[grid] key")
    star, barriers, report = (_table(table, s, where) for s in ("star", "barriers", "report"))
    star = _renamed(star, RENAMED_STAR_KEYS, where, "[star]")
    _known(star, STAR_KEYS, where, "[star] key")
    _known(barriers, BARRIER_KEYS, where, "[barriers] key")
    _known(report, REPORT_KEYS, where, "[report] key")
    baselines = _table(table, "baselines", where)
    _known(baselines, BASELINE_KEYS, where, "[baselines] key")
    if not isinstance(baselines.get("soup", False), bool):
        raise UsageError(f"sweep {where}: [baselines] soup must be true or false")

    widths = grid.get("widths", [None])
    if not isinstance(widths, list) or not widths or not all(w is None or (isinstance(w, int) and w > 0) for w in widths) \
            or (len(widths) > 1 and None in widths):
        raise UsageError(f"sweep {where}: [grid] widths must be a non-empty list of positive integers")
    if "anchor_seeds" not in grid or "held_out_seeds" not in grid:
        raise UsageError(f"sweep {where}: [grid] needs anchor_seeds and held_out_seeds, e.g. \"1-10\" and \"101-103\"")
    anchor_seeds = _seeds(grid["anchor_seeds"], "anchor_seeds", where)
    held_out = _seeds(grid["held_out_seeds"], "held_out_seeds", where)
    shared = sorted(set(anchor_seeds) & set(held_out))
    if shared:
        # A held-out that was also an anchor is not independent of the star: the test would be void.
        raise UsageError(f"sweep {where}: seeds {shared} are both anchors and held-outs; held-outs must be new seeds")
    anchors = grid.get("anchors", [len(anchor_seeds)])
    if not isinstance(anchors, list) or not anchors or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in anchors):
        # A star needs two anchors (as `star --anchors` says): caught here, not after the training.
        raise UsageError(f"sweep {where}: [grid] anchors must be a list of star sizes of at least 2 anchors")
    if max(anchors) > len(anchor_seeds):
        raise UsageError(
            f"sweep {where}: a star of {max(anchors)} anchors needs {max(anchors)} anchor_seeds, only {len(anchor_seeds)} given"
        )
    t_sampling = grid.get("t_sampling", ["uniform"])
    t_sampling = _t_samplings([t_sampling] if isinstance(t_sampling, str) else t_sampling, where)
    star_seeds = grid.get("star_seeds", [0])
    if not isinstance(star_seeds, list) or not star_seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in star_seeds
    ):
        raise UsageError(f"sweep {where}: [grid] star_seeds must be a list of integers from 0 to {MAX_SEED}")
    replicates = grid.get("replicates", 1)
    _check_replicates(replicates, anchor_seeds, held_out, star_seeds, where)
    _check_star(star, where)
    _check_barriers(barriers, where)
    protocol = _protocol_axes(grid, barriers, where)
    if report.get("x") is not None and report["x"] not in AXES:
        raise UsageError(f"sweep {where}: [report] x must be one of {', '.join(AXES)}")
    if report.get("x") in PROTOCOL_AXES and report["x"] not in protocol:
        raise UsageError(f"sweep {where}: [report] x = {report['x']!r} needs a [grid] {report['x']} axis, "
                         f"e.g. {report['x']} = [...]; the grid has none")
    train = _table(table, "train", where)
    if widths == [None]:
        # No width grid: the recipe's own width, named so the report's tables and CSV show it.
        widths = [_recipe_width(str(table["recipe"]), train, where)]

    name = str(table.get("name", default_name))
    # The name becomes the default report folder sweeps/NAME: a path ("/abs/path", "../x") would send it elsewhere.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise UsageError(f"sweep {where}: name {name!r} must be a plain name (letters, digits, . _ -), not a path; use --out for the folder")
    sweep = Sweep(
        name=name,
        description=str(table.get("description", "")),
        recipe=str(table["recipe"]),
        train=train,
        widths=widths,
        anchor_seeds=anchor_seeds,
        anchors=sorted(set(anchors)),
        held_out_seeds=held_out,
        t_sampling=list(dict.fromkeys(t_sampling)),
        star_seeds=list(dict.fromkeys(star_seeds)),
        star=star,
        barriers=barriers,
        paper=_table(table, "paper", where),
        report=report,
        soup=baselines.get("soup", False),
        source=source,
        replicates=replicates,
        protocol=protocol,
    )
    # Resolving every width's config checks the recipe, its overrides and the dataset name now,
    # before anything is trained (and needs no data: GPU sweeps validate on a laptop).
    for w in sweep.widths:
        try:
            sweep.config(w)
        except StarlightError as e:
            raise type(e)(f"sweep {where}: {e}") from None
    if "renorm" in protocol or "renorm" in barriers:
        _check_renorm_applies(sweep, where)
    return sweep


def with_replicates(sweep: Sweep, replicates: int) -> Sweep:
    """The sweep with another number of replicates (`sweep --replicates N`), checked as the file's key is."""
    _check_replicates(replicates, sweep.anchor_seeds, sweep.held_out_seeds, sweep.star_seeds, sweep.source or sweep.name)
    return dataclasses.replace(sweep, replicates=replicates)


def _check_replicates(replicates: Any, anchor_seeds: list[int], held_out: list[int], star_seeds: list[int], where: str) -> None:
    if not isinstance(replicates, int) or isinstance(replicates, bool) or not 1 <= replicates <= MAX_REPLICATES:
        raise UsageError(f"sweep {where}: replicates must be an integer from 1 to {MAX_REPLICATES}, got {replicates!r}")
    seeds = anchor_seeds + held_out
    span = max(seeds) - min(seeds) + 1
    if max(seeds) + (replicates - 1) * span > MAX_SEED or max(star_seeds) + replicates - 1 > MAX_SEED:
        raise UsageError(f"sweep {where}: {replicates} replicates shift seeds past {MAX_SEED}; use fewer or smaller seeds")


def _check_star(star: dict[str, Any], where: str) -> None:
    """The [star] settings, checked now by the rules a star is built with (`stars.StarSpec`), so that
    --plan refuses what `star` would; the anchors are the grid's, checked with it."""
    from starcli.solutions.stars import StarSpec

    settings = {k: v for k, v in star.items() if k not in ("preset", "realign", "init", "mu_star")}
    try:
        StarSpec.check_settings(**star_settings(star.get("preset"), realign=star.get("realign"),
                                                init=star.get("init"), mu_star=star.get("mu_star")), **settings)
    except UsageError as e:
        flag, _, rule = str(e).removeprefix("--").partition(" ")  # --mu-star: the file's mu_star
        raise UsageError(f"sweep {where}: [star] {flag.replace('-', '_')} {rule}") from None


def _check_barriers(options: dict[str, Any], where: str) -> None:
    """The [barriers] options, checked now rather than after hours of training, by the rules a
    measurement checks them with (`barriers.BarrierSpec`)."""
    from starcli.solutions.barriers import BarrierSpec

    if "splits" in options and not isinstance(options["splits"], list):
        raise UsageError(f"sweep {where}: [barriers] splits must be a list of train and/or test")
    if options.get("bn_calibration") is not None and isinstance(options["bn_calibration"], str) and options["bn_calibration"] != "full":
        # A file says a number as a number: "100" in quotes is a typo for 100, not a number of samples.
        raise UsageError(f"sweep {where}: [barriers] bn_calibration must be \"full\" or a positive number of samples")
    try:
        BarrierSpec(**options)
    except UsageError as e:
        flag, _, rule = str(e).removeprefix("--").partition(" ")  # --bn-calibration: the file's bn_calibration
        raise UsageError(f"sweep {where}: [barriers] {flag.replace('-', '_')} {rule}") from None


def _protocol_axes(grid: dict[str, Any], barriers: dict[str, Any], where: str) -> dict[str, list[str]]:
    """The barrier-protocol axes of the [grid] (align, renorm, definition): each a list of values (or one
    value), every combination checked with the [barriers] options by the rules a measurement checks them
    with (`barriers.BarrierSpec`). An axis and a [barriers] key for the same setting are refused: one is
    fixed, the other varies it.

    Alignment "auto" is no axis value: it resolves to weight or none, which may repeat another value.
    With activation matching the pairs are aligned by activations; the stars and soups are built as always
    (their anchors aligned by weight matching where they align), since the axis is how the pairs are measured."""
    from starcli.solutions.barriers import ALIGN_CHOICES, RENORM_CHOICES, BarrierSpec
    from starcli.engine.barriers import DEFINITION_CHOICES

    choices = {"align": ALIGN_CHOICES, "renorm": RENORM_CHOICES, "definition": DEFINITION_CHOICES}
    axes: dict[str, list[str]] = {}
    for axis in PROTOCOL_AXES:
        if axis not in grid:
            continue
        if axis in barriers:
            raise UsageError(f"sweep {where}: {axis} is both a [grid] axis and a [barriers] key; keep one "
                             f"(the [grid] list varies it, the [barriers] value fixes it)")
        values = grid[axis]
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise UsageError(f"sweep {where}: [grid] {axis} must be a list of {', '.join(choices[axis])}, "
                             f"e.g. {axis} = [\"{choices[axis][0]}\", \"{choices[axis][1]}\"]")
        unknown = [v for v in values if v not in choices[axis]]
        if unknown:
            raise UsageError(f"sweep {where}: [grid] {axis} must be a list of {', '.join(choices[axis])}, got {unknown[0]!r}")
        axes[axis] = list(dict.fromkeys(values))
    for values in itertools.product(*axes.values()):
        try:
            BarrierSpec(**barriers, **dict(zip(axes, values)))
        except UsageError as e:
            flag, _, rule = str(e).removeprefix("--").partition(" ")
            raise UsageError(f"sweep {where}: [grid] {flag.replace('-', '_')} {rule}") from None
    return axes


def _check_renorm_applies(sweep: Sweep, where: str) -> None:
    """Every renormalisation the sweep names applies to every width's network (REPAIR and its halves are
    for networks without BatchNorm, reset for those with it): refused now, not after the training. Builds
    each network on the meta device, so only sweeps that name a renorm import torch here."""
    from starcli.solutions.barriers import canonical_renorm

    renorms = sweep.protocol.get("renorm") or [sweep.barriers["renorm"]]
    section = "[grid]" if "renorm" in sweep.protocol else "[barriers]"
    for width in sweep.widths:
        config = sweep.config(width)
        for renorm in renorms:
            try:
                canonical_renorm(renorm, config["arch"], config["arch_kwargs"])
            except UsageError as e:
                rule = str(e).removeprefix(f"--renorm {renorm} ")
                raise UsageError(f"sweep {where}: {section} renorm {renorm!r} does not apply to {sweep.recipe} "
                                 f"at width {width}: it {rule}") from None


def _t_samplings(values: Any, where: str) -> list[str]:
    """Each scheme as the star module writes it (so `beta:2,2` and `beta:2.0,2` are one star)."""
    from starcli.engine.starlight import TSampling

    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise UsageError(f"sweep {where}: [grid] t_sampling must be a list like [\"uniform\", \"beta:2,2\"]")
    try:
        return [str(TSampling.parse(v)) for v in values]
    except UsageError as e:
        raise UsageError(f"sweep {where}: [grid] t_sampling: {e}") from None


def _recipe_width(recipe: str, train: dict[str, Any], where: str) -> int | None:
    from starcli import models
    from starcli.engine import recipes

    try:
        config = recipes.resolve(recipe, overrides=train)
    except StarlightError as e:
        raise type(e)(f"sweep {where}: {e}") from None
    return models.width_of(config["arch"], config["arch_kwargs"])


def _table(table: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"sweep {where}: {key} must be a table ([{key}])")
    return dict(value)


def _renamed(table: dict[str, Any], renamed: dict[str, str], where: str, section: str) -> dict[str, Any]:
    """Old keys read as their new names (sweep files written before a rename keep their meaning)."""
    out = dict(table)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise UsageError(f"sweep {where}: {section} gives both {old} and {new} (the same setting); keep {new}")
            out[new] = out.pop(old)
    return out


def _known(table: dict[str, Any], known: set[str], where: str, what: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(f"sweep {where}: unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")


def _seeds(value: Any, key: str, where: str) -> list[int]:
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED for v in value):
        if len(value) > MAX_IDS:
            raise UsageError(f"sweep {where}: [grid] {key} lists more than {MAX_IDS:,} seeds")
        return list(dict.fromkeys(value))
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return parse_ids(str(value), "seed")
        except UsageError as e:
            raise UsageError(f"sweep {where}: [grid] {key}: {e}") from None
    raise UsageError(f"sweep {where}: [grid] {key} must be a seed selector like \"1-10\" or a list of seeds")


# --- running a sweep ---------------------------------------------------------------------------------


