"""A sweep on one local worker pool (`--jobs 2`): every phase on workers started once, and the same
result as the sweep in one process: every checkpoint's bytes, every key, the anchors' and soups' ids,
every number of the report. Killed anywhere (a real process, SIGKILL), it resumes to the same bytes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from starcli.experiments import sweep as sweep_run
from starcli.experiments import sweep_file
from starcli.registry import open_registry
from starcli.runners.options import RunOptions
from starcli.solutions import records

ROOT = Path(__file__).resolve().parents[1]

# Three widths, so the pool's order (widest first) differs from the registration order; two star sizes,
# so several stars finish in any order; the paper's preset and weight matching as width-mnist1d uses.
_SWEEP = """
name = "pool"
recipe = "mnist1d-mlp"
[train]
epochs = {epochs}
[grid]
widths = [4, 8, 64]
anchor_seeds = "1-3"
anchors = [2, 3]
held_out_seeds = "11-12"
t_sampling = ["uniform"]
[star]
epochs = 2
preset = "paper"
[barriers]
points = 5
splits = ["train", "test"]
align = "weight"
[baselines]
soup = true
"""


def _sweep_file(tmp_path: Path, epochs: int = 3) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(_SWEEP.format(epochs=epochs))
    return path


def _registry(path: Path, mnist1d_cache: Path):
    reg = open_registry(path)
    (reg.home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, reg.home / "datasets" / "mnist1d.npz")
    return reg


def _solutions(reg) -> dict[str, tuple[int, str, str]]:
    """key → (id, kind, sha256) of every registered solution."""
    return {s.key: (s.id, s.kind, s.sha256) for s in records.query(reg)}


def _by_key(reg, rows: list[dict]) -> list[dict]:
    """pairs.csv rows with solution ids replaced by keys (a star's id is the order the stars finished in)."""
    key = {str(s.id): s.key for s in records.query(reg)}
    return [{k: key.get(v, v) if k in ("a", "b", "star") else v for k, v in r.items()}
            for r in rows]


def _report(folder: Path) -> tuple[list[dict], list[dict]]:
    summary = [{k: v for k, v in r.items() if k not in ("star", "soup")} for r in csv.DictReader((folder / "summary.csv").open())]
    return summary, list(csv.DictReader((folder / "pairs.csv").open()))


@pytest.mark.slow
def test_a_sweep_on_a_worker_pool_equals_the_sweep_in_one_process(tmp_path, mnist1d_cache, monkeypatch):
    spec = sweep_file.load(str(_sweep_file(tmp_path)))
    here = _registry(tmp_path / "here", mnist1d_cache)
    pooled = _registry(tmp_path / "pooled", mnist1d_cache)
    # A library caller whose torch runs another thread count than $OMP_NUM_THREADS says (torch's default is
    # one per core): the pool's workers must compute with the caller's count, or the width-64 anchors'
    # matrix products round differently there (found at stop 28 as a pooled sweep differing bit for bit).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = sweep_run.run(here, spec, tmp_path / "here-out", device="cpu")
        two = sweep_run.run(pooled, spec, tmp_path / "pool-out", device="cpu", run=RunOptions(jobs=2))
    finally:
        torch.set_num_threads(threads)

    assert two["computed"] == one["computed"] == {"training_runs": 15, "stars": 6, "soups": 6, "barrier_pairs": 42}
    a, b = _solutions(here), _solutions(pooled)
    assert a.keys() == b.keys() and len(a) == 15 + 6 + 6
    assert {k: sha for k, (_, _, sha) in a.items()} == {k: sha for k, (_, _, sha) in b.items()}
    # Anchors are registered in the sequential order whichever worker finished first (their ids key the
    # stars), and the soups after the stars; only the stars' ids follow the order they finished in.
    assert {k: i for k, (i, kind, _) in a.items() if kind != "star"} == {k: i for k, (i, kind, _) in b.items() if kind != "star"}
    assert sorted(i for i, kind, _ in a.values() if kind == "star") == sorted(i for i, kind, _ in b.values() if kind == "star")
    assert [c["summary"] for c in one["cells"]] == [c["summary"] for c in two["cells"]]
    summary_one, pairs_one = _report(tmp_path / "here-out")
    summary_two, pairs_two = _report(tmp_path / "pool-out")
    assert summary_one == summary_two
    assert sorted(map(json.dumps, _by_key(here, pairs_one))) == sorted(map(json.dumps, _by_key(pooled, pairs_two)))
    here.close()
    pooled.close()


def _sweep_process(home: Path, path: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "starcli", "--home", str(home), "--quiet", "sweep", str(path), "--jobs", "2",
         "--device", "cpu", "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _count(home: Path, kind: str | None = None) -> int:
    db = home / "registry.db"
    if not db.exists():
        return 0
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as con:
            sql = "select count(*) from solutions" + (" where kind = ?" if kind else "")
            return con.execute(sql, (kind,) if kind else ()).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_pooled_sweep_killed_in_training_and_in_its_stars_resumes_to_the_same_bytes(tmp_path, mnist1d_cache):
    path = _sweep_file(tmp_path, epochs=12)
    reference = _registry(tmp_path / "reference", mnist1d_cache)
    # The CLI runs below train with the thread policy's one intra-op thread; the reference here must too,
    # since torch's default (one thread per core) sums some reductions in another order (other bits).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep_run.run(reference, sweep_file.load(str(path)), tmp_path / "ref-out", device="cpu")
    finally:
        torch.set_num_threads(threads)
    home = tmp_path / "killed"
    _registry(home, mnist1d_cache).close()

    # Killed while training (some resume folders, not all anchors), then once the first star is registered.
    for ready in (lambda: any((home / "runs").glob("*/*")) and _count(home) < 15, lambda: _count(home, "star") >= 1):
        proc = _sweep_process(home, path, tmp_path / "out")
        deadline = time.monotonic() + 300
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()[-400:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _sweep_process(home, path, tmp_path / "out")
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-400:]

    resumed = open_registry(home)
    assert {k: (kind, sha) for k, (_, kind, sha) in _solutions(resumed).items()} == {
        k: (kind, sha) for k, (_, kind, sha) in _solutions(reference).items()
    }
    assert _report(tmp_path / "out")[0] == _report(tmp_path / "ref-out")[0]
    assert not [p for p in (home / "runs").glob("*/*")] if (home / "runs").exists() else True
    resumed.close()
    reference.close()
