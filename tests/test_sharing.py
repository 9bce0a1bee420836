"""Sharing you can trust (issue 24): exports never overwrite, write through links or into the home, and
leave no partial file; imports check every row and blob first and add everything or nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from sqlmodel import select

from starcli.registry import BarrierResult, Solution, open_registry
from starcli.solutions import anchors as anchor_training
from starcli.solutions import barriers, bundles, stars


def state(reg) -> tuple:
    """Every row, and the sha256 of every file under the home: what a refused command must leave unchanged."""
    with reg.session() as s:
        rows = [r.model_dump() for r in s.exec(select(Solution).order_by(Solution.id))]
        bars = [r.model_dump() for r in s.exec(select(BarrierResult).order_by(BarrierResult.id))]
    files = {str(p.relative_to(reg.home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(reg.home.rglob("*")) if p.is_file() and not p.name.startswith("registry.db")}
    return rows, bars, files


@pytest.fixture
def source(reg, tiny_config):
    """Anchors 1-2, a held-out 3, a star 4 from 1-2, and its measured barriers."""
    ids = [o.solution.id for o in anchor_training.train(reg, tiny_config, [1, 2, 3])]
    star, _ = stars.build_star(reg, ids[:2], epochs=1)
    barriers.measure(reg, star=star.id, held_out=[ids[2]], points=3, splits=("train",))
    return star.id, ids


@pytest.fixture
def other(tmp_path):
    r = open_registry(tmp_path / "other")
    yield r
    r.close()


def one_error(code: int, err: str, expected: int = 2) -> None:
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


# --- exports -------------------------------------------------------------------------------------


def test_export_refuses_the_registry_database_and_anything_inside_the_home(reg, source, cli, home):
    star, _ = source
    before = state(reg)
    db = (home / "registry.db").read_bytes()
    for target in (home / "registry.db", home / "blobs" / "x.tar", home / "new.tar"):
        code, _, err = cli("export", "--bundle", str(target), str(star), "--force")
        one_error(code, err)
        assert "inside the registry" in err or (target.name == "registry.db" and "a .tar, .tar.gz or .tgz" in err)
    code, _, err = cli("export", "--hf", str(home / "hf"), str(star), "--force")
    one_error(code, err)
    assert (home / "registry.db").read_bytes() == db and state(reg) == before
    assert not (home / "new.tar").exists() and not (home / "hf").exists()


def test_export_never_overwrites_an_existing_file_without_force(reg, source, cli, tmp_path):
    star, _ = source
    target = tmp_path / "mine.tar"
    target.write_bytes(b"my own data")
    code, _, err = cli("export", "--bundle", str(target), str(star))
    one_error(code, err)
    assert "already exists" in err and "--force" in err
    assert target.read_bytes() == b"my own data"
    code, _, err = cli("export", "--bundle", str(target), str(star), "--force")
    assert code == 0, err
    assert tarfile.is_tarfile(target) and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["fifo", "link", "folder"])
def test_export_refuses_a_target_that_is_not_a_regular_file_even_with_force(reg, source, cli, tmp_path, kind):
    # /dev/null as a target is refused by the same check: it is not a regular file (a device node).
    star, _ = source
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    target = tmp_path / "t.tar"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link":
        target.symlink_to(secret)
    else:
        target.mkdir()
    code, _, err = cli("export", "--bundle", str(target), str(star), "--force")
    one_error(code, err)
    assert "name a new file" in err
    assert secret.read_text() == "secret"
    assert (target.is_fifo() if kind == "fifo" else target.is_symlink() if kind == "link" else target.is_dir())


def test_export_hf_never_writes_through_links_nor_overwrites_and_leaves_no_partial_file(reg, source, cli, tmp_path):
    star, _ = source
    folder = tmp_path / "hub"
    folder.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (folder / "config.json").symlink_to(secret)
    code, _, err = cli("export", "--hf", str(folder), str(star), "--force")
    one_error(code, err)
    assert "a link" in err and secret.read_text() == "secret"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]  # no model.safetensors written first
    (folder / "config.json").unlink()
    (folder / "config.json").write_text("{}")
    code, _, err = cli("export", "--hf", str(folder), str(star))
    one_error(code, err)
    assert "already exists" in err and (folder / "config.json").read_text() == "{}"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    code, _, err = cli("export", "--hf", str(folder), str(star), "--force")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_a_failed_export_leaves_neither_the_target_nor_a_temp_file(reg, source, tmp_path):
    star, _ = source
    sol_sha = reg.store.path(next(iter(state(reg)[0]))["sha256"])
    sol_sha.write_bytes(b"damaged")  # the blob read fails in the middle of writing the bundle
    with pytest.raises(Exception, match="corrupted"):
        bundles.export_bundle(reg, [star], tmp_path / "b.tar")
    assert list(tmp_path.glob("*b.tar*")) == []


@pytest.mark.parametrize("name, message", [
    ("b.zip", "a .tar, .tar.gz or .tgz"),
    ("b.tar.bz2", "a .tar, .tar.gz or .tgz"),
    ("", "needs a file name"),
])
def test_bundle_names_say_the_compression_or_are_refused(reg, source, cli, tmp_path, name, message):
    star, _ = source
    code, _, err = cli("export", "--bundle", str(tmp_path / name) if name else "", str(star))
    one_error(code, err)
    assert message in err and list(tmp_path.glob("b.*")) == []


def test_the_readme_export_example_runs_as_written(reg, source, cli, tmp_path, monkeypatch):
    star, ids = source
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("export", "--bundle", "stars.tar.gz", str(star), f"{ids[0]}-{ids[2]}")
    assert code == 0, err
    with tarfile.open(tmp_path / "stars.tar.gz", "r:gz") as tar:  # gzip, as the name says
        assert "manifest.json" in tar.getnames()
    code, out, err = cli("--home", str(tmp_path / "other"), "import", "stars.tar.gz")
    assert code == 0 and out.startswith("imported 4 new solution(s)"), err
