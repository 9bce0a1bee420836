"""The adversarial review as tests: per case the exit code, exactly one stderr line, no traceback, and the
registry rows and every file under the home unchanged (issue 13)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from starcli import models

ROOT = Path(__file__).resolve().parents[1]


def snapshot(home: Path) -> tuple[list[str], dict[str, str]]:
    """Every registry row (an SQL dump) and the sha256 of every other file under the home."""
    rows: list[str] = []
    db = home / "registry.db"
    if db.exists():
        conn = sqlite3.connect(db)
        rows = list(conn.iterdump())
        conn.close()
    files = {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.startswith("registry.db")
    }
    return rows, files


@pytest.fixture(scope="module")
def template(tmp_path_factory, mnist1d_cache):
    """A home with two tiny anchors (ids 1, 2) and a star (id 3), built once for the module."""
    from starcli.registry import open_registry
    from starcli.engine import recipes
    from starcli.solutions import anchors, stars

    h = tmp_path_factory.mktemp("errors") / "home"
    (h / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, h / "datasets" / "mnist1d.npz")
    old = os.environ.get("STARLIGHT_HOME")
    os.environ["STARLIGHT_HOME"] = str(h)
    try:
        config = recipes.resolve("mnist1d-mlp", width=16, epochs=1)
        reg = open_registry(h)
        anchors.train(reg, config, [1, 2])
        stars.build_star(reg, [1, 2], epochs=1, device="cpu")
        reg.close()
    finally:
        if old is None:
            os.environ.pop("STARLIGHT_HOME", None)
        else:
            os.environ["STARLIGHT_HOME"] = old
    return h


@pytest.fixture
def populated(home, template):
    shutil.copytree(template, home)
    return home


def mlp_checkpoint(path: Path, width: int = 16, nan: bool = False) -> Path:
    torch.manual_seed(0)
    state = models.create("mlp", num_classes=10, in_chans=1, input_size=40, width=width).state_dict()
    if nan:
        state["layers.1.weight"][0, 0] = math.nan
    save_file(state, str(path))
    return path


def assert_one_line_error(code, err, expected_code, fragment):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and fragment in lines[0], err


CASES = [
    # selectors: ASCII digits, bounds, duplicates
    (("train", "--seed", "１"), 2, "ASCII digits only"),
    (("train", "--seed", "1_0"), 2, "ASCII digits only"),
    (("train", "--seed", "1-100000000"), 2, "more than 10,000 ids"),
    (("train", "--seed", "99999999999"), 2, "seeds go from 0 to 4294967295"),
    (("star", "--anchors", "1-20000"), 2, "more than 10,000 ids"),
    (("star", "--anchors", "1-9999"), 1, "4, 5, 6, 7, 8, 9, 10, 11, 12, 13 (and 9986 more)"),
    (("star", "--anchors", "1,1"), 2, "given twice"),
    (("star", "--anchors", "1"), 2, "at least 2 anchors"),
    (("barrier", "--star", "3", "--held-out", "2,2"), 2, "given twice"),
    (("barrier", "--pair", "1", "1"), 2, "names one solution twice"),
    (("barrier", "--pair", "1", "99999999999999999999"), 2, "--pair must be an integer"),
    (("barrier", "--pair", "1", "2", "--pair", "1", "2"), 2, "a --pair is given twice"),
    (("list", "--width", "99999999999999999999"), 2, "--width must be an integer"),
    (("show", "99999999999999999999"), 2, "solution id must be an integer"),
    (("show", "１"), 2, "solution id must be an integer"),
    (("align", "1", "--to", "1"), 2, "cannot be aligned to itself"),
    # typed training config, named key and origin
    (("train", "--set", "epochs=true"), 2, "epochs = true (from --set)"),
    (("train", "--set", "lr=true"), 2, "lr = true (from --set)"),
    (("train", "--set", "nesterov=maybe"), 2, "nesterov = 'maybe' (from --set)"),
    (("train", "--set", "arch_kwargs.batch_norm=yes"), 2, "batch_norm must be true or false"),
    (("train", "--set", "precision=fp8"), 2, "precision must be fp32 or bf16"),
    (("train", "--set", "label_smoothing=-0.5"), 2, "0 ≤ label_smoothing < 1"),
    (("train", "--set", "momentum=2"), 2, "0 ≤ momentum < 1"),
    (("train", "--set", "gamma=junk"), 2, "gamma must be a finite number > 0"),
    (("train", "--set", "milestones=[3,1]"), 2, "ascending non-negative integers"),
    (("train", "--set", "milestones=5"), 2, "ascending non-negative integers"),
    (("train", "--set", "warmup_epochs=-1"), 2, "warmup_epochs must be"),
    (("train", "--set", "lr=nan"), 2, "lr must be a finite number > 0"),
    (("train", "--set", "batch_size=true"), 2, "batch_size must be an integer from 2"),
    (("train", "--set", "batch_size=1"), 2, "batch_size must be an integer from 2"),
    (("train", "--set", "arch_kwargs.bogus=1"), 2, "arch_kwargs.bogus (from --set) is not a setting of mlp"),
    (("train", "--set", "arch_kwargs.a.b=1"), 2, "'arch_kwargs.a.b' is not a setting"),
    (("train", "--set", "arch_kwargs.depth=-3"), 2, "depth must be an integer ≥ 0"),
    (("train", "--set", "arch_kwargs.width=0"), 2, "width must be an integer ≥ 1"),
    (("train", "--set", "arch_kwargs.width=1.5"), 2, "width must be an integer ≥ 1"),
    (("train", "--width", "1000000000"), 2, "more than 2,000,000,000"),
    (("train", "--set", "arch_kwargs.num_classes=3"), 2, "has 10 classes"),
    (("train", "--set", "arch_kwargs.input_size=41"), 2, "does not build a network for mnist1d"),
    (("train", "--set", "dataset='nope'"), 2, "unknown dataset 'nope' (from --set)"),
    (("train", "--device", "tpu"), 1, "unknown device 'tpu'"),
    (("train", "--device", "cpu:3"), 1, "one CPU device"),
    # star / barrier / bma options
    (("star", "--anchors", "1-2", "--mu-star", "nan"), 2, "--mu-star must be a finite number"),
    (("star", "--anchors", "1-2", "--seed", "-1"), 2, "--seed must be an integer from 0"),
    (("star", "--anchors", "1-2", "--t-sampling", "beta:inf,1"), 2, "finite A, B > 0"),
    (("star", "--anchors", "1-2", "--device", "tpu"), 1, "unknown device 'tpu'"),
    (("barrier", "--pair", "1", "2", "--points", "100000000"), 2, "from 2 to 1,001"),
    (("barrier", "--pair", "1", "2", "--plot", "curves.txt"), 2, "must name a .png file"),
    (("barrier", "--pair", "1", "2", "--plot", "/proc/x.png"), 2, "cannot write into /proc"),
    (("barrier", "--pair", "1", "2", "--device", "cuda:7"), 1, "cuda:7"),
    (("bma", "--star", "3", "--samples", "1000000000"), 2, "from 1 to 10,000"),
    (("bma", "--star", "3", "--t-sampling", "beta:1,inf"), 2, "finite A, B > 0"),
    (("soup", "--anchors", "1-2", "--held-out", "1"), 2, "also averaged into the soup"),
    (("list", "--kind", "stars"), 2, "the kinds are anchor, star, soup, aligned, external"),
    # register / spec
    (("register", "/missing.pt", "--arch", "mlp", "--dataset", "mnist1d"), 1, "does not exist"),
    (("spec", "--arch", "mlp", "--arch-kwargs", '{"width": 0}'), 2, "width must be an integer ≥ 1"),
    (("spec", "--arch", "mlp", "--arch-kwargs", '{"bogus": 1}'), 2, "arch_kwargs.bogus (from --arch-kwargs)"),
]


@pytest.mark.parametrize("args, code, fragment", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(populated, cli, monkeypatch, tmp_path, args, code, fragment):
    monkeypatch.chdir(tmp_path)
    before = snapshot(populated)
    got, _, err = cli(*args)
    assert_one_line_error(got, err, code, fragment)
    assert snapshot(populated) == before


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        (("--seed", "-5"), 2, "--seed must be an integer from 0"),
        (("--seed", "1"), 2, "arch_kwargs.bogus (from --arch-kwargs) is not a setting of mlp"),
    ],
)
def test_register_refuses_bad_options_before_anything_is_stored(populated, cli, tmp_path, extra, code, fragment):
    path = mlp_checkpoint(tmp_path / "net.safetensors")
    kwargs = '{"width": 16, "bogus": 1}' if "1" in extra else '{"width": 16}'
    before = snapshot(populated)
    got, _, err = cli("register", str(path), "--arch", "mlp", "--dataset", "mnist1d", "--arch-kwargs", kwargs, *extra)
    assert_one_line_error(got, err, code, fragment)
    assert snapshot(populated) == before


def test_register_refuses_a_checkpoint_with_nan_weights(populated, cli, tmp_path):
    path = mlp_checkpoint(tmp_path / "nan.safetensors", nan=True)
    before = snapshot(populated)
    got, _, err = cli("register", str(path), "--arch", "mlp", "--dataset", "mnist1d", "--width", "16", "--device", "cpu")
    assert_one_line_error(got, err, 1, "NaN or infinite weights")
    assert snapshot(populated) == before


def test_register_keys_by_content_and_completes_arch_kwargs_like_an_anchor(populated, cli, tmp_path):
    from starcli.registry import open_registry
    from starcli.solutions import records

    a = mlp_checkpoint(tmp_path / "a.safetensors")
    b = tmp_path / "copy" / "b.safetensors"
    b.parent.mkdir()
    shutil.copy(a, b)
    base = ("--arch", "mlp", "--dataset", "mnist1d", "--width", "16", "--device", "cpu")
    code, out, err = cli("register", str(a), *base, "--seed", "7")
    assert code == 0, err
    code, out2, err = cli("register", str(b), *base)
    assert code == 0 and out2.startswith("already registered"), out2 + err
    reg = open_registry(populated)
    externals = records.query(reg, kind="external")
    assert len(externals) == 1
    ext, anchor = externals[0], records.get(reg, 1)
    assert ext.arch_kwargs["depth"] == 1 and ext.arch_kwargs["batch_norm"] is False
    records.require_same_task([anchor, ext])  # an external MLP of the anchor's shape is the same network
    reg.close()


def test_the_resolved_config_and_its_key_are_unchanged_for_valid_input():
    # The config hash is the idempotency key: validation must not convert a single value.
    from starcli.engine import recipes
    from starcli.solutions import records

    config = recipes.resolve(epochs=5)
    assert config == {
        "dataset": "mnist1d", "arch": "mlp",
        "arch_kwargs": {"num_classes": 10, "in_chans": 1, "input_size": 40, "width": 256, "depth": 1},
        "epochs": 5, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
        "weight_decay": 0.0005, "schedule": "cosine", "milestones": [], "gamma": 0.1, "warmup_epochs": 0,
        "augmentation": "none", "label_smoothing": 0.0, "precision": "fp32", "recipe": "mnist1d-mlp",
        "normalisation": "standardised with the training split's global mean and std",
    }
    assert records.solution_key("anchor", config, 1) == "04f99c261ee5e8949a434d886bec466057c0fd0ab5fd19f26aa72f93e402e032"
    lr_int = recipes.resolve(overrides={"lr": 1, "schedule": "step", "milestones": [2, 4], "gamma": 0.5})
    assert lr_int["lr"] == 1 and type(lr_int["lr"]) is int  # accepted, and kept as written


def test_every_shipped_recipe_passes_the_schema():
    from starcli.engine import recipes

    # The loop proves nothing if the packaged recipes went missing (a wheel without its package data):
    # every recipe of the source tree must be there, the default among them.
    shipped = recipes.available()
    source = {p.stem for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.toml")}
    assert len(shipped) >= 9 and "mnist1d-mlp" in shipped and set(shipped) == source
    for name in shipped:
        recipes.resolve(name)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--device", "tpu"),
        ("train", "--set", "epochs=true"),
        ("register", "/missing.pt", "--arch", "mlp", "--dataset", "mnist1d"),
        ("star", "--anchors", "1,1"),
        ("barrier", "--pair", "1", "1"),
        ("bma", "--star", "1", "--samples", "0"),
        ("spec", "--arch", "mlp", "--arch-kwargs", '{"width": 0}'),
    ],
)
def test_failing_commands_in_an_empty_home_leave_no_registry_behind(home, cli, args):
    code, _, err = cli(*args)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert not (home / "registry.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_database_url_is_refused(home, cli, monkeypatch, url):
    monkeypatch.setenv("STARLIGHT_DB_URL", url)
    code, _, err = cli("list")
    assert_one_line_error(code, err, 2, "in-memory database")


def test_a_home_that_is_a_file_is_a_usage_error(tmp_path, cli, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    monkeypatch.setenv("STARLIGHT_HOME", str(f))
    code, _, err = cli("list")
    assert_one_line_error(code, err, 2, "is a file, not a folder")
    assert f.read_text() == "x"


def test_an_empty_registry_db_over_existing_blobs_is_an_error_not_a_fresh_registry(populated, cli):
    (populated / "registry.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (populated / f"registry.db{suffix}").unlink(missing_ok=True)
    before = snapshot(populated)
    for args in (("list",), ("train", "--seed", "1", "--epochs", "1")):
        code, _, err = cli(*args)
        assert_one_line_error(code, err, 1, "is empty but")
    assert (populated / "registry.db").stat().st_size == 0 and snapshot(populated) == before


def test_a_garbage_registry_db_is_one_line_saying_it_is_damaged(home, cli):
    home.mkdir(parents=True)
    (home / "registry.db").write_bytes(b"this is not a database" * 100)
    code, _, err = cli("list")
    assert_one_line_error(code, err, 1, "registry database is damaged")


@pytest.mark.parametrize("url, fragment", [("garbage", "not a valid database URL"), ("mysql://u@h/db", "module is missing")])
def test_a_bad_database_url_is_one_line(home, cli, monkeypatch, url, fragment):
    monkeypatch.setenv("STARLIGHT_DB_URL", url)
    code, _, err = cli("list")
    assert code != 0 and len(err.strip().splitlines()) == 1 and fragment in err, err


@contextmanager
def _writer_holding(home: Path, lock: str):
    """Another connection inside an open transaction that took `lock` and changed a row, uncommitted (so
    readers must see the snapshot before it); rolled back on exit."""
    writer = sqlite3.connect(home / "registry.db", isolation_level=None, timeout=0)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute(lock)
    writer.execute("UPDATE solutions SET recipe = 'held' WHERE id = 1")
    try:
        yield
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_list_and_show_do_not_wait_for_a_writer_holding_the_lock(populated, cli, lock):
    with _writer_holding(populated, lock):
        start = time.monotonic()
        code, out, err = cli("list", "--csv")
        code2, out2, err2 = cli("show", "1")
        elapsed = time.monotonic() - start
    assert code == 0 and code2 == 0, err + err2
    assert elapsed < 10 and "mnist1d-mlp" in out and "held" not in out
    assert "anchor" in out2


def test_the_mode_ro_engine_reads_and_refuses_writes(populated):
    import sqlalchemy as sa

    from starcli.registry.database import make_engine, read_only_url

    engine = make_engine(read_only_url(populated / "registry.db"), read_only=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM solutions").scalar() == 3
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("DELETE FROM solutions")
    engine.dispose()


def _can_mount_read_only(path: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {path} {path} && mount -o remount,ro,bind {path}"],
        capture_output=True,
    )
    return probe.returncode == 0


def _on_read_only_mount(home: Path, *commands: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Each `starlight` command run in a private mount namespace where `home` is bind-mounted read-only;
    stdout has `rc=N` after each command's output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), STARLIGHT_HOME=str(home))
    runs = "; ".join(f"{shlex.quote(sys.executable)} -m starcli {shlex.join(args)}; echo rc=$?" for args in commands)
    script = f"mount --bind {home} {home} && mount -o remount,ro,bind {home} && {runs}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_registry_on_a_read_only_mount_can_be_listed_and_writing_is_one_line(populated):
    if not _can_mount_read_only(populated):
        pytest.skip("no mount namespace here (unshare -m); the mode=ro path is tested directly above")
    before = snapshot(populated)
    run = _on_read_only_mount(populated, ("list", "--csv"), ("train", "--seed", "9", "--epochs", "1", "--width", "16"))
    assert "rc=0" in run.stdout and "mnist1d-mlp" in run.stdout, run.stdout + run.stderr
    assert run.stdout.strip().endswith("rc=1"), run.stdout
    errors = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert errors == [errors[0]] and "read-only" in errors[0] and "Traceback" not in run.stderr
    assert snapshot(populated) == before


_CACHED_BARRIER = ("barrier", "--pair", "1", "2", "--points", "3", "--splits", "test", "--align", "none", "--device", "cpu")


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_a_cached_barrier_does_not_wait_for_a_writer_holding_the_lock(populated, cli, lock):
    code, first, err = cli(*_CACHED_BARRIER, "--json")
    assert code == 0, err
    with _writer_holding(populated, lock):
        start = time.monotonic()
        code, again, err = cli(*_CACHED_BARRIER, "--json")
        elapsed = time.monotonic() - start
    assert code == 0 and elapsed < 10, err
    assert json.loads(again)["pairs"] == json.loads(first)["pairs"]


def test_a_cached_barrier_answers_on_a_read_only_mount_and_a_missing_pair_is_one_line(populated, cli):
    if not _can_mount_read_only(populated):
        pytest.skip("no mount namespace here (unshare -m)")
    code, _, err = cli(*_CACHED_BARRIER)
    assert code == 0, err
    missing = list(_CACHED_BARRIER)
    missing[missing.index("3")] = "5"  # other settings: not stored, must be computed and written
    before = snapshot(populated)
    run = _on_read_only_mount(populated, (*_CACHED_BARRIER, "--csv"), tuple(missing))
    assert "rc=0" in run.stdout and "1,2,pair," in run.stdout, run.stdout + run.stderr
    assert run.stdout.strip().endswith("rc=1"), run.stdout
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "read-only" in errors[0] and "Traceback" not in run.stderr, run.stderr
    assert snapshot(populated) == before


def test_device_is_resolved_before_the_cache_answers(populated, cli):
    base = ("barrier", "--pair", "1", "2", "--points", "3", "--splits", "test", "--align", "none")
    code, _, err = cli(*base, "--device", "cpu")
    assert code == 0, err
    code, _, err = cli(*base, "--device", "tpu")
    assert_one_line_error(code, err, 1, "unknown device 'tpu'")
    code, _, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--device", "tpu")
    assert_one_line_error(code, err, 1, "unknown device 'tpu'")


def test_out_folders_are_checked_before_the_work_and_never_clobbered(populated, cli, tmp_path):
    existing_file = tmp_path / "summary.txt"
    existing_file.write_text("keep")
    full = tmp_path / "full"
    full.mkdir()
    (full / "report.md").write_text("keep")
    before = snapshot(populated)
    for args, fragment in [
        (("report", "--star", "3", "--out", str(existing_file)), "is an existing file"),
        (("report", "--star", "3", "--out", str(full)), "--force"),
        (("demo", "--out", str(full)), "--force"),
        (("sweep", "width-mnist1d", "--out", str(full)), "--force"),
        (("barrier", "--pair", "1", "2", "--plot", str(full)), "is a folder"),
    ]:
        code, _, err = cli(*args)
        assert_one_line_error(code, err, 2, fragment)
    assert existing_file.read_text() == "keep" and (full / "report.md").read_text() == "keep"
    assert snapshot(populated) == before


def test_a_sweep_name_that_is_a_path_is_refused(populated, cli, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(
        'name = "/tmp/elsewhere"\nrecipe = "mnist1d-mlp"\n[grid]\nwidths = [4]\nanchor_seeds = "1-3"\n'
        'anchors = [2]\nheld_out_seeds = "11-12"\n'
    )
    code, _, err = cli("sweep", str(f), "--plan")
    assert_one_line_error(code, err, 2, "must be a plain name")


@pytest.mark.parametrize(
    "exc, fragment",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/h/blobs/x"), "no space left"),
        (PermissionError(errno.EACCES, "Permission denied", "/h"), "permission denied (/h)"),
        (OSError(errno.EROFS, "Read-only file system", "/h"), "read-only file system"),
        (OSError(errno.ELOOP, "Too many levels of symbolic links", "/h/x"), "symbolic link loop"),
        (OSError(errno.ENAMETOOLONG, "File name too long", "/h/xxx"), "file name too long"),
        (MemoryError(), "out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), "out of memory"),
        (__import__("zipfile").BadZipFile("File is not a zip file"), "delete it and rerun"),
        (ValueError("weird"), "unexpected ValueError: weird — please report it"),
    ],
)
def test_environment_failures_map_to_one_actionable_line(exc, fragment):
    from starcli.failures import describe

    message, code = describe(exc)
    assert fragment in message and "\n" not in message and code == 1


def test_database_errors_map_to_what_to_do():
    import sqlalchemy as sa

    from starcli.failures import describe

    def op(text):
        return sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError(text))

    assert "read-only" in describe(op("attempt to write a readonly database"))[0]
    assert "locked" in describe(op("database is locked"))[0]
    assert "free disk space" in describe(op("database or disk is full"))[0]
    assert "Background on this error" not in describe(op("no such table: x"))[0]


def test_library_warnings_do_not_reach_stderr(cli, home, capsys):
    import warnings

    cli("list")  # main() installs the filters
    warnings.warn_explicit("TypedStorage is deprecated", UserWarning, "/site-packages/torch/x.py", 1, module="torch.storage")
    assert "site-packages" not in capsys.readouterr().err


def test_blobs_follow_the_umask_so_a_group_shared_home_can_load_them(populated):
    mask = os.umask(0o022)
    os.umask(mask)
    blobs = [p for p in (populated / "blobs").rglob("*") if p.is_file()]
    assert blobs and all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in blobs)


def test_a_long_refusal_is_cut_at_a_word_boundary():
    from starcli.solutions.imports import _clip

    text = "Weights only load failed. " + "Please file an issue with the following so that we can make it work " * 5
    clipped = _clip(text, 200)
    assert len(clipped) <= 204 and clipped.endswith(" ...") and text.startswith(clipped[:-4])
    assert clipped[:-4].split()[-1] in text.split()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ('anchor_seeds = "1-100000000"', "more than 10,000 ids"),
        ('anchor_seeds = "1-3"\nt_sampling = ["beta:inf,1"]', "finite A, B > 0"),
        ('anchor_seeds = "1-3"\nstar_seeds = [-1]', "star_seeds must be a list of integers from 0"),
        ('anchor_seeds = "1-3"\n[star]\nmu_star = nan', "mu_star must be a finite number"),
        ('anchor_seeds = "1-3"\n[barriers]\npoints = 100000000', "points must be an integer from 2 to 1,001"),
    ],
)
def test_sweep_files_are_bounded_and_refused_even_under_plan(home, cli, tmp_path, extra, fragment):
    f = tmp_path / "s.toml"
    head, _, tail = extra.partition("\n[")
    f.write_text(
        'recipe = "mnist1d-mlp"\n[grid]\nwidths = [4]\nanchors = [2]\nheld_out_seeds = "11-12"\n'
        + head + "\n" + ("[" + tail + "\n" if tail else "")
    )
    start = time.monotonic()
    code, _, err = cli("sweep", str(f), "--plan")
    assert_one_line_error(code, err, 2, fragment)
    assert time.monotonic() - start < 30 and not (home / "registry.db").exists()


def test_a_truncated_dataset_cache_names_the_file_to_delete(populated, cli):
    from starcli.engine import data

    cache = populated / "datasets" / "mnist1d.npz"
    cache.write_bytes(cache.read_bytes()[:1000])
    data._SPLIT_CACHE.clear()  # the in-process cache would answer from memory
    code, _, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--seed", "5", "--device", "cpu")
    assert_one_line_error(code, err, 1, f"the dataset cache {cache} is damaged")
