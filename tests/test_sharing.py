"""Sharing you can trust (issue 24): exports never overwrite, write through links or into the home, and
leave no partial file; imports check every row and blob first and add everything or nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from sqlmodel import select

from starcli.registry import BarrierResult, Solution, open_registry
from starcli.solutions import anchors as anchor_training
from starcli.solutions import barriers, bundles, stars
from star_copies import reg, source  # noqa: F401  (fixtures: a copy of the session's star registry)


def state(reg) -> tuple:
    """Every row, and the sha256 of every file under the home: what a refused command must leave unchanged."""
    with reg.session() as s:
        rows = [r.model_dump() for r in s.exec(select(Solution).order_by(Solution.id))]
        bars = [r.model_dump() for r in s.exec(select(BarrierResult).order_by(BarrierResult.id))]
    files = {str(p.relative_to(reg.home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(reg.home.rglob("*")) if p.is_file() and not p.name.startswith("registry.db")}
    return rows, bars, files


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


# --- imports -------------------------------------------------------------------------------------


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def exported(reg, source, tmp_path) -> dict[str, bytes]:
    """The members of a bundle of the star 4 (anchors 1-2) and the held-out 3, with their barrier rows."""
    star, ids = source
    bundles.export_bundle(reg, [star, ids[2]], tmp_path / "good.tar")
    return members_of(tmp_path / "good.tar")


def with_manifest(members: dict[str, bytes], change) -> dict[str, bytes]:
    manifest = json.loads(members["manifest.json"])
    change(manifest)
    return {**members, "manifest.json": json.dumps(manifest).encode()}


def refused_import(cli, other, path: Path, message: str) -> None:
    before = state(other)
    code, _, err = cli("--home", str(other.home), "import", str(path))
    one_error(code, err, 1)
    assert message in err, err
    assert state(other) == before


def _set(field, value, row=0):
    def change(m):
        m["solutions"][row][field] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("metrics", [1, 2]), "solutions[0].metrics"),
    (_set("kind", "trojan"), "solutions[0].kind"),
    (_set("arch", "../../etc/passwd"), "solutions[0].arch"),
    (_set("dataset", "/tmp/x"), "solutions[0].dataset"),
    (_set("key", "a" * 100_000), "solutions[0].key"),
    (_set("note", "n" * 5_000_000), "solutions[0].note"),
    (_set("seed", -1), "solutions[0].seed"),
    (_set("created_at", "yesterday"), "not an ISO date"),
    (_set("smuggled", 1), "solutions[0].smuggled"),
    (_set("config", {"x": "y" * (2 << 20)}, row=-1), "config"),
    (lambda m: m["barriers"][0].update(result=[1]), "barriers[0].result"),
    (lambda m: m["solutions"].append(dict(m["solutions"][0])), "share an id or a key"),
    (lambda m: m["barriers"][0].update(a_id=999), "which the bundle lacks"),
    (lambda m: m["solutions"][-1].update(anchors=m["solutions"][-1]["anchors"][:1]), "a star has at least 2 anchors"),
    (lambda m: m["solutions"][0].update(metrics={"train_acc": "99"}), "solutions[0].metrics.train_acc"),
])
def test_import_checks_the_manifest_against_its_schema_and_imports_nothing(exported, cli, other, tmp_path, change, message):
    path = write_tar(tmp_path / "bad.tar", with_manifest(exported, change))
    refused_import(cli, other, path, message)


def _replace_blob(members: dict[str, bytes], row: int, data: bytes) -> dict[str, bytes]:
    """The bundle with solution `row`'s checkpoint replaced by `data` (its sha256 updated to match)."""
    sha = hashlib.sha256(data).hexdigest()
    out = with_manifest(members, _set("sha256", sha, row))
    return {**out, f"blobs/{sha}.safetensors": data}


def test_import_refuses_a_checkpoint_that_is_not_safetensors_even_in_the_last_row(exported, cli, other, tmp_path):
    import torch

    pickled = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, pickled)  # a pickle stored under a .safetensors name
    path = write_tar(tmp_path / "bad.tar", _replace_blob(exported, -1, pickled.getvalue()))
    refused_import(cli, other, path, "is not a safetensors file")


