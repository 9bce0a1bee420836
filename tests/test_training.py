"""Training: reproducible, idempotent, resumable, and safe when the loss blows up."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starcli.errors import StarlightError
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records


def test_same_seed_and_config_give_a_byte_identical_checkpoint(tmp_path, tiny_config, monkeypatch, reg):
    first = anchor_training.train(reg, tiny_config, [1], device="cpu")[0].solution
    other_home = tmp_path / "other"
    monkeypatch.setenv("STARLIGHT_HOME", str(other_home))
    from starcli.registry import open_registry

    reg2 = open_registry(other_home)
    second = anchor_training.train(reg2, tiny_config, [1], device="cpu")[0].solution
    assert first.sha256 == second.sha256
    assert reg.store.path(first.sha256).read_bytes() == reg2.store.path(second.sha256).read_bytes()


def test_different_seeds_give_different_solutions(reg, tiny_config):
    a, b = (o.solution for o in anchor_training.train(reg, tiny_config, [1, 2], device="cpu"))
    assert a.sha256 != b.sha256 and (a.seed, b.seed) == (1, 2)


def test_a_trained_config_and_seed_is_skipped_not_retrained(reg, tiny_config):
    first = anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    again = anchor_training.train(reg, tiny_config, [2, 3], device="cpu")
    assert [o.trained for o in first] == [True, True]
    assert [o.trained for o in again] == [False, True]
    assert again[0].solution.id == first[1].solution.id
    assert len(records.query(reg)) == 3


def test_a_solution_records_the_settings_that_produced_it(reg, tiny_config):
    sol = anchor_training.train(reg, tiny_config, [4], device="cpu")[0].solution
    rec = records.record(reg, sol, full=True)
    assert rec["config"] == tiny_config
    assert rec["arch_kwargs"] == {"num_classes": 10, "in_chans": 1, "input_size": 40, "width": 32, "depth": 1}
    assert rec["width"] == 32 and rec["dataset"] == "mnist1d" and rec["recipe"] == "mnist1d-mlp"
    assert set(rec["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert {"torch", "timm", "starlight"} <= set(rec["versions"])
    # arch_kwargs are complete: they rebuild exactly the checkpoint's network.
    net = records.network(reg, sol)
    assert sum(p.numel() for p in net.parameters()) == 40 * 32 + 32 + 32 * 10 + 10


def test_a_diverging_run_stops_with_a_clear_error_and_registers_nothing(reg, tiny_config):
    config = dict(tiny_config, lr=1e12)
    with pytest.raises(StarlightError, match="loss became"):
        anchor_training.train(reg, config, [1], device="cpu")
    assert records.query(reg) == []
    assert not list((reg.home / "blobs").rglob("*.safetensors"))


def _cli(home: Path, *args: str) -> subprocess.Popen:
    # A resume file every epoch (the default is every 60 s): the kill lands between two of them.
    env = dict(os.environ, STARLIGHT_HOME=str(home), OMP_NUM_THREADS="1", STARLIGHT_RESUME_EVERY_S="0")
    return subprocess.Popen(
        [sys.executable, "-m", "starcli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_epoch_and_matches_an_uninterrupted_one(tmp_path, mnist1d_cache):
    import shutil

    args = ("train", "--seed", "5", "--width", "128", "--epochs", "150", "--json")
    homes = {}
    for name in ("killed", "clean"):
        homes[name] = tmp_path / name
        (homes[name] / "datasets").mkdir(parents=True)
        shutil.copy(mnist1d_cache, homes[name] / "datasets" / "mnist1d.npz")

    proc = _cli(homes["killed"], *args)
    deadline = time.time() + 120
    resume_files = []
    while time.time() < deadline and proc.poll() is None:
        resume_files = list((homes["killed"] / "runs").glob("*/last.safetensors")) if (homes["killed"] / "runs").exists() else []
        if resume_files:
            time.sleep(0.3)  # let a few more epochs finish
            break
        time.sleep(0.02)
    assert resume_files and proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    from safetensors import safe_open

    with safe_open(str(resume_files[0]), "pt") as f:
        resumed_from = int(f.metadata()["epoch"])
    assert 0 < resumed_from < 150

    import json

    resumed = _cli(homes["killed"], *args)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    clean = _cli(homes["clean"], *args)
    out2, err2 = clean.communicate(timeout=300)
    assert clean.returncode == 0, err2
    assert json.loads(out)[0]["sha256"] == json.loads(out2)[0]["sha256"]
    assert not list((homes["killed"] / "runs").glob("*/last.safetensors")), "the resume file is removed once registered"
    assert not list((homes["killed"] / "runs").glob("*/history.json")), "so is the history kept beside it"
    # The resumed run's stored history holds every epoch, the ones before the kill included, as the clean one's.
    hist = [json.loads(_cli(h, "history", json.loads(o)[0]["id"].__str__(), "--json").communicate(timeout=120)[0])
            for h, o in ((homes["killed"], out), (homes["clean"], out2))]  # fmt: skip
    assert [r["epoch"] for r in hist[0]] == list(range(1, 151)) and hist[0] == hist[1]
