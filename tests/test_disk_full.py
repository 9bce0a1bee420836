"""A full disk, for real: the home on a 3 MiB tmpfs filled to its last few KB.

Every writing command fails with one line that says to free space (no traceback, no exception name),
exits non-zero, changes no row and leaves no temp file; once space is freed the same command succeeds.
Mounting needs root (CAP_SYS_ADMIN): elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import faults

EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback")


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave_kib: int = 4) -> Path:
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
    subprocess.run(["fallocate", "-l", str(max(0, free - leave_kib * 1024)), str(filler)], check=True)
    return filler


def _rows(home: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{home / 'registry.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT * FROM solutions ORDER BY id").fetchall() + db.execute(
            "SELECT * FROM barriers ORDER BY id").fetchall()


@pytest.fixture
def full_home(tiny_disk, anchor_home):
    # Two anchors (ids 1, 2) and the dataset cache: a copy of the session's anchor_home (conftest), not a
    # training process per test; what is tested is the full disk the commands below meet.
    home = tiny_disk / "home"
    shutil.copytree(anchor_home((1, 2), "cpu"), home)
    rows = _rows(home)  # read while there is room: SQLite needs some for its shared-memory file
    return home, _fill(tiny_disk), rows


def _checkpoint(tmp_path: Path) -> Path:
    """A wide MLP's state dict (about 1 MiB) outside the full disk, to register."""
    code = (
        "import sys, torch; from starcli import models; torch.manual_seed(0); "
        "torch.save(models.create('mlp', width=4096, num_classes=10, in_chans=1, input_size=40).state_dict(), sys.argv[1])"
    )
    out = tmp_path / "wide.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out


COMMANDS = {
    "train": lambda tmp: ("train", "--seed", "7", "--width", "1024", "--epochs", "1"),
    "register": lambda tmp: ("register", str(_checkpoint(tmp)), "--arch", "mlp", "--arch-kwargs", '{"width": 4096}',
                             "--dataset", "mnist1d"),
    "star": lambda tmp: ("star", "--anchors", "1,2", "--epochs", "1"),
    "barrier": lambda tmp: ("barrier", "--pair", "1", "2", "--points", "5"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_is_one_line_changes_nothing_and_the_rerun_after_freeing_space_succeeds(command, full_home, tmp_path):
    home, filler, before = full_home
    args = COMMANDS[command](tmp_path)
    failed = faults.run(home, None, *args)
    assert failed.returncode != 0, failed.stdout
    last = failed.stderr.strip().splitlines()[-1]
    assert "space" in last and last.startswith("error:"), failed.stderr
    assert not EXCEPTION_NAME.search(failed.stderr), failed.stderr
    assert faults.leftovers(home) == []

    filler.unlink()
    assert _rows(home) == before
    again = faults.run(home, None, *args)
    assert again.returncode == 0, again.stderr
    assert len(_rows(home)) == len(before) + 1
    assert faults.leftovers(home) == []


def test_a_full_disk_while_the_dataset_cache_is_written_leaves_no_cache_a_later_run_would_trust(full_home, mnist1d_cache):
    home, filler, before = full_home
    cache = home / "datasets" / "mnist1d.npz"
    filler.unlink()
    cache.unlink()  # the next train regenerates MNIST-1D and writes the cache (~0.8 MB) onto the full disk
    filler = _fill(home.parent)
    args = ("train", "--seed", "7", "--width", "32", "--epochs", "1")
    failed = faults.run(home, None, *args)
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "space" in lines[0], failed.stderr
    assert not EXCEPTION_NAME.search(failed.stderr), failed.stderr
    assert sorted(p.name for p in (home / "datasets").iterdir()) == [], "no cache, whole or partial, stays behind"
    assert faults.leftovers(home) == []

    filler.unlink()
    assert _rows(home) == before
    again = faults.run(home, None, *args)
    assert again.returncode == 0, again.stderr
    assert len(_rows(home)) == len(before) + 1
    import numpy as np

    with np.load(cache) as made, np.load(mnist1d_cache) as reference:
        assert sorted(made.files) == sorted(reference.files)
        assert all(np.array_equal(made[k], reference[k]) for k in reference.files), "the rebuilt cache is whole"