def test_import_refuses_a_checkpoint_that_does_not_fit_its_rows_architecture(exported, cli, other, tmp_path):
    from safetensors.torch import load, save

    tensors = load(exported[f"blobs/{json.loads(exported['manifest.json'])['solutions'][-1]['sha256']}.safetensors"])
    name = next(iter(tensors))
    tensors[name] = tensors[name][:1].clone()  # one row of the first layer: safetensors, but not this network
    path = write_tar(tmp_path / "bad.tar", _replace_blob(exported, -1, save(tensors)))
    refused_import(cli, other, path, "does not fit mlp")


def test_import_refuses_a_member_that_expands_over_the_limit_before_reading_it(exported, cli, other, tmp_path):
    huge = b" " * (bundles.MAX_MANIFEST_BYTES + 1)  # compresses to ~70 KB
    path = write_tar(tmp_path / "bomb.tar.gz", {**exported, "manifest.json": huge}, "w:gz")
    assert path.stat().st_size < 1 << 20
    refused_import(cli, other, path, "over the limit")


def test_a_refused_import_into_an_empty_home_creates_no_registry(exported, cli, tmp_path):
    path = write_tar(tmp_path / "bad.tar", with_manifest(exported, _set("kind", "trojan")))
    code, _, err = cli("--home", str(tmp_path / "fresh"), "import", str(path))
    one_error(code, err, 1)
    assert not (tmp_path / "fresh").exists()


def test_a_file_that_is_not_a_tar_is_one_line(cli, other, tmp_path):
    path = tmp_path / "notes.tar"
    path.write_text("not a tar\n")
    refused_import(cli, other, path, "is not a starlight bundle")
    code, _, err = cli("--home", str(other.home), "import", "")
    one_error(code, err)
    assert "name the bundle" in err


def test_a_kept_solution_must_hold_the_same_weights(reg, source, exported, cli, other, tmp_path):
    """Same key, other bits (a GPU- and a CPU-trained MLP): the bundle's star and barrier rows must not be
    attached to the local weights."""
    from starcli.solutions import records

    anchor = records.get(reg, source[1][0])
    tensors = {k: v + 1 for k, v in records.state_dict(reg, anchor).items()}
    records.add(other, tensors, **anchor.model_dump(exclude={"id", "sha256"}))
    path = write_tar(tmp_path / "b.tar", exported)
    refused_import(cli, other, path, "other weights")


def test_an_import_racing_the_collector_keeps_every_blob(reg, exported, other, tmp_path):
    """`doctor --fix` between the import's put and its commit deletes blobs no row references yet; the
    import puts them back once its rows are in (as records.add does)."""
    from starcli.solutions import manage, records

    path = write_tar(tmp_path / "b.tar", exported)
    second = open_registry(other.home)  # a second process's connection to the same registry
    put, collected = other.store.put_bytes, []

    def put_then_collect(data: bytes) -> str:
        sha = put(data)
        collected.append(manage.collect_blobs(second, [sha]))  # the collector runs between this put and the insert
        return sha

    other.store.put_bytes = put_then_collect
    try:
        result = bundles.import_bundle(other, path)
    finally:
        other.store.put_bytes = put
        second.close()
    assert any(collected)  # it did delete blobs in the window
    for sid in result["added"]:
        assert records.state_dict(other, records.get(other, sid))  # loads, verified


