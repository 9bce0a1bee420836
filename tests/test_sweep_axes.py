"""Barrier-protocol axes of a sweep (issue 22, item 6): `[grid] align`, `renorm` and `definition` make each
value its own summary cell, measured on the same stars and anchors (nothing is retrained per value), with
the barrier rows stored under their protocol and reused; a sweep without them reports as it always did."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from starcli.errors import StarlightError
from starcli.experiments import sweep as sweep_run
from starcli.experiments import sweep_file
from starcli.registry import open_registry
from starcli.runners.options import RunOptions
from starcli.solutions import barriers, records

# One width, one star of 2 anchors, 2 held-outs, two epochs: seconds. No BatchNorm in the MLP, so REPAIR applies.
_AXES = """
name = "axes"
recipe = "mnist1d-mlp"
[train]
epochs = 2
[grid]
widths = [8]
anchor_seeds = "1-2"
held_out_seeds = "11-12"
{axes}
[star]
epochs = 2
[barriers]
points = 5
splits = ["train"]
bn_calibration = 200
[baselines]
soup = true
"""
RENORM_X_ALIGN = 'renorm = ["none", "repair"]\nalign = ["weight", "activation"]'


def _file(tmp_path: Path, axes: str, name: str = "axes.toml", **replace: str) -> Path:
    text = _AXES.format(axes=axes)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _registry(path: Path, mnist1d_cache: Path):
    reg = open_registry(path)
    (reg.home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, reg.home / "datasets" / "mnist1d.npz")
    return reg


# --- the file ------------------------------------------------------------------------------------------


def test_protocol_axes_are_grid_axes_whose_combinations_measure_every_star(tmp_path):
    sweep = sweep_file.load(str(_file(tmp_path, RENORM_X_ALIGN)))
    # PROTOCOL_AXES order (align, renorm, definition), whatever order the file lists them in.
    assert sweep.protocol == {"align": ["weight", "activation"], "renorm": ["none", "repair"]}
    assert sweep.protocols() == [
        {"align": "weight", "renorm": "none"}, {"align": "weight", "renorm": "repair"},
        {"align": "activation", "renorm": "none"}, {"align": "activation", "renorm": "repair"},
    ]
    assert len(sweep.cells()) == 1  # one star: the axes are no stars of their own
    assert sweep.varying() == ["align", "renorm"] and sweep.x_axis() == "align"
    plan = sweep.plan()
    assert plan["barrier_axes"] == sweep.protocol and plan["protocols"] == 4
    # per protocol: 2 held-outs × (star + soup + 2 anchors); one soup (both matchings use the weight-matched soup)
    assert (plan["stars"], plan["soups"], plan["barrier_pairs"]) == (1, 1, 4 * 2 * (1 + 1 + 2))
    # The definition reads stored curves another way: it multiplies the cells, not the measurements.
    by_definition = sweep_file.load(str(_file(tmp_path, 'definition = ["eq1", "endpoint-mean"]\nrenorm = "repair"')))
    assert by_definition.protocols() == [{"renorm": "repair", "definition": "eq1"}, {"renorm": "repair", "definition": "endpoint-mean"}]
    assert by_definition.plan()["barrier_pairs"] == 2 * (1 + 1 + 2)
    # align none averages the anchors unaligned: a second soup
    assert sweep_file.load(str(_file(tmp_path, 'align = ["weight", "none"]'))).plan()["soups"] == 2
    on_x = _file(tmp_path, RENORM_X_ALIGN, "x.toml", **{"[baselines]": '[report]\nx = "renorm"\n[baselines]'})
    assert sweep_file.load(str(on_x)).x_axis() == "renorm"


def test_a_sweep_without_protocol_axes_plans_as_before(tmp_path):
    sweep = sweep_file.load(str(_file(tmp_path, "")))
    assert sweep.protocol == {} and sweep.protocols() == [{}]
    assert set(sweep.plan()) == {"sweep", "recipe", "widths", "training_runs", "replicates", "stars", "soups", "barrier_pairs"}
    assert sweep.plan()["barrier_pairs"] == 2 * (1 + 1 + 2)


@pytest.mark.parametrize(
    "axes, replace, needle",
    [
        ('renorm = ["none", "repiar"]', {}, "[grid] renorm must be a list of none, reset, repair, rescale, reshift, got 'repiar'"),
        ('align = ["auto", "weight"]', {}, "[grid] align must be a list of none, weight, activation, got 'auto'"),
        ("align = []", {}, "[grid] align must be a list of none, weight, activation"),
        ("definition = [1]", {}, "[grid] definition must be a list of eq1, endpoint-mean, error"),
        ('align = ["weight"]', {"points = 5": 'points = 5\nalign = "weight"'}, "align is both a [grid] axis and a [barriers] key"),
        # reset re-estimates BatchNorm statistics; this MLP has none
        ('renorm = ["none", "reset"]', {}, "[grid] renorm 'reset' does not apply to mnist1d-mlp at width 8: it re-estimates"),
        # REPAIR is for networks without BatchNorm; the 1-D CNN has it
        ('renorm = ["repair"]', {'recipe = "mnist1d-mlp"': 'recipe = "mnist1d-cnn"'},
         "[grid] renorm 'repair' does not apply to mnist1d-cnn at width 8: it is for networks without BatchNorm"),
        ("", {"points = 5": 'points = 5\nrenorm = "rescale"', 'recipe = "mnist1d-mlp"': 'recipe = "mnist1d-cnn"'},
         "[barriers] renorm 'rescale' does not apply"),
        ('renorm = ["repair"]', {"points = 5": "points = 5\ntemperature = 0"}, "[barriers] temperature must be a positive number"),
        ('align = ["weight"]', {"[baselines]": '[report]\nx = "renorms"\n[baselines]'}, "[report] x must be one of"),
        ('align = ["weight"]', {"[baselines]": '[report]\nx = "renorm"\n[baselines]'}, "[report] x = 'renorm' needs a [grid] renorm axis"),
    ],
)
def test_a_bad_protocol_axis_is_one_line_at_plan_with_nothing_stored(tmp_path, home, cli, axes, replace, needle):
    path = _file(tmp_path, axes, **replace)
    with pytest.raises(StarlightError) as e:
        sweep_file.load(str(path))
    assert needle in str(e.value) and "\n" not in str(e.value)
    code, out, err = cli("sweep", str(path), "--plan")
    assert code == 2 and out == "" and needle in err and err.count("\n") == 1
    assert not (home / "registry.db").exists()


def test_activation_matching_is_a_barriers_option_of_a_sweep_too(tmp_path):
    # Lifted: the soup keeps its weight-matched construction and its pairs are measured as the star's.
    path = _file(tmp_path, "", **{"points = 5": 'points = 5\nalign = "activation"\nrenorm = "repair"\ndefinition = "error"'})
    sweep = sweep_file.load(str(path))
    assert sweep.protocol == {} and sweep.barriers["align"] == "activation"
    spec = sweep_run._barrier_spec(sweep, 1, [2])
    assert (spec.align, spec.renorm, spec.definition) == ("activation", "repair", "error")


# --- running it ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_renorm_by_align_sweep_measures_one_star_under_every_protocol(reg, tmp_path, mnist1d_cache, monkeypatch, cli):
    (reg.home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, reg.home / "datasets" / "mnist1d.npz")
    sweep = sweep_file.load(str(_file(tmp_path, RENORM_X_ALIGN)))
    out = tmp_path / "report"
    result = sweep_run.run(reg, sweep, out, device="cpu")
    plan = sweep.plan()
    assert result["computed"] == {k: plan[k] for k in result["computed"]} == {
        "training_runs": 4, "stars": 1, "soups": 1, "barrier_pairs": 4 * 2 * 4}
    cells = result["cells"]
    assert [(c["align"], c["renorm"]) for c in cells] == [(p["align"], p["renorm"]) for p in sweep.protocols()]
    assert len({c["star"] for c in cells}) == 1 and len({c["soup"]["id"] for c in cells}) == 1  # built once
    assert len(records.query(reg, kind="star")) == 1

    # Each cell is what `barrier` measures under that protocol: the reference call, read from the same rows.
    star, held = cells[0]["star"], cells[0]["held_out"]
    for cell in cells:
        direct = barriers.measure(reg, star=star, held_out=held, points=5, splits=("train",), bn_calibration=200,
                                  align=cell["align"], renorm=cell["renorm"], device="cpu")
        assert direct["summary"]["star-held-out"] == cell["summary"]["star-held-out"]
        assert direct["settings"]["align"] == cell["align"]
    rows = barriers.stored(reg, renorm="repair", align="activation")
    assert {(r["a"], r["b"]) for r in rows} >= {(star, h) for h in held}
    # REPAIR changes the numbers: the repaired and the plain star barriers are different measurements.
    plain, repaired = (next(c for c in cells if (c["align"], c["renorm"]) == ("weight", r)) for r in ("none", "repair"))
    assert plain["summary"]["star-held-out"] != repaired["summary"]["star-held-out"]

    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert list(summary[0])[:6] == ["width", "n_anchors", "t_sampling", "star_seed", "align", "renorm"]
    assert [(r["align"], r["renorm"]) for r in summary] == [(c["align"], c["renorm"]) for c in cells]
    assert all(r["replicates"] == "1" and r["ratio_train_loss_barrier"] for r in summary)
    pairs = list(csv.DictReader((out / "pairs.csv").open()))
    assert list(pairs[0])[:7] == ["width", "n_anchors", "t_sampling", "star_seed", "align", "renorm", "replicate"]
    # per protocol: 2 held-outs × (star, soup, 2 anchors), train only
    assert len(pairs) == 4 * 2 * 4 and {(p["align"], p["renorm"]) for p in pairs} == {("weight", "none"), ("weight", "repair"),
                                                                                     ("activation", "none"), ("activation", "repair")}
    for cell in cells:  # pairs.csv's star barriers are the cell's
        mine = [float(p["loss_barrier"]) for p in pairs
                if (p["align"], p["renorm"], p["group"]) == (cell["align"], cell["renorm"], "star-held-out")]
        assert mine == [pair["train"]["loss_barrier"] for pair in cell["pairs"] if pair["kind"] == "star-held-out"]
    text = (out / "summary.md").read_text()
    assert "Barrier-protocol axes" in text and "| alignment | renormalisation |" in text and "Renorm repair: each hidden channel" in text
    assert (out / "barrier-train.png").stat().st_size > 1000
    payload = json.loads((out / "results.json").read_text())
    assert payload["protocol_axes"] == sweep.protocol and payload["x"] == "align"

    code, said, err = cli("sweep", str(tmp_path / "axes.toml"), "--plan", "--device", "cpu")
    assert code == 0 and "barrier_axes: {'align': ['weight', 'activation'], 'renorm': ['none', 'repair']}" in said, err
    assert "missing: nothing" in said
    # A third renorm: only its pairs are missing, said per protocol and per cell.
    more = sweep_file.load(str(_file(tmp_path, RENORM_X_ALIGN.replace('"repair"]', '"repair", "rescale"]'), "more.toml")))
    missing = sweep_run.missing_work(reg, more, "cpu")
    # the star's and its anchors' pairs per new protocol (soups are planned when the run builds them)
    assert missing["barrier_pairs_of_built_stars"] == 2 * 6
    assert {k: n for k, n in missing["barrier_pairs_by_protocol"].items() if n} == {
        "align=weight, renorm=rescale": 6, "align=activation, renorm=rescale": 6}
    assert [(c["align"], c["renorm"], c["barrier_pairs"]) for c in missing["barrier_cells"]] == [
        ("weight", "rescale", 6), ("activation", "rescale", 6)]

    # A rerun finds every row: nothing is trained or measured again.
    from starcli.engine import training
    from starcli.solutions import soups, stars

    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("a solution was retrained"))
    monkeypatch.setattr(stars, "fit_star", lambda *a, **k: pytest.fail("a star was retrained"))
    monkeypatch.setattr(soups, "average", lambda *a, **k: pytest.fail("a soup was recomputed"))
    monkeypatch.setattr(barriers, "compute_pairs", lambda *a, **k: pytest.fail("a barrier was recomputed"))
    again = sweep_run.run(reg, sweep, tmp_path / "again", device="cpu")
    assert again["computed"] == {"training_runs": 0, "stars": 0, "soups": 0, "barrier_pairs": 0}
    assert (tmp_path / "again" / "pairs.csv").read_text() == (out / "pairs.csv").read_text()
    # The same sweep without the axes reuses the renorm-none, weight-matched rows (the MLP's default protocol).
    plain_sweep = sweep_file.load(str(_file(tmp_path, "", "plain.toml", **{"points = 5": 'points = 5\nalign = "weight"'})))
    plain_run = sweep_run.run(reg, plain_sweep, tmp_path / "plain", device="cpu")
    assert plain_run["computed"]["barrier_pairs"] == 0
    assert plain_run["cells"][0]["summary"] == cells[0]["summary"]


@pytest.mark.slow
def test_protocol_axes_on_a_worker_pool_equal_the_sweep_in_one_process(tmp_path, mnist1d_cache):
    # A definition axis too: its second value is copied from the first's curves, on the pool as here.
    axes = 'renorm = ["none", "repair"]\ndefinition = ["eq1", "endpoint-mean"]'
    sweep = sweep_file.load(str(_file(tmp_path, axes)))
    here, pooled = _registry(tmp_path / "here", mnist1d_cache), _registry(tmp_path / "pooled", mnist1d_cache)
    one = sweep_run.run(here, sweep, tmp_path / "one", device="cpu")
    two = sweep_run.run(pooled, sweep, tmp_path / "two", device="cpu", run=RunOptions(jobs=2))
    plan = sweep.plan()
    assert one["computed"] == two["computed"] == {k: plan[k] for k in one["computed"]}
    assert one["computed"]["barrier_pairs"] == 2 * 2 * 4  # two renorms measured; definitions copied
    assert [c["summary"] for c in one["cells"]] == [c["summary"] for c in two["cells"]]
    assert [(c["renorm"], c["definition"]) for c in two["cells"]] == [(p["renorm"], p["definition"]) for p in sweep.protocols()]
    # endpoint-mean reads the eq1 curves another way: same curves, other barriers where the endpoints differ
    eq1, mean = (next(c for c in one["cells"] if (c["renorm"], c["definition"]) == ("none", d)) for d in ("eq1", "endpoint-mean"))
    assert [p["train"]["loss"] for p in eq1["pairs"]] == [p["train"]["loss"] for p in mean["pairs"]]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("star", "soup")} for r in rows]  # noqa: E731
    assert strip(csv.DictReader((tmp_path / "one" / "summary.csv").open())) == strip(csv.DictReader((tmp_path / "two" / "summary.csv").open()))
    assert len(barriers.stored(pooled, definition="endpoint-mean")) == len(barriers.stored(pooled, definition="eq1"))
    here.close()
    pooled.close()


def test_the_documented_protocol_sweep_parses_as_the_page_says():
    import re
    import tomllib

    page = (Path(__file__).resolve().parents[1] / "docs" / "instruments-alignment.md").read_text()
    section = page[page.index("## As sweep axes"):]
    sweep = sweep_file.parse(tomllib.loads(re.search(r"```toml\n(.*?)```", section, re.S).group(1)), "my-renorm")
    assert sweep.protocol == {"align": ["weight", "activation"], "renorm": ["none", "repair"]} and sweep.x_axis() == "renorm"
    shipped = sweep_file.load("renorm-mnist1d")
    assert shipped.protocol == sweep.protocol and shipped.soup and shipped.replicates >= 3
    # The shipped example's stars are t-sampling-mnist1d's uniform ones: nothing new to train for replicate 0.
    other = sweep_file.load("t-sampling-mnist1d")
    assert shipped.config(64) == other.config(64) and shipped.star == other.star
    assert (shipped.anchor_seeds, shipped.held_out_seeds) == (other.anchor_seeds, other.held_out_seeds)
    with pytest.raises(StarlightError) as e:
        sweep_file.parse({"recipe": "mnist1d-cnn", "grid": {"anchor_seeds": "1-5", "held_out_seeds": "11-13",
                                                            "renorm": ["repair"]}}, "my-renorm")
    said = "[grid] renorm 'repair' does not apply to mnist1d-cnn at width 32: it is for networks without BatchNorm"
    assert said in str(e.value) and said in " ".join(section.split())  # the page quotes the error as it is


def test_a_protocol_axis_finding_is_the_paired_ratio_with_its_ci_computed_plainly():
    """The finding on what an axis does: per replicate and held-out, the barrier under the second value over
    the first's, on the same pairs, with evidence.compare's CI; checked against sums and a t-interval."""
    import statistics as stats

    from scipy import stats as sps

    from starcli.experiments.statistics import protocol_findings

    def cell(renorm: str, replicate: int, star: list[float], regular: list[list[float]]) -> dict:
        held = [100 + 10 * replicate + h for h in range(len(star))]
        pairs = [{"kind": "star-held-out", "a": 1, "b": h, "train": {"loss_barrier": v}} for h, v in zip(held, star)]
        pairs += [{"kind": "regular-held-out", "a": 2 + k, "b": h, "train": {"loss_barrier": v}}
                  for h, vs in zip(held, regular) for k, v in enumerate(vs)]
        return {"width": 8, "n_anchors": 2, "t_sampling": "uniform", "star_seed": 0, "replicate": replicate,
                "align": "weight", "renorm": renorm, "protocol_axes": ["renorm"], "pairs": pairs}

    none = [([0.4, 0.2], [[0.5, 0.7], [0.6, 0.2]]), ([0.3, 0.5], [[0.9, 0.5], [0.4, 0.4]]), ([0.2, 0.6], [[0.8, 0.6], [0.3, 0.5]])]
    repair = [([0.1, 0.1], [[0.2, 0.4], [0.3, 0.1]]), ([0.2, 0.2], [[0.5, 0.3], [0.2, 0.2]]), ([0.1, 0.3], [[0.4, 0.2], [0.1, 0.3]])]
    cells = [cell("none", r, *none[r]) for r in range(3)] + [cell("repair", r, *repair[r]) for r in range(3)]
    (line,) = protocol_findings(cells, "train")
    # star: per replicate Σ repair / Σ none, the mean of the three, and a t-interval over them
    ratios = [sum(repair[r][0]) / sum(none[r][0]) for r in range(3)]
    mean, half = stats.fmean(ratios), sps.t.ppf(0.975, 2) * stats.stdev(ratios) / 3 ** 0.5
    assert f"star-held-out {mean:.3f}, 95% CI [{max(0.0, mean - half):.3f}, {mean + half:.3f}]" in line
    regular = [sum(map(stats.fmean, repair[r][1])) / sum(map(stats.fmean, none[r][1])) for r in range(3)]
    assert f"regular-held-out {stats.fmean(regular):.3f}" in line
    assert line.startswith("renorm repair against none: train loss barrier ratio repair/none") and "3 replicates" in line
    # Without protocol axes there is no such finding.
    assert protocol_findings([{k: v for k, v in c.items() if k != "protocol_axes"} for c in cells]) == []


def test_the_star_against_regular_line_is_not_fitted_across_protocols():
    """The width study's line (star ≈ a × regular) pools every row: with a protocol axis beside the widths it
    would mix barriers that mean different things, so it is fitted only where every row has one protocol."""
    from starcli.experiments import statistics

    def row(width, renorm, regular, star):
        return {"width": width, "renorm": renorm, "regular_train_loss_barrier_mean": regular,
                "star_train_loss_barrier_mean": star, "star_train_loss": 0.1, "anchor_train_loss": 0.1}

    one = [row(4, "none", 1.0, 0.5), row(8, "none", 2.0, 0.9)]
    two = one + [row(4, "repair", 1.5, 0.2), row(8, "repair", 2.5, 0.3)]
    assert statistics.one_protocol(one) and not statistics.one_protocol(two)
    fitted = [line for line in statistics.findings(one, "width") if line.startswith("least squares")]
    assert fitted == ["least squares through the origin: star ≈ 0.46 × regular; affine fit star = 0.40 × regular + 0.100 (R² 1.00)."]
    assert not [line for line in statistics.findings(two, "width") if line.startswith("least squares")]
