"""The baselines the paper lacked: the aligned anchor average ("soup") and BMA over a star domain."""

import json
import shutil

import pytest
import torch

from starcli.engine import calibration, data
from starcli.errors import StarlightError
from starcli.experiments import baselines, bma
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records, soups


@pytest.fixture
def reg(home, request, anchor_home):
    """The test's registry: when the test uses `anchors`, a copy of conftest's `anchor_home((1, 2, 3), "cpu")`
    (trained once per session instead of once per test), else empty."""
    from starcli.registry import open_registry

    if "anchors" in request.fixturenames:
        shutil.copytree(anchor_home((1, 2, 3), "cpu"), home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def anchors(reg, tiny_config):
    found = sorted(records.query(reg, kind="anchor"), key=lambda sol: sol.seed)
    assert [sol.seed for sol in found] == [1, 2, 3]
    return found


@pytest.fixture
def untrained(reg, tiny_config):
    """Two registered anchors with initial weights: enough for the error paths, in milliseconds."""
    from starcli import models

    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = models.create(tiny_config["arch"], **tiny_config["arch_kwargs"])
        sol, _ = records.add(
            reg, net.state_dict(), key=f"untrained-{seed}", kind="anchor", arch=tiny_config["arch"],
            arch_kwargs=tiny_config["arch_kwargs"], width=32, seed=seed, dataset="mnist1d", config=tiny_config, metrics={},
        )
        out.append(sol)
    return out


def _hidden_permuted(state, perm, order):
    # mlp: the hidden layer is the first Linear (rows) feeding the last one (columns), in module order.
    names = [k for k in order if k.endswith("weight")]
    first, last = names[0], names[-1]
    bias = first.replace("weight", "bias")
    out = dict(state)
    out[first] = state[first][perm]
    out[bias] = state[bias][perm]
    out[last] = state[last][:, perm]
    return out


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.slow
def test_the_aligned_soup_of_a_network_and_its_permuted_copy_is_that_network(reg, anchors):
    a = anchors[0]
    state = records.state_dict(reg, a)
    perm = torch.randperm(a.width, generator=torch.Generator().manual_seed(0))
    order = list(records.network(reg, a).state_dict())
    copy, _ = records.add(
        reg, _hidden_permuted(state, perm, order), key="permuted-copy", kind="external", arch=a.arch, arch_kwargs=a.arch_kwargs,
        width=a.width, seed=None, dataset=a.dataset, config={}, metrics={},
    )
    aligned, created = soups.build_soup(reg, [a.id, copy.id], device="cpu")
    plain, _ = soups.build_soup(reg, [a.id, copy.id], align=False, device="cpu")
    x = data.load_split(a.dataset, "test", torch.device("cpu"), cache_dir=reg.home / "datasets").x[:64]
    reference = _outputs(records.network(reg, a), x)
    assert created and aligned.kind == "soup" and aligned.anchors == [a.id, copy.id]
    assert torch.allclose(_outputs(records.network(reg, aligned), x), reference, atol=1e-5)
    assert not torch.allclose(_outputs(records.network(reg, plain), x), reference, atol=1e-3)
    assert aligned.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-4)


def test_a_soup_is_registered_once_and_found_again_without_recomputing(reg, anchors, monkeypatch):
    ids = [s.id for s in anchors]
    first, created = soups.build_soup(reg, ids, device="cpu")
    monkeypatch.setattr(soups, "average", lambda *a: pytest.fail("the soup was recomputed"))
    again, created_again = soups.build_soup(reg, ids, device="cpu")
    assert created and not created_again and again.id == first.id
    assert first.source_id == ids[0] and first.config["soup"]["align"] is True
    assert set(first.metrics) == {"train_loss", "train_acc", "test_loss", "test_acc"}