@pytest.mark.slow
def test_concurrent_imports_of_one_bundle_both_succeed(exported, other, tmp_path):
    import subprocess
    import sys

    path = write_tar(tmp_path / "b.tar", exported)
    env = {**os.environ, "STARLIGHT_HOME": str(other.home)}
    procs = [subprocess.Popen([sys.executable, "-m", "starcli", "import", str(path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows, bars, _ = state(other)
    assert len(rows) == 4 and len(bars) == len(json.loads(exported["manifest.json"])["barriers"])


def test_every_kind_exported_imports_again_whole(reg, source, other, tmp_path, hf_folder):
    """What export writes, the schema accepts: anchors, a star, a soup, an aligned copy and an external
    checkpoint with tags and a note, with their references remapped."""
    from starcli.solutions import aligned, imports, manage, records, soups

    star, ids = source
    soup, _ = soups.build_soup(reg, ids[:2], device="cpu")
    copy, _ = aligned.align_solution(reg, ids[1], ids[0], device="cpu")
    external, _ = imports.register(reg, hf_folder, None, None, device="cpu", seed=7)
    manage.tag(reg, [soup.id, external.id], "paper")
    manage.note(reg, copy.id, "aligned for the figure")
    bundles.export_bundle(reg, [star, soup.id, copy.id, external.id], tmp_path / "all.tar.gz")
    result = bundles.import_bundle(other, tmp_path / "all.tar.gz")
    mapping = {int(k): v for k, v in result["ids"].items()}
    assert len(result["added"]) == len(mapping) == len({star, soup.id, copy.id, external.id, *ids[:2]})
    for old, new in mapping.items():
        a, b = records.get(reg, old), records.get(other, new)
        assert (a.key, a.sha256, a.kind, a.tags, a.note) == (b.key, b.sha256, b.kind, b.tags, b.note)
        assert b.anchors == [mapping[i] for i in a.anchors]
        assert (b.source_id, b.target_id) == tuple(mapping.get(i) for i in (a.source_id, a.target_id))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["blob-write", "blob-renamed"])
def test_an_import_killed_before_its_commit_adds_no_row_and_a_rerun_adds_it_whole(exported, other, tmp_path, point):
    """kill -9 inside the blob writes: no row at all (the rows go in one transaction after the blobs), and
    importing again adds the bundle whole."""
    import faults

    path = write_tar(tmp_path / "b.tar", exported)
    killed = faults.run(other.home, point, "import", str(path))
    assert killed.returncode == -9, killed.stderr
    assert state(other)[:2] == ([], [])
    again = faults.run(other.home, None, "import", str(path))
    assert again.returncode == 0, again.stderr
    rows, bars, _ = state(other)
    assert len(rows) == 4 and len(bars) == len(json.loads(exported["manifest.json"])["barriers"])
    assert faults.leftovers(other.home) == []


# --- races ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rm_cascade_while_a_star_trains_on_its_anchors_leaves_no_star_without_an_anchor(reg, tiny_config):
    """`rm --cascade` of an anchor lands after the star's training began but before its row: the star's
    registration re-checks its anchors in the transaction that inserts it, and refuses."""
    from starcli.errors import StarlightError
    from starcli.solutions import manage

    ids = [o.solution.id for o in anchor_training.train(reg, tiny_config, [1, 2])]
    second = open_registry(reg.home)  # the `rm` of another process
    put, removed = reg.store.put_bytes, []

    def put_then_rm(data: bytes) -> str:
        sha = put(data)
        if not removed:
            removed.append(manage.remove(second, [ids[0]], cascade=True))
        return sha

    reg.store.put_bytes = put_then_rm
    try:
        with pytest.raises(StarlightError, match=f"solution {ids[0]}, which this star is built from, was removed"):
            stars.build_star(reg, ids, epochs=1)
    finally:
        reg.store.put_bytes = put
        second.close()
    rows, _, _ = state(reg)
    assert [r["id"] for r in rows] == [ids[1]]  # no star whose anchor is gone


def test_an_orphan_blob_younger_than_the_grace_period_is_never_collected(reg, cli):
    import time

    import torch

    from starcli.solutions import manage

    young = reg.store.put({"w": torch.zeros(2)})  # an import's blob whose row is about to be inserted
    old = reg.store.put({"w": torch.ones(2)})
    past = time.time() - 2 * manage.ORPHAN_GRACE_SECONDS
    os.utime(reg.store.path(old), (past, past))
    code, out, err = cli("doctor", "--fix", "--json")
    assert code == 0, err
    assert json.loads(out)["orphan_checkpoints_removed"] == [old]
    assert reg.store.holds(young) and not reg.store.holds(old)
    assert manage.orphan_blobs(reg) == [] and manage.orphan_blobs(reg, grace=0) == [young]


# --- smaller: Hugging Face folders, normalisation, leftovers, selectors --------------------------


@pytest.fixture
def hf_folder(reg, source, tmp_path) -> Path:
    bundles.export_hf(reg, source[1][0], tmp_path / "hf")
    return tmp_path / "hf"


def _edit_config(folder: Path, change) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(model_args=[1, 2]), "model_args must be a JSON object"),
    (lambda c: c["pretrained_cfg"].update(mean="0.5"), "pretrained_cfg.mean must be a list of numbers"),
    (lambda c: c.update(num_classes="10"), "num_classes must be an integer"),
    (lambda c: c.update(starlight=[]), "starlight must be a JSON object"),
    ("nested", "nested too deeply"),
    ("loop", "config.json"),
])
def test_a_hostile_hf_config_is_one_line(reg, hf_folder, cli, change, message):
    before = state(reg)
    config = hf_folder / "config.json"
    if change == "nested":
        config.write_text("[" * 100_000 + "]" * 100_000)
    elif change == "loop":
        config.unlink()
        config.symlink_to(config)
    else:
        _edit_config(hf_folder, change)
    code, _, err = cli("register", str(hf_folder), "--device", "cpu")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and message in lines[0], err
    assert "unexpected" not in err and state(reg) == before


