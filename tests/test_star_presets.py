"""Star settings by name: the measured default ("solution") and the paper's, one flag away."""

from __future__ import annotations

import json

import pytest
import torch

from starcli.engine import data, starlight
from starcli.engine.interpolation import average
from starcli.engine.star_presets import STAR_PRESETS, star_settings
from starcli.errors import UsageError
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records


def test_presets_give_the_measured_default_and_the_papers_settings_with_flags_on_top():
    assert star_settings() == {"realign": True, "init": "anchor-mean", "mu_star": 1.0}
    assert star_settings("paper") == {"realign": False, "init": "random", "mu_star": 0.0}
    assert star_settings("paper", mu_star=0.5, realign=None) == dict(STAR_PRESETS["paper"], mu_star=0.5)
    with pytest.raises(UsageError, match="--preset must be one of solution, paper"):
        star_settings("best")


def test_an_anchor_mean_start_is_the_mean_of_the_anchors_each_aligned_to_the_first(reg, tiny_config):
    config = dict(tiny_config, epochs=1, lr=1e-12, momentum=0.0, weight_decay=0.0, warmup_epochs=0)
    ids = [o.solution.id for o in anchor_training.train(reg, tiny_config, [1, 2, 3])]
    states = [records.state_dict(reg, records.get(reg, i)) for i in ids]
    split = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=reg.home / "datasets")

    def swap_first_two_units(first, other):  # a stand-in alignment whose effect the mean must show
        out = dict(other)
        for name in ("layers.1.weight", "layers.1.bias"):
            out[name] = other[name][[1, 0, *range(2, len(other[name]))]]
        out["layers.3.weight"] = other["layers.3.weight"][:, [1, 0, *range(2, other["layers.3.weight"].shape[1])]]
        return out

    names = list(states[0])
    assert {"layers.1.weight", "layers.3.weight"} <= set(names)
    expected = average([states[0]] + [swap_first_two_units(states[0], s) for s in states[1:]])
    star = starlight.fit_star(
        config, states, 0, torch.device("cpu"), split, starlight.TSampling.parse("uniform"),
        realign=swap_first_two_units, init="anchor-mean",
    )
    got = star.state_dict()
    # One epoch at lr 1e-12 moves nothing measurable: the star is where it started.
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in names)
    with pytest.raises(UsageError, match="--init"):
        starlight.fit_star(config, states, 0, torch.device("cpu"), split, starlight.TSampling.parse("uniform"), init="zeros")


def test_star_defaults_to_the_solution_preset_and_records_it_while_paper_keeps_the_old_key(reg, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1, 2])
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--preset", "paper", "--json")
    assert code == 0, err
    paper = json.loads(out)
    stored = records.get(reg, paper["id"]).config["star"]
    assert stored["align_anchors"] is False and stored["mu_star"] == 0.0 and "init" not in stored
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--json")
    assert code == 0, err
    default = records.get(reg, json.loads(out)["id"]).config["star"]
    assert default["align_anchors"] is True and default["mu_star"] == 1.0 and default["init"] == "anchor-mean"
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--preset", "paper", "--mu-star", "0.5", "--json")
    assert code == 0 and records.get(reg, json.loads(out)["id"]).config["star"]["mu_star"] == 0.5