def test_a_soup_needs_two_distinct_anchors_of_one_task(reg, anchors, tiny_config):
    with pytest.raises(StarlightError, match="at least 2 anchors"):
        soups.build_soup(reg, [anchors[0].id], device="cpu")
    with pytest.raises(StarlightError, match="listed twice"):
        soups.build_soup(reg, [anchors[0].id, anchors[0].id], device="cpu")
    wider = anchor_training.train(reg, dict(tiny_config, arch_kwargs=dict(tiny_config["arch_kwargs"], width=16)), [1], device="cpu")
    with pytest.raises(StarlightError, match="must share arch_kwargs"):
        soups.build_soup(reg, [anchors[0].id, wider[0].solution.id], device="cpu")


def test_calibration_of_a_confident_correct_predictor_is_perfect():
    y = torch.tensor([0, 1, 2, 1])
    probs = torch.nn.functional.one_hot(y, 3).float()
    m = calibration.calibration(probs, y)
    assert m["acc"] == 100.0 and m["nll"] < 1e-6 and m["ece"] < 1e-6
    assert m["auroc"] is None  # no wrong prediction to separate from the right ones


def test_auroc_matches_scikit_learn_including_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 10, (300,), generator=g).double()
    positive = torch.rand(300, generator=g) < 0.7
    assert calibration.auroc(score, positive) == pytest.approx(roc_auc_score(positive.numpy(), score.numpy()))


def test_ece_is_the_gap_between_confidence_and_accuracy():
    # Always 80% confident, right half the time: ECE = |0.8 − 0.5| = 30%.
    probs = torch.tensor([[0.8, 0.2]] * 4)
    y = torch.tensor([0, 1, 0, 1])
    assert calibration.calibration(probs, y)["ece"] == pytest.approx(30.0)


def test_bma_at_t_zero_is_the_center_alone_and_reports_every_predictor(reg, anchors):
    center, _ = soups.build_soup(reg, [s.id for s in anchors], device="cpu")
    result = bma.run(reg, center.id, samples=3, t_sampling="constant:0", device="cpu")
    methods = result["methods"]
    assert set(methods) == {"star", "anchor (mean of singles)", "deep ensemble", "bma"}
    assert methods["bma"] == pytest.approx(methods["star"])
    assert all(set(m) == {"acc", "nll", "ece", "auroc"} for m in methods.values())
    assert len(result["draws"]) == 3 and {d["anchor"] for d in result["draws"]} <= {s.id for s in anchors}
    uniform = bma.run(reg, center.id, samples=4, device="cpu")
    assert 0 <= uniform["methods"]["bma"]["acc"] <= 100 and uniform["methods"]["bma"] != methods["star"]


def test_bma_refuses_a_solution_without_anchors(reg, anchors):
    with pytest.raises(StarlightError, match="not a star"):
        bma.run(reg, anchors[0].id, samples=2, device="cpu")