def test_a_config_naming_huge_dimensions_is_refused_before_allocating(reg, hf_folder, cli):
    _edit_config(hf_folder, lambda c: c["model_args"].update(width=30_000_000))  # ~1.5e9 parameters, ~6 GB
    before = state(reg)
    start = time.monotonic()
    code, _, err = cli("register", str(hf_folder), "--device", "cpu")
    one_error(code, err, 1)
    assert "does not fit mlp" in err and "size mismatch" in err and time.monotonic() - start < 20
    assert state(reg) == before


@pytest.mark.parametrize("mean, std", [("nan", "1"), ("0.5", "0"), ("0.5", "-0.2"), ("0.5", "inf")])
def test_a_normalisation_that_is_not_finite_or_divides_by_zero_is_refused(reg, hf_folder, cli, mean, std):
    before = state(reg)
    code, _, err = cli("register", str(hf_folder), "--mean", mean, "--std", std, "--device", "cpu")
    one_error(code, err)
    assert "--std finite and > 0" in err and state(reg) == before


def test_doctor_fix_collects_a_lock_file_left_without_its_run_folder(reg, cli):
    from starcli.solutions import manage

    runs = manage.runs_dir(reg)
    runs.mkdir(parents=True)
    past = time.time() - 2 * manage.STALE_RUN_SECONDS
    left, held = runs / ("a" * 64 + ".lock"), runs / ("b" * 64 + ".lock")
    for lock in (left, held):
        lock.touch()
        os.utime(lock, (past, past))
    with manage.run_lock(runs / ("b" * 64)):  # a training holds this one
        code, out, err = cli("doctor", "--fix", "--json")
    assert code == 0, err
    assert json.loads(out)["stale_runs_removed"] == [str(left)]
    assert not left.exists() and held.exists()


def test_curves_read_ascii_digits_only_and_barriers_star_refuses_a_non_star(reg, source, cli):
    star, ids = source
    code, _, err = cli("curves", "\u0664-\u0663")  # Arabic-Indic 4-3
    one_error(code, err)
    assert "ASCII digits" in err
    code, _, err = cli("barriers", "--star", str(ids[0]))
    one_error(code, err, 1)
    assert "not a star" in err
    code, out, err = cli("barriers", "--star", str(star), "--json")
    assert code == 0 and json.loads(out), err


def test_labels_are_bounded_where_they_are_set_so_every_export_imports_again(reg, source, cli):
    star, _ = source
    before = state(reg)
    code, _, err = cli("note", str(star), "n" * 10_001)
    one_error(code, err)
    assert "at most 10,000 characters" in err
    code, _, err = cli("tag", str(star), "t" * 129)
    one_error(code, err)
    assert "at most 128 characters" in err
    assert state(reg) == before
