"""barrier --align activation, --renorm and --definition end to end on a registry: each row carries its
protocol, earlier settings keep their hash (and cache), a new definition reads stored curves instead of
measuring again, and a policy that cannot apply is one line with the registry unchanged."""

from __future__ import annotations

import json

import pytest

from starcli.engine.barriers import barrier, endpoint_mean_barrier
from starcli.engine.recipes import config_hash
from starcli.registry import BarrierResult
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records


@pytest.fixture
def pair(reg, tiny_config):
    a, b = (o.solution for o in anchor_training.train(reg, tiny_config, [1, 2], device="cpu"))
    return a.id, b.id


def _rows(reg):
    with reg.session() as s:
        return list(s.query(BarrierResult).order_by(BarrierResult.id))


def _barrier(cli, a, b, *extra):
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--points", "5", "--splits", "train", *extra, "--json")
    assert code == 0, err
    return json.loads(out)


def test_each_row_carries_its_protocol_and_default_settings_keep_their_hash(cli, reg, pair):
    a, b = pair
    plain = _barrier(cli, a, b, "--align", "weight")
    legacy = {"points": 5, "splits": ["train"], "bn_calibration": "full", "batch_size": 4096, "align": "weight"}
    assert [r.settings_hash for r in _rows(reg)] == [config_hash(legacy)]  # as before issue 22
    assert _barrier(cli, a, b, "--align", "weight", "--renorm", "none") == plain  # the MLP's default: same row
    assert len(_rows(reg)) == 1

    repaired = _barrier(cli, a, b, "--align", "weight", "--renorm", "repair")
    assert repaired["settings"]["renorm"] == "repair" and len(_rows(reg)) == 2
    interior = lambda r: r["pairs"][0]["train"]["loss"][1:-1]  # noqa: E731
    assert interior(repaired) != interior(plain)
    # the endpoints are the solutions as stored: no correction at t = 0 and 1
    assert repaired["pairs"][0]["train"]["loss"][::4] == plain["pairs"][0]["train"]["loss"][::4]

    listed = json.loads(cli("barriers", "--json")[1])
    assert [(r["renorm"], r["definition"], r["temperature"]) for r in listed] == [("none", "eq1", 1.0), ("repair", "eq1", 1.0)]
    only = json.loads(cli("barriers", "--renorm", "repair", "--json")[1])
    assert [r["renorm"] for r in only] == ["repair"]
    assert {c["renorm"] for c in json.loads(cli("curves", f"{a}-{b}", "--renorm", "none", "--json")[1])} == {"none"}


def test_a_new_definition_reads_the_stored_curves_and_computes_its_own_barrier(cli, reg, pair):
    a, b = pair
    eq1 = _barrier(cli, a, b, "--align", "none")
    mean = _barrier(cli, a, b, "--align", "none", "--definition", "endpoint-mean")
    assert len(_rows(reg)) == 2 and _rows(reg)[1].result == _rows(reg)[0].result  # copied, not measured
    curve, t = mean["pairs"][0]["train"], mean["pairs"][0]["t"]
    assert curve["loss"] == eq1["pairs"][0]["train"]["loss"]
    assert curve["loss_barrier"] == endpoint_mean_barrier(curve["loss"])
    assert eq1["pairs"][0]["train"]["loss_barrier"] == barrier(t, curve["loss"])
    error = _barrier(cli, a, b, "--align", "none", "--definition", "error")
    assert error["pairs"][0]["train"]["connected"] == (error["pairs"][0]["train"]["acc_barrier"] < 2.0)
    assert [r["definition"] for r in json.loads(cli("barriers", "--definition", "error", "--json")[1])] == ["error"]


def test_activation_alignment_is_a_barrier_setting_of_its_own(cli, reg, pair):
    a, b = pair
    act = _barrier(cli, a, b, "--align", "activation", "--bn-calibration", "1000")
    assert act["settings"]["align"] == "activation" and act["settings"]["bn_calibration"] == 1000
    assert [r["align"] for r in json.loads(cli("barriers", "--align", "activation", "--json")[1])] == ["activation"]


@pytest.mark.parametrize("args,message", [
    (("--renorm", "reset"), "no BatchNorm"),
    (("--renorm", "bogus"), "--renorm must be one of"),
    (("--definition", "max"), "--definition must be one of"),
    (("--align", "activations"), "--align must be one of"),
])
def test_a_protocol_that_cannot_apply_is_one_line_and_stores_nothing(cli, reg, pair, args, message):
    a, b = pair
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--points", "3", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""
    assert _rows(reg) == []


def test_align_method_activation_registers_a_cached_copy_of_b_s_function(cli, reg, pair):
    a, b = pair
    code, out, err = cli("align", str(b), "--to", str(a), "--method", "activation", "--calibration", "1000", "--json")
    assert code == 0, err
    rec = records.record(reg, records.get(reg, json.loads(out)["id"]), full=True)
    assert rec["config"]["method"] == "activation_matching" and rec["config"]["calibration"] == 1000
    assert rec["metrics"]["l2_to_target"] <= rec["metrics"]["l2_to_target_unaligned"]
    code, out, _ = cli("align", str(b), "--to", str(a), "--method", "activation", "--calibration", "1000")
    assert code == 0 and "already aligned" in out
    code, out, _ = cli("align", str(b), "--to", str(a))  # weight matching: another copy, its key unchanged
    assert code == 0 and "weight matching" in out and len(records.query(reg)) == 4
    for bad, message in ((("--method", "act"), "--method must be one of"), (("--calibration", "0"), "--calibration")):
        code, out, err = cli("align", str(b), "--to", str(a), "--method", "activation", *bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert len(records.query(reg)) == 4


def test_temperature_divides_the_logits_of_the_loss_and_is_recorded(cli, reg, pair):
    import torch
    import torch.nn.functional as F

    from starcli.engine import data

    a, b = pair
    plain = _barrier(cli, a, b, "--align", "none")
    warm = _barrier(cli, a, b, "--align", "none", "--temperature", "2")
    assert warm["settings"]["temperature"] == 2.0 and len(_rows(reg)) == 2
    train = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=reg.home / "datasets")
    with torch.no_grad():
        logits = records.network(reg, records.get(reg, a)).eval()(train.x)
    assert warm["pairs"][0]["train"]["loss"][0] == pytest.approx(F.cross_entropy(logits / 2, train.y).item(), rel=1e-5)
    assert warm["pairs"][0]["train"]["acc"] == plain["pairs"][0]["train"]["acc"]
    assert [r["temperature"] for r in json.loads(cli("barriers", "--json")[1])] == [1.0, 2.0]
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--temperature", "0")
    assert code == 2 and "--temperature must be a positive number" in err and len(_rows(reg)) == 2
