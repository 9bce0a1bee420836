"""Sweeps: sweep files are validated up front, a sweep runs end to end, and a re-run recomputes nothing."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from starcli.errors import StarlightError
from starcli.experiments import sweep as sweep_run
from starcli.experiments import sweep_file
from starcli.solutions import records

GPU_SWEEPS = ["cifar10-resnet18", "cifar100-resnet18", "cifar10-vgg11", "cifar10-wrn", "mnist-mlp"]
CPU_SWEEPS = ["width-mnist1d", "anchors-mnist1d", "t-sampling-mnist1d", "linear-toy"]


def test_every_shipped_sweep_parses_validates_and_resolves_its_recipe():
    assert set(GPU_SWEEPS + CPU_SWEEPS) <= set(sweep_file.available())
    source = {p.stem for p in (Path(__file__).resolve().parents[1] / "recipes" / "sweeps").glob("*.toml")}
    assert set(sweep_file.available()) == source  # every sweep of the source tree is packaged
    for name in sweep_file.available():
        sweep = sweep_file.load(name)
        assert sweep.name == name and sweep.description
        assert sweep.cells() and sweep.plan()["training_runs"] > 0
        assert not set(sweep.anchor_seeds) & set(sweep.held_out_seeds)


@pytest.mark.parametrize("name", GPU_SWEEPS)
def test_gpu_sweeps_match_the_papers_settings(name):
    sweep = sweep_file.load(name)
    config = sweep.config(sweep.widths[0])
    assert config["dataset"] in ("cifar10", "cifar100", "mnist")
    assert len(sweep.held_out_seeds) >= 3 and max(sweep.anchors) >= 17
    paper = sweep.paper
    assert len(paper["star"]) == len(paper["regular"]) == len(sweep.cells())
    # Pairs are weight-matched as in the paper, so the architecture must have a permutation spec.
    from starcli.alignment import has_spec

    assert sweep.barriers["align"] == "weight" and has_spec(config["arch"], config["arch_kwargs"])


def test_the_gpu_sweeps_name_the_papers_grids():
    assert sweep_file.load("cifar10-resnet18").anchors == [50] and len(sweep_file.load("cifar10-resnet18").held_out_seeds) == 5
    assert sweep_file.load("cifar10-wrn").widths == [1, 2, 4, 8]
    assert sweep_file.load("mnist-mlp").widths == [4, 8, 16, 32, 64, 128, 256]
    assert sweep_file.load("cifar100-resnet18").anchors == [2, 10, 50]


def test_a_sweep_loads_by_bare_name_or_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(_TINY)
    assert sweep_file.load(str(path)).name == "tiny"
    assert sweep_file.load("width-mnist1d").source == "recipes/sweeps/width-mnist1d.toml"
    with pytest.raises(StarlightError, match="unknown sweep 'nosuch'; available: .*width-mnist1d"):
        sweep_file.load("nosuch")
    with pytest.raises(StarlightError, match="does not exist"):
        sweep_file.load(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda t: t.replace('held_out_seeds = "11-12"', 'held_out_seeds = "2-3"'), "both anchors and held-outs"),
        (lambda t: t.replace("anchors = [2, 3]", "anchors = [2, 9]"), "needs 9 anchor_seeds"),
        (lambda t: t.replace('t_sampling = ["uniform"]', 't_sampling = ["gauss"]'), "t_sampling"),
        (lambda t: t.replace("[grid]", "[grid]\nwidth = [4]"), "unknown [grid] key 'width'"),
        (lambda t: t.replace("[train]", "[train]\nepoch = 3"), "unknown setting 'epoch'"),
        (lambda t: t.replace('recipe = "mnist1d-mlp"', 'recipe = "nosuch"'), "unknown recipe"),
        (lambda t: t.replace("widths = [4, 8]", "widths = [4, -8]"), "positive integers"),
        (lambda t: t.replace("[star]", "[star]\nmu = 1"), "unknown [star] key"),
        (lambda t: t.replace("[star]", "[star]\nmu_star = -1"), "mu_star"),
        (lambda t: t.replace("points = 5", "points = 1"), "points must be an integer"),
        (lambda t: t.replace("points = 5", "points = 5\nalign = 'wieght'"), "align must be one of"),
        (lambda t: t.replace('splits = ["train", "test"]', 'splits = ["val"]'), "splits must be"),
        (lambda t: t + "\n[report]\nx = 'depth'\n", "[report] x"),
        (lambda t: t.replace("epochs = 2", "epochs = 2\n[[bad"), "not valid TOML"),
    ],
)
def test_a_malformed_sweep_file_is_refused_before_anything_runs(tmp_path, edit, needle):
    path = tmp_path / "bad.toml"
    path.write_text(edit(_TINY))
    with pytest.raises(StarlightError) as e:
        sweep_file.load(str(path))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_figures_axis_is_the_grid_axis_that_varies():
    assert sweep_file.load("width-mnist1d").x_axis() == "width"
    assert sweep_file.load("anchors-mnist1d").x_axis() == "n_anchors"
    assert sweep_file.load("t-sampling-mnist1d").x_axis() == "t_sampling"


# --- end to end ---------------------------------------------------------------------------------------

_TINY = """
name = "tiny"
description = "a seconds-long sweep for tests"
recipe = "mnist1d-mlp"
[train]
epochs = 2
[grid]
widths = [4, 8]
anchor_seeds = "1-3"
anchors = [2, 3]
held_out_seeds = "11-12"
t_sampling = ["uniform"]
[star]
epochs = 2
[barriers]
points = 5
splits = ["train", "test"]
[baselines]
soup = true
"""


@pytest.fixture
def tiny_sweep(tmp_path, home, mnist1d_cache):
    (home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    path = tmp_path / "tiny.toml"
    path.write_text(_TINY)
    return path


@pytest.mark.slow
def test_a_tiny_sweep_runs_end_to_end_and_a_rerun_recomputes_nothing(reg, tiny_sweep, tmp_path, monkeypatch, cli):
    out = tmp_path / "report"
    before = sweep_run.missing_work(reg, sweep_file.load(str(tiny_sweep)), "cpu")
    assert (before["training_runs"], before["stars"], before["barrier_pairs_of_built_stars"]) == (10, 4, 0)
    first = sweep_run.run(reg, sweep_file.load(str(tiny_sweep)), out, device="cpu")
    # 2 widths × (3 anchors + 2 held-outs); 2 widths × 2 star sizes; pairs: per star 2 held-outs × (1 + anchors).
    assert first["computed"]["training_runs"] == 10
    assert first["computed"]["stars"] == 4
    assert first["computed"]["soups"] == 4
    # per width: 2 stars and 2 soups × 2 held-outs, and 3 anchors × 2 held-outs shared by both stars' baselines
    assert first["computed"]["barrier_pairs"] == 2 * (2 * 2 + 2 * 2 + 3 * 2)
    plan = sweep_file.load(str(tiny_sweep)).plan()
    assert {k: plan[k] for k in first["computed"]} == first["computed"]  # --plan predicts a fresh run
    after = sweep_run.missing_work(reg, sweep_file.load(str(tiny_sweep)), "cpu")  # and says what is left: nothing
    assert (after["training_runs"], after["stars"], after["barrier_pairs_of_built_stars"]) == (0, 0, 0)
    code, said, err = cli("sweep", str(tiny_sweep), "--plan", "--device", "cpu")
    assert code == 0 and "missing: nothing: every run, star and pair is registered" in said, err
    assert len(records.query(reg, kind="star")) == 4

    pairs = list(csv.DictReader((out / "pairs.csv").open()))
    assert {p["group"] for p in pairs} == {"star-held-out", "regular-held-out", "soup-held-out"}
    assert {p["split"] for p in pairs} == {"train", "test"}
    assert all(float(p["loss_barrier"]) >= 0 for p in pairs)
    # per width and star: 2 star pairs, 2 soup pairs and 2 × n anchor pairs, each on 2 splits
    assert len(pairs) == 2 * 2 * sum(2 * (2 + n) for n in (2, 3))
    summary = (out / "summary.md").read_text()
    assert "star train" in summary and "regular train" in summary and "soup train" in summary
    assert "![barrier-train](barrier-train.png)" in summary
    for figure in ("barrier-train.png", "barrier-test.png", "scatter-train.png"):
        assert (out / figure).stat().st_size > 1000
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 and {r["width"] for r in rows} == {"4", "8"}
    assert json.loads((out / "results.json").read_text())["sweep"] == "tiny"

    # The second run must find everything in the registry: make any computation fail loudly.
    from starcli.engine import training
    from starcli.solutions import barriers, soups, stars

    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("a solution was retrained"))
    monkeypatch.setattr(stars, "fit_star", lambda *a, **k: pytest.fail("a star was retrained"))
    monkeypatch.setattr(soups, "average", lambda *a, **k: pytest.fail("a soup was recomputed"))
    monkeypatch.setattr(barriers, "compute_pairs", lambda *a, **k: pytest.fail("a barrier was recomputed"))
    n_solutions = len(records.query(reg))
    second = sweep_run.run(reg, sweep_file.load(str(tiny_sweep)), out, device="cpu")
    assert second["computed"] == {"training_runs": 0, "stars": 0, "soups": 0, "barrier_pairs": 0}
    assert len(records.query(reg)) == n_solutions
    assert [c["summary"] for c in second["cells"]] == [c["summary"] for c in first["cells"]]
    assert list(csv.DictReader((out / "pairs.csv").open())) == pairs
    # The command is the same call: JSON on stdout, the rich display on stderr, nothing recomputed.
    code, stdout, err = cli("sweep", str(tiny_sweep), "--out", str(tmp_path / "again"), "--device", "cpu", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["computed"] == {"training_runs": 0, "stars": 0, "soups": 0, "barrier_pairs": 0} and "cells" not in result
    assert "summary.md" in result["files"] and len(result["rows"]) == 4
    assert (tmp_path / "again" / "pairs.csv").read_text() == (out / "pairs.csv").read_text()


def test_sweep_command_plans_lists_and_fails_in_one_line(home, cli):
    code, out, err = cli("sweep", "width-mnist1d", "--plan", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["sweep"] == "width-mnist1d" and plan["stars"] == len(sweep_file.load("width-mnist1d").cells())
    # An empty home: every run and star is missing, and --plan leaves no registry behind.
    assert (plan["missing"]["training_runs"], plan["missing"]["stars"]) == (plan["training_runs"], plan["stars"])
    code, out, _ = cli("sweep", "--json")
    assert code == 0 and {r["sweep"] for r in json.loads(out)} >= set(CPU_SWEEPS + GPU_SWEEPS)
    code, out, err = cli("sweep", "nosuch", "--out", str(home / "x"))
    assert code == 1 and err.startswith("error: unknown sweep 'nosuch'") and err.count("\n") == 1 and out == ""
    assert not (home / "x").exists() and not (home / "registry.db").exists()


# --- the regression task behind linear-toy -------------------------------------------------------------


def test_the_loss_is_cross_entropy_for_labels_and_mean_squared_error_for_regression_targets():
    import torch
    import torch.nn.functional as F

    from starcli.engine import evaluation

    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(evaluation.loss_fn(logits, labels), F.cross_entropy(logits, labels))
    targets = torch.zeros(6, 3)
    assert torch.allclose(evaluation.loss_fn(logits, targets), logits.pow(2).mean())
    assert torch.allclose(evaluation.loss_fn(logits, targets, reduction="sum"), logits.pow(2).mean(1).sum())


def test_regression_is_evaluated_as_mse_and_r2_percent():
    import torch

    from starcli.engine import data, evaluation

    x, y = data.load("linreg", "test")
    assert data.info("linreg").task == "regression" and y.dtype == torch.float32 and y.shape == (len(x), 1)
    mse, r2 = evaluation.evaluate(torch.nn.Identity(), y.clone(), y)  # a perfect predictor
    assert mse == 0.0 and r2 == 100.0
    mse, r2 = evaluation.evaluate(torch.nn.Identity(), torch.full_like(y, y.mean().item()), y)  # the mean
    assert r2 == pytest.approx(0.0, abs=1e-4) and mse == pytest.approx(y.var(unbiased=False).item(), rel=1e-4)


@pytest.mark.slow
def test_a_tiny_linear_toy_sweep_trains_stars_and_barriers_on_regression(reg, tmp_path):
    path = tmp_path / "lin.toml"
    path.write_text(
        'recipe = "linreg-linear2"\n[train]\nepochs = 3\n[grid]\nwidths = [2, 4]\nanchor_seeds = "1-3"\n'
        'held_out_seeds = "11-12"\n[star]\nepochs = 3\n[barriers]\npoints = 5\n'
    )
    result = sweep_run.run(reg, sweep_file.load(str(path)), tmp_path / "out", device="cpu")
    assert result["task"] == "regression" and result["computed"]["stars"] == 2 and result["computed"]["soups"] == 0
    star = records.get(reg, result["cells"][0]["star"])
    assert star.kind == "star" and star.metrics["train_loss"] < 1.0  # MSE, not cross-entropy
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "mean squared error" in text and "R² %" in text
    pairs = list(csv.DictReader((tmp_path / "out" / "pairs.csv").open()))
    assert len(pairs) == 2 * 2 * 2 * (1 + 3)


# --- replicates: the unit of evidence -----------------------------------------------------------------


def test_replicates_use_disjoint_seed_blocks_and_keep_replicate_zero():
    sweep = sweep_file.parse(
        {"recipe": "linreg-linear2", "grid": {"anchor_seeds": "1-3", "held_out_seeds": "11-12", "replicates": 3}}
    )
    blocks = [sweep.replicate_seeds(r) for r in range(3)]
    assert blocks[0] == ([1, 2, 3], [11, 12])  # replicate 0 is the file's own seeds (registered models are reused)
    seeds = [s for anchors, held in blocks for s in anchors + held]
    assert len(seeds) == len(set(seeds)) == 15 == len(sweep.seeds_to_train())
    assert [sweep.star_seed_of(c) for c in sweep.cells()] == [0, 1, 2]
    for bad in (0, 101, True, "3"):
        with pytest.raises(StarlightError, match="replicates must be an integer from 1 to 100"):
            sweep_file.parse({"recipe": "linreg-linear2", "grid": {"anchor_seeds": "1-3", "held_out_seeds": "11-12",
                                                                   "replicates": bad}})


@pytest.mark.slow
def test_a_sweep_with_replicates_reports_the_pooled_ratio_with_its_bootstrap_ci(reg, tmp_path):
    from starcli.engine import evidence
    from starcli.engine.barriers import replicates_of

    path = tmp_path / "rep.toml"
    path.write_text(
        'recipe = "linreg-linear2"\n[train]\nepochs = 3\n[grid]\nwidths = [2]\nanchor_seeds = "1-2"\n'
        'held_out_seeds = "3-4"\nreplicates = 2\n[star]\nepochs = 3\n[barriers]\npoints = 5\nsplits = ["train"]\n'
    )
    result = sweep_run.run(reg, sweep_file.load(str(path)), tmp_path / "out", device="cpu")
    assert result["computed"]["training_runs"] == 8 and result["computed"]["stars"] == 2
    (row,) = result["rows"]
    assert row["replicates"] == 2 and row["held_outs"] == 4
    # The row's CI is the bootstrap of the two replicates' paired barriers, recomputed here from the cells.
    expected = evidence.compare(replicates_of([c["pairs"] for c in result["cells"]], "train"))
    assert row["ratio_train_ci_low"] == pytest.approx(expected["ratio_ci"][0])
    assert row["ratio_train_ci_high"] == pytest.approx(expected["ratio_ci"][1])
    assert row["connects_better_train"] == expected["connects_better"]
    assert row["sign_test_train_p"] == pytest.approx(expected["sign_test"]["p"])
    # Replicate 1 trained its own seeds 5-8 and built its own star with star seed 1.
    second = [c for c in result["cells"] if c["replicate"] == 1][0]
    assert sorted(records.get(reg, i).seed for i in second["anchors"] + second["held_out"]) == [5, 6, 7, 8]
    assert records.get(reg, second["star"]).seed == 1
    summary = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert {"ratio_train_ci_low", "ratio_train_ci_high", "connects_better_train", "permutation_train_p"} <= set(summary[0])
    pairs = list(csv.DictReader((tmp_path / "out" / "pairs.csv").open()))
    assert {p["replicate"] for p in pairs} == {"0", "1"}
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "95% CI" in text and "2 × 2" in text


def test_sweep_replicates_on_the_command_line_override_the_file_and_are_checked(cli):
    code, out, err = cli("sweep", "linear-toy", "--replicates", "4", "--plan", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["replicates"] == 4 and plan["stars"] == 8 * 4 and plan["training_runs"] == 8 * 4 * 13
    code, out, err = cli("sweep", "linear-toy", "--replicates", "0", "--plan")
    assert code == 2 and out == "" and "replicates must be an integer from 1 to 100" in err


def test_the_wrn_sweep_re_aligns_anchors_as_the_authors_wrn_configs_do():
    # configs/cifar10_wrn_*.yaml of the paper's code: permute_anchors: 1 and mu_star: 0.
    assert sweep_file.load("cifar10-wrn").star == {"preset": "paper", "realign": True}


@pytest.mark.slow
def test_the_shipped_linear_toy_replicates_sweep_runs_end_to_end_with_its_ci_columns(reg, tmp_path):
    """The shipped file as it is (its seeds, held-outs, preset and barrier settings), cut to one width, two
    replicates and a few epochs: every column the published table shows is filled and agrees with pairs.csv."""
    import dataclasses

    from starcli.engine import evidence
    from starcli.engine.evidence import Replicate

    shipped = sweep_file.load("linear-toy-replicates")
    assert shipped.replicates == 5 and len(shipped.held_out_seeds) >= 6
    small = dataclasses.replace(shipped, widths=[8], replicates=2, train={"epochs": 3}, star={"preset": "paper", "epochs": 3})
    result = sweep_run.run(reg, small, tmp_path / "out", device="cpu")
    (row,) = result["rows"]
    assert row["replicates"] == 2 and row["held_outs"] == 12
    # Recompute the CI from pairs.csv alone, as a reader of the report would.
    pairs = list(csv.DictReader((tmp_path / "out" / "pairs.csv").open()))
    reps = []
    for r in ("0", "1"):
        mine = [p for p in pairs if p["replicate"] == r and p["split"] == "train"]
        held = sorted({p["b"] for p in mine if p["group"] == "star-held-out"}, key=int)
        star = {p["b"]: float(p["loss_barrier"]) for p in mine if p["group"] == "star-held-out"}
        regular = {h: [float(p["loss_barrier"]) for p in mine if p["group"] == "regular-held-out" and p["b"] == h] for h in held}
        reps.append(Replicate(tuple(star[h] for h in held), tuple(sum(regular[h]) / len(regular[h]) for h in held)))
    expected = evidence.compare(reps)
    summary = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))[0]
    if expected["ratio_ci"] is None:
        assert summary["ratio_train_ci_low"] == ""
    else:
        assert float(summary["ratio_train_ci_low"]) == pytest.approx(expected["ratio_ci"][0], rel=1e-6)
        assert float(summary["ratio_train_ci_high"]) == pytest.approx(expected["ratio_ci"][1], rel=1e-6)
    assert summary["connects_better_train"] == expected["connects_better"]


def test_a_folder_named_like_a_shipped_sweep_does_not_hide_it(tmp_path, monkeypatch):
    # `starlight sweep linear-toy --out linear-toy` and then the same command again: the report folder in the
    # working directory is not a sweep file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "linear-toy").mkdir()
    assert sweep_file.load("linear-toy").name == "linear-toy"
    (tmp_path / "mine").mkdir()
    with pytest.raises(StarlightError, match="sweep file mine does not exist"):
        sweep_file.load("mine")


@pytest.mark.parametrize(
    "grid_or_star, needle",
    [("[grid]\nanchor_seeds = \"1-3\"\nheld_out_seeds = \"11\"\nanchors = [1]\n", "star sizes of at least 2 anchors"),
     ("[grid]\nanchor_seeds = \"1-3\"\nheld_out_seeds = \"11\"\n[star]\nepochs = 1000000\n", "epochs must be an integer from 1 to 100,000"),
     ("[grid]\nanchor_seeds = \"1-3\"\nheld_out_seeds = \"11\"\n[star]\nsamples_per_step = 5000\n",
      "samples_per_step must be an integer from 1 to 1,000")],
)
def test_sweep_files_are_held_to_the_command_lines_bounds_at_plan(tmp_path, cli, grid_or_star, needle):
    path = tmp_path / "bad.toml"
    path.write_text('recipe = "linreg-linear2"\n' + grid_or_star)
    code, out, err = cli("sweep", str(path), "--plan")
    assert code == 2 and out == "" and needle in err


def test_an_invalid_set_value_under_a_flag_is_one_line_not_dropped(tmp_path, cli):
    code, out, err = cli("--home", str(tmp_path / "home"), "train", "--set", "epochs=true", "--epochs", "2", "--seed", "1")
    assert code == 2 and "--set epochs=True is not a positive integer" in err and not (tmp_path / "home").exists()
