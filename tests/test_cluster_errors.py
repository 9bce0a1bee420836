"""Bad cluster input from the command line: one line on stderr, exit 1, within seconds, and nothing registered.

An unreachable Ray address (for `star` and for a sweep given by $RAY_ADDRESS), a SLURM option without
submitit installed (a real interpreter in which `import submitit` fails), a malformed STARLIGHT_STORE_URL
and a bucket that does not exist (on the moto S3 server of tests/test_store_objects.py).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_store_objects import _s3_env, s3_endpoint  # noqa: F401  (the session's S3 server, a fixture)

from starcli.solutions import anchors as anchor_training

BOUND_S = 30  # "within seconds": Ray's own client retries for a minute and more


def _rows(home: Path) -> list[tuple]:
    """Every solution row, read straight from the SQLite file (no starlight code in between)."""
    if not (home / "registry.db").exists():
        return []
    with sqlite3.connect(home / "registry.db") as db:
        return db.execute("SELECT id, kind, key, sha256 FROM solutions ORDER BY id").fetchall()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


def _runs(home: Path) -> list[str]:
    """The resume folders: a refused job leaves none behind."""
    return sorted(str(p.relative_to(home)) for p in (home / "runs").rglob("*")) if (home / "runs").exists() else []


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def _error_line(err: str) -> str:
    """The one error line, last on stderr: commands that got as far as starting work print progress first."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    return lines[-1]


@pytest.fixture
def two_anchors(reg, tiny_config):
    ids = [o.solution.id for o in anchor_training.train(reg, dict(tiny_config, epochs=1), [1, 2], device="cpu")]
    return ",".join(map(str, ids))


def _no_ray_session():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")


def test_a_star_on_an_unreachable_ray_address_is_one_line_within_seconds_and_registers_nothing(home, two_anchors, cli):
    _no_ray_session()
    before, runs = _rows(home), _runs(home)
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    code, out, err = cli("star", "--anchors", two_anchors, "--epochs", "1", "--device", "cpu", "--executor", "ray",
                         "--ray-address", address)
    assert code == 1 and out == "" and f"cannot reach the Ray cluster at {address}" in _one_line(err)
    assert time.monotonic() - start < BOUND_S
    assert _rows(home) == before and _runs(home) == runs


def test_a_sweep_given_an_unreachable_ray_address_is_one_line_and_trains_nothing(home, cli, monkeypatch, tmp_path):
    _no_ray_session()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")  # `sweep` takes the address from the environment
    start = time.monotonic()
    code, out, err = cli("sweep", "linear-toy", "-o", str(tmp_path / "out"), "--executor", "ray", "--device", "cpu")
    assert code == 1 and "cannot reach the Ray cluster at 127.0.0.1:" in _error_line(err)
    assert time.monotonic() - start < BOUND_S and _rows(home) == []


def _without_submitit(home: Path, *args: str) -> subprocess.CompletedProcess:
    # A real interpreter in which `import submitit` raises ImportError, as it does where it is not installed.
    code = (
        "import sys; sys.modules['submitit'] = None\n"
        "from starcli.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    env = {**os.environ, "STARLIGHT_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["train", "star"])
def test_a_slurm_option_without_submitit_is_one_line_naming_the_extra_and_registers_nothing(home, two_anchors, command):
    before, runs = _rows(home), _runs(home)
    args = {"train": ["train", "--seed", "3", "--width", "32", "--epochs", "1"],
            "star": ["star", "--anchors", two_anchors, "--epochs", "1"]}[command]
    done = _without_submitit(home, *args, "--device", "cpu", "--executor", "slurm", "--slurm-cluster", "local")
    assert done.returncode == 1 and done.stdout == ""
    assert "pip install 'starlight-landscapes[slurm]'" in _one_line(done.stderr)
    assert _rows(home) == before and _runs(home) == runs and not (home / "slurm").exists()


def test_a_malformed_store_url_is_one_line_and_creates_no_home(home, cli, monkeypatch):
    monkeypatch.setenv("STARLIGHT_STORE_URL", "s3://Not_A_Bucket!/x")
    code, out, err = cli("train", "--seed", "1", "--width", "8", "--epochs", "1", "--device", "cpu")
    assert code == 1 and out == "" and "not a valid S3 bucket name" in _one_line(err)
    assert not home.exists()


def test_a_bucket_that_does_not_exist_is_one_line_and_registers_nothing(home, tiny_config, s3_endpoint, monkeypatch, cli, tmp_path):  # noqa: F811
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/ckpt"
    _s3_env(monkeypatch, s3_endpoint, url)
    from starcli.engine import training

    # Found when the registry is opened for writing, before any training (which would fail this test).
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained before the bucket was checked"))
    report = tmp_path / "report"
    for command in (["train", "--seed", "1", "--width", "8", "--epochs", "1"], ["sweep", "linear-toy", "--out", str(report)]):
        code, out, err = cli(*command, "--device", "cpu")
        assert code == 1 and out == "" and url in _error_line(err) and "does not exist" in err, err
        assert len(err.strip().splitlines()) == 1
        # Nothing was created: no registry, no resume folder, no report.
        assert not (home / "registry.db").exists() and _runs(home) == [] and not report.exists()
