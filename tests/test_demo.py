"""The demo states what its own run supports: replicates with their own seeds, the ratio with its CI, two
verdicts and a claim worded from that CI (the full-length demo is `make demo`; here the same pipeline with
2-epoch networks of width 4)."""

from __future__ import annotations

import json

import pytest

from starcli.engine import evidence
from starcli.engine.barriers import replicates_of
from starcli.experiments import demo as demo_module
from starcli.reports.barrier_text import claim, demo_report
from starcli.solutions import records


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory, mnist1d_cache):
    from starcli.registry import open_registry

    home = tmp_path_factory.mktemp("demo-home")
    reg = open_registry(home)
    out = home / "out"
    result = demo_module.demo(
        reg, out, device="cpu", jobs=1, train={"epochs": 1}, star={"epochs": 1}, points=3, width=4,
    )
    yield reg, out, result
    reg.close()


@pytest.mark.slow
def test_every_replicate_has_its_own_anchors_held_outs_and_star_seed(short_demo):
    reg, _, result = short_demo
    reps = result["replicates"]
    assert len(reps) == demo_module.REPLICATES
    seeds = [records.get(reg, i).seed for rep in reps for i in rep["anchors"] + rep["held_out"]]
    assert len(seeds) == len(set(seeds)) == demo_module.REPLICATES * (demo_module.ANCHORS + demo_module.HELD_OUTS)
    assert [records.get(reg, rep["star"]).seed for rep in reps] == list(range(demo_module.REPLICATES))


@pytest.mark.slow
def test_the_printed_ratio_and_ci_are_the_evidence_of_the_stored_pairs(short_demo):
    _, out, result = short_demo
    stored = json.loads((out / "barriers.json").read_text())
    reps = [r["star"] for r in result["replicates"]]
    pair_lists = [[p for p in stored["pairs"] if (p["kind"] == "star-held-out" and p["a"] == s) or
                   (p["kind"] == "regular-held-out" and p["a"] in rep["anchors"])]
                  for s, rep in zip(reps, result["replicates"])]
    expected = evidence.compare(replicates_of(pair_lists, "train"))
    assert result["evidence"]["train"]["ratio_ci"] == pytest.approx(expected["ratio_ci"])
    text = demo_report(result)
    low, high = expected["ratio_ci"]
    assert f"[{low:.3f}, {high:.3f}]" in text
    assert "verdict 1, the star is a solution: in" in text and "verdict 2, train:" in text and "verdict 2, test:" in text
    assert f"{demo_module.REPLICATES} replicates × {demo_module.HELD_OUTS} held-outs" in text
    assert text.count("claim:") == 1


@pytest.mark.parametrize(
    "ci, solutions, words",
    [((0.4, 0.7), 3, "claim: supported by this run"), ((0.4, 0.7), 2, "only partly supported"),
     ((0.8, 1.2), 3, "NOT supported by this run"), ((1.1, 1.3), 3, "NOT supported by this run")],
)
def test_the_claim_is_worded_from_the_ci_and_the_solution_verdicts(ci, solutions, words):
    found = {"ratio": sum(ci) / 2, "ratio_ci": list(ci), "replicates": 3, "held_outs": 18,
             "connects_better": evidence.connects_verdict(ci)}
    assert words in claim(found, solutions, 3)
