"""A star is keyed by what its anchors are: their keys, drawn in (seed, key) order, never their registry ids.

So the same anchors in another registry (a cluster's database, an imported bundle) give the same star key
and bits, `--anchors 3,1,2` is `--anchors 1,2,3`, and a registry's older stars (keyed by sorted ids) are
still found.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from starcli.engine import data, evaluation, starlight
from starcli.engine.recipes import config_hash
from starcli.registry import Solution, open_registry
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records, stars


def _train(reg, config, seeds) -> list[int]:
    return [o.solution.id for o in anchor_training.train(reg, config, seeds, device="cpu")]


def _reference_key(config: dict, seed: int, anchor_keys: list[str]) -> str:
    # Written out by hand: the star's config with its anchor ids replaced by the anchors' keys.
    return config_hash({"kind": "star", "config": {**config, "star": {**config["star"], "anchors": anchor_keys}}, "seed": seed})


def _legacy_key(config: dict, seed: int) -> str:
    # The key every star had before: the recorded config as is, anchors as sorted ids.
    return config_hash({"kind": "star", "config": {**config, "star": {**config["star"], "anchors": sorted(config["star"]["anchors"])}}, "seed": seed})


def _rekey(reg, sid: int, key: str, anchors: list[int] | None = None) -> None:
    with reg.session() as s:
        row = s.get(Solution, sid)
        row.key = key
        if anchors is not None:
            row.anchors = anchors
        s.add(row)
        s.commit()


def test_anchors_registered_in_another_order_elsewhere_give_the_same_star_key_and_bits(reg, tiny_config, tmp_path):
    config = dict(tiny_config, epochs=1)
    here = _train(reg, config, [1, 2, 3])
    there = open_registry(tmp_path / "there")
    shutil.copytree(reg.home / "datasets", there.home / "datasets")
    by_seed = {}
    for seed in (3, 1, 2):  # registered out of seed order: ids 1, 2, 3 are seeds 3, 1, 2 there
        by_seed[seed] = _train(there, config, [seed])[0]
    star_here, _ = stars.build_star(reg, here, seed=2, device="cpu")
    star_there, created = stars.build_star(there, list(by_seed.values()), seed=2, device="cpu")
    assert created
    assert star_there.anchors == [by_seed[1], by_seed[2], by_seed[3]] == [2, 3, 1]  # drawn in seed order
    assert star_here.anchors == here
    assert star_there.key == star_here.key and star_there.sha256 == star_here.sha256
    keys = [a.key for a in records.get_many(reg, here)]
    assert star_here.key == _reference_key(star_here.config, 2, keys)
    assert star_here.key != _legacy_key(star_here.config, 2)
    there.close()


def test_anchors_registered_in_seed_order_are_drawn_in_id_order_as_before(reg, tiny_config):
    # The demo's and the sweeps' stars (anchors registered in seed order) keep their bits: the star equals
    # Algorithm 1 run directly on the anchors in id order.
    ids = _train(reg, dict(tiny_config, epochs=1), [1, 2, 3])
    star, _ = stars.build_star(reg, [3, 1, 2], epochs=1, seed=5, device="cpu")
    plan = stars.plan_star(reg, stars.StarSpec(anchor_ids=ids, epochs=1, seed=5))
    cpu = torch.device("cpu")
    split = data.load_split(plan.config["dataset"], "train", cpu, cache_dir=reg.home / "datasets")
    states = [records.state_dict(reg, records.get(reg, i)) for i in sorted(ids)]
    model = starlight.fit_star(plan.config, states, 5, cpu, split, starlight.TSampling.parse("uniform"))
    evaluation.recalibrate_bn(model, split.x)
    stored = records.state_dict(reg, star)
    assert stored.keys() == model.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())


def test_anchors_given_in_any_order_on_the_command_line_are_the_same_star(reg, tiny_config, cli):
    _train(reg, dict(tiny_config, epochs=1), [1, 2, 3])
    code, out, err = cli("star", "--anchors", "3,1,2", "--epochs", "1", "--preset", "paper", "--device", "cpu")
    assert code == 0, err
    code, again, err = cli("star", "--anchors", "1,2,3", "--epochs", "1", "--preset", "paper", "--device", "cpu")
    assert code == 0 and again.startswith("already registered: star 4 from anchors 1,2,3"), (again, err)
    assert len(records.query(reg, kind="star")) == 1


def test_a_star_registered_under_the_old_id_key_is_still_found(reg, tiny_config):
    ids = _train(reg, dict(tiny_config, epochs=1), [1, 2])
    star, _ = stars.build_star(reg, ids, epochs=1, device="cpu")
    _rekey(reg, star.id, _legacy_key(star.config, 0))  # as an older starlight registered it
    again, created = stars.build_star(reg, list(reversed(ids)), epochs=1, device="cpu")
    assert not created and again.id == star.id and len(records.query(reg, kind="star")) == 1


def test_an_old_id_key_whose_anchors_are_other_solutions_is_not_this_star(reg, tiny_config):
    # An imported bundle's old star keeps its key, whose ids meant other solutions where it was built.
    ids = _train(reg, dict(tiny_config, epochs=1), [1, 2, 3])
    star, _ = stars.build_star(reg, ids[1:], epochs=1, device="cpu")
    config = dict(star.config, star=dict(star.config["star"], anchors=ids[:2]))
    _rekey(reg, star.id, _legacy_key(config, 0))
    other, created = stars.build_star(reg, ids[:2], epochs=1, device="cpu")
    assert created and other.id != star.id and other.anchors == ids[:2]


def test_realign_every_1_keeps_the_key_of_every_star_built_before_it_and_k_enters_the_key(reg, tiny_config):
    ids = _train(reg, dict(tiny_config, epochs=1), [1, 2])
    keys = [a.key for a in records.get_many(reg, ids)]
    before = stars.plan_star(reg, stars.StarSpec.preset(anchor_ids=ids, epochs=2))
    every_1 = stars.plan_star(reg, stars.StarSpec.preset(anchor_ids=ids, epochs=2, realign_every=1))
    every_5 = stars.plan_star(reg, stars.StarSpec.preset(anchor_ids=ids, epochs=2, realign_every=5))
    assert "realign_every" not in before.config["star"] and every_1.config == before.config
    assert every_1.key == before.key == _reference_key(before.config, 0, keys)
    assert every_5.config["star"] == dict(before.config["star"], realign_every=5)
    assert every_5.key == _reference_key(every_5.config, 0, keys) != before.key


def test_a_star_that_re_aligns_every_k_epochs_stores_k_and_is_algorithm_1_with_that_k(reg, tiny_config, cli):
    import json

    ids = _train(reg, dict(tiny_config, epochs=1), [1, 2, 3])
    code, out, err = cli("star", "--anchors", "1-3", "--epochs", "3", "--realign-every", "2", "--json")
    assert code == 0, err
    star = records.get(reg, json.loads(out)["id"])
    assert star.config["star"]["realign_every"] == 2 and star.config["star"]["align_anchors"] is True
    cpu = torch.device("cpu")
    split = data.load_split(star.config["dataset"], "train", cpu, cache_dir=reg.home / "datasets")
    states = [records.state_dict(reg, records.get(reg, i)) for i in ids]
    sol = records.get(reg, ids[0])
    model = starlight.fit_star(star.config, states, 0, cpu, split, starlight.TSampling.parse("uniform"), mu_star=1.0,
                               realign=stars.aligner(sol.arch, sol.arch_kwargs, 0), init="anchor-mean", realign_every=2)
    evaluation.recalibrate_bn(model, split.x)
    stored = records.state_dict(reg, star)
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    code, again, err = cli("star", "--anchors", "1-3", "--epochs", "3", "--realign-every", "1")
    assert code == 0 and again.startswith("built star 5"), (again, err)  # K = 1 is another star


@pytest.mark.parametrize("args,says", [
    (("--realign-every", "0"), "--realign-every must be an integer from 1 to 100,000, got 0"),
    (("--preset", "paper", "--realign-every", "3"), "re-alignment is off"),
    (("--no-realign", "--realign-every", "2"), "add --realign or leave --realign-every out"),
])
def test_a_bad_realign_every_is_one_line_and_builds_nothing(reg, tiny_config, cli, args, says):
    _train(reg, dict(tiny_config, epochs=1), [1, 2])
    before = (reg.home / "registry.db").read_bytes()
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", *args)
    assert code != 0 and out == "" and err.count("\n") == 1 and says in err and "Traceback" not in err, err
    assert (reg.home / "registry.db").read_bytes() == before  # not a row, not a page written
    assert records.query(reg, kind="star") == []


def test_a_sweep_files_star_table_takes_realign_every_by_the_same_rules():
    from starcli.errors import UsageError
    from starcli.experiments import sweep_file

    table = {"recipe": "mnist1d-mlp", "grid": {"widths": [8], "anchor_seeds": "1-2", "held_out_seeds": "3"}}
    sweep = sweep_file.parse({**table, "star": {"realign_every": 4}})
    assert sweep.star == {"realign_every": 4}
    from starcli.experiments.sweep import _star_spec

    spec = _star_spec(sweep, sweep.cells()[0], [1, 2])  # what the sweep builds: the default preset, every 4 epochs
    assert (spec.realign, spec.realign_every) == (True, 4)
    with pytest.raises(UsageError, match=r"\[star\] realign_every must be an integer from 1"):
        sweep_file.parse({**table, "star": {"realign_every": 0}})
    with pytest.raises(UsageError, match=r"\[star\] realign_every 2 says how often .* re-alignment is off"):
        sweep_file.parse({**table, "star": {"preset": "paper", "realign_every": 2}})
