"""Browse, history and trackers on real training: `barriers`, `curves`, `history`, starcli.api DataFrames,
`--log` while training and `export --to` afterwards, read back through each tracker's own reader (offline)."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from starcli.engine.barriers import barrier
from starcli.errors import StarlightError
from starcli.solutions import records

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_trackers import _history, _summary, finished_records, wandb_env  # noqa: E402,F401  (a fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist1d_cache):
    """One home for the module (training is the slow part): anchors seeds 1-4 (tiny MNIST-1D MLP), a star
    from seeds 1-3 and its barriers against seed 4. Tests may add to it, never remove."""
    import shutil

    from starcli.registry import open_registry
    from starcli.engine import recipes
    from starcli.solutions import anchors, barriers
    from starcli.solutions.stars import build_star

    home = tmp_path_factory.mktemp("workbench") / "home"
    (home / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    config = recipes.resolve("mnist1d-mlp", width=32, epochs=3)
    reg = open_registry(home)
    outcomes = anchors.train(reg, config, [1, 2, 3, 4], device="cpu")
    ids = [o.solution.id for o in outcomes]
    star, _ = build_star(reg, records.select_ids(reg, "seed=1-3,kind=anchor"), epochs=2, device="cpu")
    barriers.measure(reg, star=star.id, held_out=[ids[3]], points=3, splits=("test",), align="none", device="cpu")
    reg.close()
    return home, config, ids, star


@pytest.fixture
def world(trained, monkeypatch):
    home, _, ids, star = trained
    monkeypatch.setenv("STARLIGHT_HOME", str(home))
    return ids, star


@pytest.fixture
def reg(trained, world):
    from starcli.registry import open_registry

    r = open_registry(trained[0])
    yield r
    r.close()


@pytest.mark.slow
def test_history_is_the_loss_the_training_loop_reported_each_epoch(world, reg, trained, tmp_path, cli):
    import torch

    from starcli.engine import training
    from starcli.engine.data import load_split

    ids, star = world
    # The plain reference: the same training again, its on_epoch values collected by hand.
    cpu = torch.device("cpu")
    split = load_split("mnist1d", "train", cpu, cache_dir=records.dataset_cache(reg))
    seen = []
    training.fit(trained[1], 1, cpu, split, on_epoch=lambda e, loss, acc: seen.append((e, loss, acc)))
    assert records.history(reg, ids[0]) == [{"epoch": e, "train_loss": loss, "train_acc": acc} for e, loss, acc in seen]
    star_rows = records.history(reg, star.id)
    assert [r["epoch"] for r in star_rows] == [1, 2] and all(0 < r["train_acc"] < 100 for r in star_rows)

    code, out, _ = cli("history", str(ids[0]), "--csv", "--plot", str(tmp_path / "h.png"))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([loss for _, loss, _ in seen], rel=1e-6)
    assert [float(r["train_acc"]) for r in rows] == pytest.approx([acc for _, _, acc in seen], rel=1e-6)
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(cli("history", str(star.id), "--json")[1])[1]["epoch"] == 2


def test_barriers_lists_stored_pairs_with_settings_and_the_barrier_of_their_curves(world, reg, cli):
    ids, star = world
    rows = json.loads(cli("barriers", "--star", str(star.id), "--json")[1])
    assert [(r["a"], r["b"], r["kind"]) for r in rows] == [(star.id, ids[3], "star-held-out")] + [
        (a, ids[3], "regular-held-out") for a in ids[:3]
    ]
    assert {(r["points"], r["splits"], r["align"], r["bn_calibration"]) for r in rows} == {(3, "test", "none", "full")}
    curve = [c for c in json.loads(cli("curves", f"{star.id}-{ids[3]}", "--json")[1])]
    assert [c["t"] for c in curve] == [0.0, 0.5, 1.0]
    # by hand: L(t) minus the chord between the endpoints, at the midpoint (the only interior point), floored at 0
    loss = [c["loss"] for c in curve]
    assert rows[0]["test_loss_barrier"] == pytest.approx(max(0.0, loss[1] - (loss[0] + loss[2]) / 2))
    assert rows[0]["test_loss_barrier"] == pytest.approx(barrier([0.0, 0.5, 1.0], loss))
    only = json.loads(cli("barriers", "--kind", "regular-held-out", "--json")[1])
    assert [r["a"] for r in only] == ids[:3]
    code, _, err = cli("barriers", "--kind", "stars")
    assert code == 2 and "unknown pair kind 'stars'" in err


def test_curves_csv_is_tidy_and_a_missing_pair_is_one_line(world, cli):
    ids, star = world
    code, out, _ = cli("curves", "--star", str(star.id), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["pair", "a", "b", "kind", "settings_hash", "align", "renorm", "definition", "split", "t", "loss", "acc"]
    assert len(rows) == 4 * 3 and {r["split"] for r in rows} == {"test"}
    code, out, err = cli("curves", f"{ids[0]}-{ids[1]}")
    assert code == 1 and out == "" and f"no stored barrier for pair {ids[0]}-{ids[1]}" in err


def test_the_notebook_api_returns_dataframes_of_the_same_numbers(world, reg, cli):
    pytest.importorskip("pandas")
    from starcli import api

    ids, star = world
    sols = api.solutions(kind="anchor", seeds=[1, 2])
    assert list(sols.index) == ids[:2]
    assert sols.loc[ids[0], "test_acc"] == records.get(reg, ids[0]).metrics["test_acc"]
    assert api.solutions(kind="star").loc[star.id, "anchors_n"] == 3
    bars = api.barriers(star=star.id)
    assert list(bars["kind"]) == ["star-held-out"] + ["regular-held-out"] * 3
    cur = api.curves([(star.id, ids[3])])
    assert list(cur["t"]) == [0.0, 0.5, 1.0]
    assert cur["loss"].tolist() == [c["loss"] for c in json.loads(cli("curves", f"{star.id}-{ids[3]}", "--json")[1])]
    hist = api.history(ids[0])
    assert hist.index.name == "epoch" and hist["train_loss"].tolist() == [r["train_loss"] for r in records.history(reg, ids[0])]
    assert hist["train_acc"].tolist() == [r["train_acc"] for r in records.history(reg, ids[0])]


@pytest.mark.slow
def test_export_to_mlflow_a_run_per_solution_and_per_pair(world, reg, tmp_path, cli):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from starcli.trackers import flatten

    ids, star = world
    code, out, err = cli("export", f"{ids[3]},{star.id}", "--to", "mlflow", "--log-dir", str(tmp_path / "ml"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["solutions"]) == 2 and len(result["pairs"]) == 1  # only the pair among the two exported
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}")
    run = client.get_run(result["solutions"][1].split()[-1])
    sol = records.get(reg, star.id)
    assert run.data.params == {k: str(v) for k, v in flatten(sol.config).items()}
    assert run.data.metrics["test_acc"] == sol.metrics["test_acc"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/train_loss"))
    assert history == [(r["epoch"], r["train_loss"]) for r in sol.history]
    [artifact] = client.list_artifacts(run.info.run_id)
    assert artifact.path == f"{sol.sha256}.safetensors"  # named by its sha256, as the registry knows it
    got = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / "dl"))
    assert open(got, "rb").read() == reg.store.read_verified(sol.sha256)
    pair = client.get_run(result["pairs"][0].split()[-1])
    stored = json.loads(cli("barriers", "--star", str(star.id), "--json")[1])[0]
    assert pair.data.metrics["test_loss_barrier"] == pytest.approx(stored["test_loss_barrier"])
    assert pair.data.params["kind"] == "star-held-out"


@pytest.mark.slow
def test_train_with_log_tensorboard_streams_each_epoch(world, reg, tmp_path, cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = cli("train", "--seed", "7", "--width", "32", "--epochs", "3", "--device", "cpu",
                       "--log", "tensorboard", "--log-dir", str(tmp_path / "tb"))  # fmt: skip
    assert code == 0, err
    [sol] = records.query(reg, seeds=[7])
    [folder] = [p for p in (tmp_path / "tb").iterdir() if p.is_dir()]
    acc = EventAccumulator(str(folder))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("epoch/train_loss")]
    assert logged == [(r["epoch"], pytest.approx(r["train_loss"], rel=1e-6)) for r in sol.history]
    assert len(logged) == 3
    accs = [(e.step, e.value) for e in acc.Scalars("epoch/train_acc")]
    assert accs == [(r["epoch"], pytest.approx(r["train_acc"], rel=1e-6)) for r in sol.history]


@pytest.mark.slow
def test_star_with_log_wandb_offline(world, reg, tmp_path, cli, wandb_env):
    ids, _ = world
    code, out, err = cli("star", "--anchors", f"{ids[0]},{ids[1]}", "--epochs", "2", "--device", "cpu", "--json",
                         "--log", "wandb", "--log-dir", str(tmp_path / "wb"))  # fmt: skip
    assert code == 0, err
    sol = records.get(reg, json.loads(out)["id"])
    [run_file] = (tmp_path / "wb").rglob("*.wandb")
    recs = finished_records(run_file.parent)
    assert _history(recs, "epoch/train_loss") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in sol.history]
    assert _history(recs, "epoch/train_acc") == [(r["epoch"], pytest.approx(r["train_acc"])) for r in sol.history]
    assert _summary(recs)["test_acc"] == pytest.approx(sol.metrics["test_acc"])


def test_a_missing_tracker_library_is_one_line_before_any_training(world, reg, cli, monkeypatch):
    monkeypatch.delitem(sys.modules, "starcli.trackers._mlflow", raising=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    before = [s.id for s in records.query(reg)]
    code, out, err = cli("train", "--seed", "11", "--device", "cpu", "--log", "mlflow")
    assert code == 1 and err == "error: --log mlflow needs mlflow: pip install 'starlight-landscapes[mlflow]'\n"
    assert [s.id for s in records.query(reg)] == before
    code, _, err = cli("train", "--seed", "1", "--log", "neptune")
    assert code == 2 and "unknown tracker 'neptune'" in err


_SWEEP = """
name = "tiny-log"
description = "a seconds-long sweep for --log"
recipe = "mnist1d-mlp"
[train]
epochs = 2
[grid]
widths = [4]
anchor_seeds = "1-2"
anchors = [2]
held_out_seeds = "11"
t_sampling = ["uniform"]
[star]
epochs = 2
[barriers]
points = 3
splits = ["train", "test"]
"""


def _tensorboard_runs(folder, tag: str = "epoch/train_loss") -> dict[str, list[tuple[int, float]]]:
    """run folder name -> the (step, value) series of `tag`, for the runs that logged it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        acc = EventAccumulator(str(run))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out[run.name] = [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


@pytest.mark.slow
def test_sweep_with_log_gives_a_run_per_training_and_star(home, mnist1d_cache, tmp_path, cli):
    pytest.importorskip("tensorboard")
    import shutil

    (home / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    (tmp_path / "s.toml").write_text(_SWEEP)
    code, _, err = cli("sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--device", "cpu",
                       "--log", "tensorboard", "--log-dir", str(tmp_path / "tb"), "--json")  # fmt: skip
    assert code == 0, err
    runs = _tensorboard_runs(tmp_path / "tb")
    assert len(runs) == 4  # anchors of seeds 1, 2 and 11, and one star
    # named by kind, width and seed, so a sweep's runs can be told apart
    assert sorted(runs)[:3] == ["anchor-w4-seed-1", "anchor-w4-seed-11", "anchor-w4-seed-2"]
    assert sorted(runs)[3].startswith("star-w4-seed-")
    assert sorted(len(v) for v in runs.values()) == [2, 2, 2, 2]


@pytest.mark.slow
def test_trainings_in_worker_processes_are_logged_from_their_stored_history(home, mnist1d_cache, tmp_path, cli):
    pytest.importorskip("tensorboard")
    import shutil

    from starcli.registry import open_registry

    (home / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    code, _, err = cli("train", "--seed", "1-2", "--width", "8", "--epochs", "2", "--device", "cpu", "--jobs", "2",
                       "--log", "tensorboard", "--log-dir", str(tmp_path / "tb"))  # fmt: skip
    assert code == 0, err
    reg = open_registry(home)
    want = sorted([(r["epoch"], r["train_loss"]) for r in s.history] for s in records.query(reg))
    reg.close()
    got = sorted(_tensorboard_runs(tmp_path / "tb").values())
    assert [[e for e, _ in run] for run in got] == [[1, 2], [1, 2]]
    assert [[pytest.approx(v, rel=1e-6) for _, v in run] for run in got] == [[v for _, v in run] for run in want]


def test_the_api_without_pandas_is_one_line_naming_the_extra(world, monkeypatch):
    from starcli import api
    from starcli.errors import StarlightError

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(StarlightError, match=r"^starcli.api needs pandas: pip install 'starlight-landscapes\[pandas\]'$"):
        api.solutions()


def test_export_to_tensorboard_and_wandb_writes_history_and_the_pair_barrier(world, reg, tmp_path, cli, wandb_env):
    pytest.importorskip("tensorboard")
    ids, star = world
    sol = records.get(reg, star.id)
    code, out, err = cli("export", f"{ids[3]},{star.id}", "--to", "tensorboard", "--log-dir", str(tmp_path / "tb"))
    assert code == 0 and out.startswith("exported 2 solutions and 1 pairs to tensorboard"), err
    runs = _tensorboard_runs(tmp_path / "tb")
    [star_run] = [v for k, v in runs.items() if k.startswith("solution-" + str(star.id))]
    assert star_run == [(r["epoch"], pytest.approx(r["train_loss"], rel=1e-6)) for r in sol.history]
    stored = json.loads(cli("barriers", "--star", str(star.id), "--kind", "star-held-out", "--json")[1])[0]
    [barrier_series] = _tensorboard_runs(tmp_path / "tb", "test_loss_barrier").values()
    assert [v for _, v in barrier_series] == [pytest.approx(stored["test_loss_barrier"], rel=1e-6, abs=1e-7)]

    code, out, err = cli("export", str(star.id), "--to", "wandb", "--log-dir", str(tmp_path / "wb"), "--json")
    assert code == 0, err
    assert len(json.loads(out)["solutions"]) == 1 and json.loads(out)["pairs"] == []  # no pair among one solution
    [run_file] = (tmp_path / "wb").rglob("*.wandb")
    recs = finished_records(run_file.parent)
    assert _history(recs, "epoch/train_loss") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in sol.history]


def test_the_notebook_api_never_mixes_two_protocols(world, cli):
    """Rows measured under other settings (here: without alignment, 5 points) are another experiment: the API
    keeps the latest protocol by default, says what it left out, and gives every row on request."""
    pytest.importorskip("pandas")
    from starcli import api

    ids, star = world
    before = api.barriers(star=star.id)
    code, _, err = cli("barrier", "--star", str(star.id), "--held-out", str(ids[3]), "--align", "none", "--points", "5",
                       "--splits", "test")
    assert code == 0, err
    with pytest.warns(UserWarning, match="row\\(s\\) measured under 1 other setting"):
        latest = api.barriers(star=star.id)
    assert latest["settings_hash"].nunique() == 1 and set(latest["align"]) == {"none"}
    every = api.barriers(star=star.id, settings="all")
    assert len(every) == len(before) + len(latest) and every["settings_hash"].nunique() == 2
    old = api.barriers(star=star.id, settings=before["settings_hash"].iloc[0])
    assert old["settings_hash"].tolist() == before["settings_hash"].tolist()
    with pytest.raises(StarlightError, match="matches 0 of the stored settings"):
        api.barriers(star=star.id, settings="zzzz")


@pytest.mark.slow
def test_barrier_reads_several_stars_as_replicates_with_a_pooled_ci(world, reg, trained, cli):
    """`barrier --star S1,S2`: each star against the held-outs, the CI over the stars as replicates; stars that
    share an anchor are refused, and shared held-outs are said beside the CI."""
    from starcli.engine import evidence
    from starcli.engine.barriers import replicates_of
    from starcli.solutions import anchors
    from starcli.solutions.stars import build_star

    ids, star = world
    more = [o.solution.id for o in anchors.train(reg, trained[1], [5, 6], device="cpu")]
    other, _ = build_star(reg, more, epochs=2, seed=5, device="cpu")
    base = ["barrier", "--star", f"{star.id},{other.id}", "--held-out", str(ids[3]), "--points", "3", "--splits", "test",
            "--align", "none"]
    code, out, err = cli(*base, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [r["star"] for r in result["replicates"]] == [star.id, other.id]
    assert result["replicates"][1]["anchors"] == more
    expected = evidence.compare(replicates_of([r["pairs"] for r in result["replicates"]], "test"))
    assert result["evidence"]["test"]["ratio_ci"] == pytest.approx(expected["ratio_ci"])
    assert result["evidence"]["test"]["replicates"] == 2 and result["evidence"]["test"]["level"] == "replicates"
    code, out, err = cli(*base)
    assert code == 0 and "verdict 2, test: star/regular test loss barrier" in out and "2 replicates × 1 held-outs" in out
    assert "caution: the stars share their 1 held-outs" in out
    code, out, err = cli(*base, "--csv")
    assert code == 0 and out.splitlines()[0].startswith("star,a,b,kind")
    sharing, _ = build_star(reg, ids[:2], epochs=2, seed=6, device="cpu")
    before = len(api_rows(reg))
    code, out, err = cli("barrier", "--star", f"{star.id},{sharing.id}", "--held-out", str(ids[3]), "--points", "5",
                         "--splits", "test", "--align", "none")
    assert code == 1 and f"share anchor {ids[0]}: replicates need their own anchor sets" in err
    assert len(api_rows(reg)) == before  # refused before any pair was measured and stored


def api_rows(reg):
    from starcli.solutions.barriers import stored

    return stored(reg)


def test_a_held_out_that_is_a_copy_of_an_anchor_is_refused(world, reg, tmp_path, cli):
    """Registering an anchor's checkpoint file again gives a new id with the same weights: the star has seen it,
    so it is no held-out (it would be measured as star-held-out, silently wrong)."""
    import shutil

    ids, star = world
    anchor = records.get(reg, ids[0])
    path = tmp_path / "copy.safetensors"
    shutil.copy(reg.store.path(anchor.sha256), path)
    code, out, err = cli("register", str(path), "--arch", "mlp", "--dataset", "mnist1d", "--width", "32", "--json")
    assert code == 0, err
    copy_id = json.loads(out)["id"]
    code, out, err = cli("barrier", "--star", str(star.id), "--held-out", str(copy_id), "--points", "3", "--align", "none")
    assert code == 1 and out == ""
    assert f"held-out {copy_id} holds the same weights as solution {ids[0]}, which helped build star {star.id}" in err
