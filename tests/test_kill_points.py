"""A training killed (SIGKILL, a real process) at each named point of the write path, then run again.

Whatever the point, the rerun exits 0 with the checkpoint an uninterrupted run makes (same sha256), one
row, no temp file, no runs/<key>/ folder, and no orphan blob: a kill loses nothing and leaves nothing behind.
The faults are injected by tests/faults.py from outside the product.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

import faults

TRAIN = ("train", "--seed", "3", "--width", "32", "--epochs", "3", "--json")


def _home(tmp_path: Path, name: str, mnist1d_cache: Path) -> Path:
    home = tmp_path / name
    (home / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    return home


def _rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "registry.db") as db:
        return db.execute("SELECT id, kind, seed, sha256 FROM solutions ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def clean_sha(tmp_path_factory, mnist1d_cache) -> str:
    home = _home(tmp_path_factory.mktemp("clean"), "home", mnist1d_cache)
    done = faults.run(home, None, *TRAIN)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("point", faults.POINTS)
def test_a_train_killed_at_a_named_point_reruns_to_the_uninterrupted_checkpoint(point, tmp_path, mnist1d_cache, clean_sha, cli, monkeypatch):
    home = _home(tmp_path, "home", mnist1d_cache)
    killed = faults.run(home, point, *TRAIN)
    assert killed.returncode == -9, f"the fault at {point} never fired: {killed.stderr}"

    again = faults.run(home, None, *TRAIN)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    (sol,) = json.loads(again.stdout)
    assert sol["sha256"] == clean_sha
    rows = _rows(home)
    assert [(r[1], r[2], r[3]) for r in rows] == [("anchor", 3, clean_sha)]
    assert faults.leftovers(home) == []
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], f"left in runs/: {list(runs.iterdir())}"
    blobs = sorted(p.name for p in (home / "blobs").rglob("*.safetensors"))
    assert blobs == [clean_sha[2:] + ".safetensors"], "one blob, the row's: nothing orphaned"

    # doctor agrees there is nothing to collect, and a third run skips as registered. Both in this process:
    # only a kill needs a process of its own, and each spawn costs a Python + torch start (seconds of CPU).
    for name in ("STARLIGHT_DB_URL", "STARLIGHT_STORE_URL", "STARLIGHT_DATA_DIR"):  # as faults.run clears them
        monkeypatch.delenv(name, raising=False)
    code, out, err = cli("--home", str(home), "doctor", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["orphan_checkpoints_found"] == [] and report["stale_runs_found"] == [], report
    code, _, err = cli("--home", str(home), *TRAIN)
    assert code == 0 and "already registered" in err
    assert _rows(home) == rows


STAR = ("star", "--anchors", "1,2", "--epochs", "3", "--json")


@pytest.fixture(scope="module")
def anchored(tmp_path_factory, mnist1d_cache) -> Path:
    """A home with two trained anchors (seeds 1, 2), copied for each star test."""
    home = _home(tmp_path_factory.mktemp("anchored"), "home", mnist1d_cache)
    made = faults.run(home, None, "train", "--seed", "1-2", "--width", "32", "--epochs", "3")
    assert made.returncode == 0, made.stderr
    return home


def _copy(home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "star-home"
    shutil.copytree(home, copy)
    return copy


@pytest.fixture(scope="module")
def clean_star_sha(anchored, tmp_path_factory) -> str:
    done = faults.run(_copy(anchored, tmp_path_factory.mktemp("clean-star")), None, *STAR)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("point", faults.POINTS)
def test_a_star_killed_at_a_named_point_reruns_to_the_uninterrupted_star(point, anchored, tmp_path, clean_star_sha):
    home = _copy(anchored, tmp_path)
    anchors_before = _rows(home)
    killed = faults.run(home, point, *STAR)
    assert killed.returncode == -9, f"the fault at {point} never fired: {killed.stderr}"

    again = faults.run(home, None, *STAR)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["sha256"] == clean_star_sha
    assert _rows(home) == anchors_before + [(3, "star", 0, clean_star_sha)]
    assert faults.leftovers(home) == []
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], f"left in runs/: {list(runs.iterdir())}"
    blobs = sorted(p.name for p in (home / "blobs").rglob("*.safetensors"))
    assert blobs == sorted(r[3][2:] + ".safetensors" for r in _rows(home)), "one blob per row: nothing orphaned"


def _swap_recorded_seconds(resume_file: Path, seconds: str | None) -> str | None:
    """Replace the seconds a resume file recorded (None: drop the field, as files written before it
    existed); returns what it held. Tensors and every other field stay as they were."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(resume_file), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    recorded = meta.pop("seconds", None)
    if seconds is not None:
        meta["seconds"] = seconds
    save_file(tensors, str(resume_file), metadata=meta)
    return recorded


@pytest.mark.slow
@pytest.mark.parametrize("earlier", ["1000.0", None], ids=["recorded", "old-resume-file"])
def test_a_resumed_train_reports_the_wall_seconds_of_all_its_segments(earlier, tmp_path, mnist1d_cache, clean_sha):
    home = _home(tmp_path, "home", mnist1d_cache)
    began = time.perf_counter()
    killed = faults.run(home, "resume-write", *TRAIN)  # dies saving epoch 2: epoch 1 is on file
    first_segment = time.perf_counter() - began
    assert killed.returncode == -9, killed.stderr
    (resume_file,) = (home / "runs").glob("*/last.safetensors")
    # Stand in a known figure for the killed segment's time, so the sum can be told from the last segment alone.
    recorded = float(_swap_recorded_seconds(resume_file, earlier))
    assert 0 < recorded < first_segment, "the file records the time its epochs took"

    began = time.perf_counter()
    again = faults.run(home, None, *TRAIN)
    last_segment = time.perf_counter() - began
    assert again.returncode == 0, again.stderr
    (sol,) = json.loads(again.stdout)
    assert sol["sha256"] == clean_sha, "the clock changes no bit of the checkpoint"
    if earlier is None:  # a resume file from before the clock still resumes; its earlier time is unknown (0)
        assert 0 < sol["wall_seconds"] < last_segment
    else:
        assert 1000.0 < sol["wall_seconds"] < 1000.0 + last_segment


def test_opening_the_registry_collects_a_dead_writers_temp_file_but_never_a_live_ones(home):
    import fcntl
    import subprocess
    import sys

    from starcli.registry import open_registry

    open_registry(home).close()
    folder = home / "blobs" / "sha256" / "ab"
    folder.mkdir(parents=True)
    dead, live = folder / ".tmp-dead.safetensors", folder / ".tmp-live.safetensors"
    dead.write_bytes(b"half a blob")
    live.write_bytes(b"being written")
    # A live writer in another process holds the lock on its temp file until the rename.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        open_registry(home).close()
        assert not dead.exists(), "a temp file no writer holds is a killed writer's: collected on open"
        assert live.exists(), "a live writer's temp file is never touched"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with open(live, "rb") as f:  # once its writer is gone, it is the next opener's to collect
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    open_registry(home).close()
    assert not live.exists()
