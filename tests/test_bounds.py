"""Every wait is bounded (issue 24): parameters that would make a command loop or spawn without end are
one-line usage errors before any work, on the command line and in sweep files alike."""

from __future__ import annotations

import time

import pytest


def one_line(code: int, err: str, fragment: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


@pytest.mark.parametrize("command", [
    ("star", "--anchors", "1-2", "--epochs", "1"),
    ("bma", "--star", "3"),
])
@pytest.mark.parametrize("scheme", ["beta:1e308,1e-308", "beta:1e308,1", "beta:1e-308,1", "beta:1,20000"])
def test_beta_parameters_outside_the_range_where_sampling_terminates_are_refused(home, cli, command, scheme):
    start = time.monotonic()
    code, _, err = cli(*command, "--t-sampling", scheme)
    one_line(code, err, "each from 0.001 to 10,000")
    assert time.monotonic() - start < 30 and not (home / "registry.db").exists()


def test_beta_sampling_at_the_edges_of_the_range_terminates():
    import random

    from starcli.engine.starlight import BETA_RANGE, TSampling

    rng = random.Random(0)
    for a in BETA_RANGE:
        for b in BETA_RANGE:
            t = TSampling.parse(f"beta:{a:g},{b:g}")
            assert all(0.0 <= t.draw(rng) <= 1.0 for _ in range(1000))


def test_a_sweep_file_is_held_to_the_same_beta_range_under_plan(home, cli, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('recipe = "mnist1d-mlp"\n[grid]\nwidths = [4]\nanchors = [2]\nheld_out_seeds = "11-12"\n'
                 'anchor_seeds = "1-3"\nt_sampling = ["beta:1e308,1e-308"]\n')
    code, _, err = cli("sweep", str(f), "--plan")
    one_line(code, err, "each from 0.001 to 10,000")


@pytest.mark.parametrize("command", [("train", "--recipe", "mnist1d-mlp", "--seed", "1-2")])
def test_jobs_is_bounded(home, cli, command):
    code, _, err = cli(*command, "--jobs", "100000")
    one_line(code, err, "--jobs must be at most 256")
    assert not (home / "registry.db").exists()
