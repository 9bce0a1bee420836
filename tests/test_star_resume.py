"""Resumable stars: a star stopped after any epoch and run again ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from starcli.engine import data, loop, starlight
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records, stars


class Stop(Exception):
    pass


def _fit(config, states, split, resume, stop_after=None, realign=None, realign_every=1):
    def on_epoch(epoch, loss, acc):
        if epoch == stop_after:
            raise Stop

    sampling = starlight.TSampling.parse("beta:2,2")
    return starlight.fit_star(
        config, states, 3, torch.device("cpu"), split, sampling, samples_per_step=2, mu_star=0.5,
        realign=realign, on_epoch=on_epoch, resume=resume, realign_every=realign_every,
    )


# (re-align, every K epochs): K = 3 stops after epochs 2 and 4, i.e. between two re-alignments (at 0 and 3).
@pytest.mark.parametrize("align,every", [(False, 1), (True, 1), (True, 3)])
def test_a_star_stopped_after_an_epoch_resumes_to_the_same_bits(tmp_path, reg, tiny_config, align, every, monkeypatch):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "0")  # a file every epoch: each stop falls after one
    ids = [o.solution.id for o in anchor_training.train(reg, tiny_config, [1, 2], device="cpu")]
    sols = records.get_many(reg, ids)
    states = [records.state_dict(reg, s, torch.device("cpu")) for s in sols]
    config = dict(tiny_config, epochs=5)
    split = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=records.dataset_cache(reg))
    realign = stars.aligner(sols[0].arch, sols[0].arch_kwargs, 3) if align else None

    clean = _fit(config, states, split, None, realign=realign, realign_every=every).state_dict()
    resume = loop.ResumeFile(tmp_path / "run")
    with pytest.raises(Stop):
        _fit(config, states, split, resume, stop_after=2, realign=realign, realign_every=every)
    with pytest.raises(Stop):  # resumes at epoch 2 and stops again after epoch 4
        _fit(config, states, split, resume, stop_after=4, realign=realign, realign_every=every)
    assert int(safe_open(str(resume.tensors), "pt").metadata()["epoch"]) == 4
    resumed = _fit(config, states, split, resume, realign=realign, realign_every=every).state_dict()
    assert clean.keys() == resumed.keys()
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)
    # ...and resuming really skipped work: a fresh draw generator would have given other weights.
    fresh = loop.ResumeFile(tmp_path / "other")
    with pytest.raises(Stop):
        _fit(config, states, split, fresh, stop_after=2, realign=realign, realign_every=every)
    meta = safe_open(str(fresh.tensors), "pt").metadata()
    assert json.loads(meta["extra"])["draws"][1] != list(random.Random(starlight.STAR_SEED_OFFSET + 3).getstate()[1])
    # Only a star that re-aligns every K > 1 epochs carries the star its anchors were last aligned to.
    with safe_open(str(fresh.tensors), "pt") as f:
        carried = [k for k in f.keys() if k.startswith("extra." + starlight.ALIGNED_TO)]
    assert bool(carried) == (align and every > 1)


def test_re_aligning_every_k_epochs_is_another_star_than_every_epoch(tmp_path, reg, tiny_config):
    """K > 1 really skips re-alignments (so it must be keyed): other bits than K = 1; K = 1 is today's star."""
    ids = [o.solution.id for o in anchor_training.train(reg, tiny_config, [1, 2, 3], device="cpu")]
    sols = records.get_many(reg, ids)
    states = [records.state_dict(reg, s, torch.device("cpu")) for s in sols]
    config = dict(tiny_config, epochs=4)
    split = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=records.dataset_cache(reg))
    calls = []
    align = stars.aligner(sols[0].arch, sols[0].arch_kwargs, 3)

    def counted(star, anchor):
        calls.append(1)
        return align(star, anchor)

    every_epoch = _fit(config, states, split, None, realign=counted).state_dict()
    assert len(calls) == 4 * 3
    calls.clear()
    default = _fit(config, states, split, None, realign=counted, realign_every=1).state_dict()
    assert all(torch.equal(every_epoch[k], default[k]) for k in every_epoch)
    calls.clear()
    every_2 = _fit(config, states, split, None, realign=counted, realign_every=2).state_dict()
    assert len(calls) == 2 * 3  # at epochs 0 and 2
    assert any(not torch.equal(every_epoch[k], every_2[k]) for k in every_epoch)


def test_a_resume_file_write_leaves_no_temp_file_behind_when_it_fails(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    resume = loop.ResumeFile(tmp_path / "run")
    kept = {"aligned_to.weight": torch.arange(6.0).reshape(2, 3)}
    resume.save(net, opt, 1, {"draws": [1, 2]}, kept)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        resume.save(net, opt, 2)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.safetensors"]
    monkeypatch.undo()
    assert resume.load(net, opt, torch.device("cpu")) == 1 and resume.extra == {"draws": [1, 2]}
    assert resume.extra_tensors.keys() == kept.keys() and torch.equal(resume.extra_tensors["aligned_to.weight"], kept["aligned_to.weight"])


def _cli(home: Path, *args: str) -> subprocess.Popen:
    # A resume file every epoch (the default is every 60 s): the kill lands between two of them.
    env = dict(os.environ, STARLIGHT_HOME=str(home), OMP_NUM_THREADS="1", STARLIGHT_RESUME_EVERY_S="0")
    return subprocess.Popen(
        [sys.executable, "-m", "starcli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
# --realign-every 7: the kill most likely lands between two re-alignments (the file then carries their star).
@pytest.mark.parametrize("every", [(), ("--realign-every", "7")], ids=["every-epoch", "every-7"])
def test_a_star_killed_at_a_random_epoch_resumes_and_matches_an_uninterrupted_one(tmp_path, mnist1d_cache, every):
    base = tmp_path / "base"
    (base / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, base / "datasets" / "mnist1d.npz")
    trained = _cli(base, "train", "--seed", "1-2", "--width", "64", "--epochs", "2", "--json")
    assert trained.wait(timeout=120) == 0, trained.stderr.read()
    homes = {name: tmp_path / name for name in ("killed", "clean")}
    for h in homes.values():
        shutil.copytree(base, h)
    args = ("star", "--anchors", "1,2", "--epochs", "120", "--t-sampling", "beta:2,2", *every, "--json")

    proc = _cli(homes["killed"], *args)
    runs = homes["killed"] / "runs"
    deadline, resume_files = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None:
        resume_files = list(runs.glob("*/last.safetensors")) if runs.exists() else []
        if resume_files:
            time.sleep(0.2 + 0.5 * (os.getpid() % 7) / 7)  # a few more epochs, a different number each run
            break
        time.sleep(0.02)
    assert resume_files and proc.poll() is None, "the star finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with safe_open(str(resume_files[0]), "pt") as f:
        killed_at = int(f.metadata()["epoch"])
    assert 0 < killed_at < 120

    out, err = _cli(homes["killed"], *args).communicate(timeout=300)
    assert f"star from 2 anchors: started, resumed at {killed_at}/120" in err, err  # says where it resumed
    assert not list(runs.glob("*/last.safetensors")), "the resume file is removed once registered"
    out2, err2 = _cli(homes["clean"], *args).communicate(timeout=300)
    assert json.loads(out)["sha256"] == json.loads(out2)["sha256"], (err, err2)