def test_soup_command_registers_and_prints_json(anchors, cli):
    code, out, err = cli("soup", "--anchors", f"{anchors[0].id}-{anchors[-1].id}", "--device", "cpu", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["kind"] == "soup" and rec["anchors"] == [s.id for s in anchors]


def test_soup_align_is_spelled_as_barriers_and_keeps_the_keys_of_the_bool_form(reg, anchors, cli):
    ids = [s.id for s in anchors]
    span = f"{ids[0]}-{ids[-1]}"
    plain, _ = soups.build_soup(reg, ids, align=False, device="cpu")
    aligned, _ = soups.build_soup(reg, ids, align=True, device="cpu")
    found = {}
    for choice in ("none", "weight", "auto"):  # auto: weight, since the MLP has a permutation spec
        code, out, err = cli("soup", "--anchors", span, "--align", choice, "--device", "cpu", "--json")
        assert code == 0 and "already registered" in err, err
        found[choice] = json.loads(out)["id"]
    assert found == {"none": plain.id, "weight": aligned.id, "auto": aligned.id}


def test_bma_command_prints_the_comparison(reg, anchors, cli):
    center, _ = soups.build_soup(reg, [s.id for s in anchors], device="cpu")
    code, out, err = cli("bma", "--star", str(center.id), "--samples", "2", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 2


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (("soup",), 2, "give the anchors"),
        (("soup", "--anchors", "1-2", "--star", "3"), 2, "give the anchors"),
        (("soup", "--anchors", "1"), 1, "at least 2 anchors"),
        (("soup", "--anchors", "1,99"), 1, "no solution with id 99"),
        (("soup", "--anchors", "1-2", "--bn-calibration", "lots"), 2, "--bn-calibration"),
        (("soup", "--star", "1"), 1, "not a star"),
        (("bma", "--star", "99"), 1, "no solution with id 99"),
        (("bma", "--star", "1"), 1, "not a star"),
        (("bma", "--star", "1", "--samples", "0"), 2, "--samples"),
        (("bma", "--star", "1", "--t-sampling", "gauss"), 2, "--t-sampling"),
        (("report", "--star", "1", "--out", "r"), 1, "not a star"),
    ],
)
def test_experiment_commands_fail_with_one_line_and_leave_the_registry_untouched(untrained, cli, reg, args, code, needle):
    before = [(s.id, s.sha256) for s in records.query(reg)]
    got, out, err = cli(*args)
    assert got == code and needle in err and err.count("\n") == 1 and out == ""
    assert [(s.id, s.sha256) for s in records.query(reg)] == before


@pytest.fixture
def measured_star(reg, anchors, tiny_config):
    from starcli.solutions import barriers, stars

    held = anchor_training.train(reg, tiny_config, [11], device="cpu")[0].solution
    built, _ = stars.build_star(reg, [s.id for s in anchors], epochs=2, device="cpu")
    barriers.measure(reg, star=built.id, held_out=[held.id], points=5, align="weight", device="cpu")
    return built, held


@pytest.mark.slow
def test_soup_compares_its_held_out_barriers_with_the_stars(reg, measured_star):
    built, held = measured_star
    made, _ = soups.build_soup(reg, list(built.anchors), device="cpu")
    result = baselines.compare(reg, made.id, [held.id], star=built.id, device="cpu")
    assert [r["center"] for r in result["rows"]] == ["soup", "star", "regular (anchors)"]
    assert all(r["train loss barrier"] >= 0 for r in result["rows"]) and result["align"] == "weight"


@pytest.mark.slow
def test_a_star_report_reuses_the_measured_settings_and_compares_soup_and_ensemble(reg, measured_star, tmp_path, monkeypatch):
    from starcli.experiments import star_report
    from starcli.solutions import barriers

    built, held = measured_star
    real = barriers.compute_pairs
    computed = []
    monkeypatch.setattr(barriers, "compute_pairs", lambda reg, by_id, todo, *a, **k: computed.extend(todo) or real(reg, by_id, todo, *a, **k))
    result = star_report.write(reg, built.id, tmp_path / "r", samples=3, device="cpu")
    # The star's own pairs came from the cache (same 5-point aligned settings); only the soup's were new.
    soup_id = result["soup"]["id"]
    assert computed == [(soup_id, held.id)]
    text = (tmp_path / "r" / "report.md").read_text()
    for needle in (f"# Star {built.id}", "star-held-out", "regular-held-out", "soup-held-out", "deep ensemble", "bma", "## Anchors"):
        assert needle in text
    assert result["held_out"] == [held.id] and (tmp_path / "r" / "curves-train.png").stat().st_size > 1000
    assert set(result["files"]) >= {"report.md", "curves-train.png", "barriers.png"}


@pytest.mark.slow
def test_report_command_writes_the_report(measured_star, cli, tmp_path):
    built, held = measured_star
    code, out, err = cli("report", "--star", str(built.id), "--out", str(tmp_path / "rep"), "--samples", "2", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["report"].endswith("report.md") and (tmp_path / "rep" / "report.md").exists()
