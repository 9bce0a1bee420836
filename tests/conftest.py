"""Shared fixtures: every test gets its own STARLIGHT_HOME with a real SQLite registry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("STARLIGHT_HOME", str(h))
    monkeypatch.delenv("STARLIGHT_DB_URL", raising=False)
    monkeypatch.delenv("STARLIGHT_STORE_URL", raising=False)
    monkeypatch.delenv("STARLIGHT_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("STARLIGHT_DATA_DIR", raising=False)
    return h


@pytest.fixture
def reg(home: Path):
    from starcli.registry import open_registry

    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory) -> Path:
    """Generate MNIST-1D once per test session; tests copy the cache into their home."""
    from starcli.engine import data

    h = tmp_path_factory.mktemp("mnist1d-home")
    data.load("mnist1d", "train", cache_dir=h / "datasets")
    return h / "datasets" / "mnist1d.npz"


@pytest.fixture
def tiny_config(home: Path, mnist1d_cache: Path):
    """A seconds-long MNIST-1D MLP recipe for tests that train (the star_home fixture trains the same)."""
    from starcli.engine import recipes

    (home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    return recipes.resolve("mnist1d-mlp", width=32, epochs=3)


@pytest.fixture(scope="session")
def anchor_home(tmp_path_factory, mnist1d_cache):
    """`anchor_home(seeds, device)` -> a home holding `tiny_config` anchors of those seeds, registered as
    `anchors.train(reg, tiny_config, seeds, device=device)` registers them. Trained once per session for each
    (seeds, device); a module whose tests start from those anchors copies the home into each test's home
    (`shutil.copytree(anchor_home(...), home)` before its registry is opened), so every test still gets an
    untouched registry of its own without training it again."""
    from starcli.engine import recipes
    from starcli.registry import open_registry
    from starcli.solutions import anchors

    built: dict[tuple, Path] = {}

    def make(seeds, device: str = "auto") -> Path:
        key = (tuple(seeds), device)
        if key not in built:
            h = tmp_path_factory.mktemp("anchor-home") / "home"
            (h / "datasets").mkdir(parents=True)
            shutil.copy(mnist1d_cache, h / "datasets" / "mnist1d.npz")
            r = open_registry(h)
            try:
                anchors.train(r, recipes.resolve("mnist1d-mlp", width=32, epochs=3), list(seeds), device=device)
            finally:
                r.close()
            built[key] = h
        return built[key]

    return make


@pytest.fixture(scope="session")
def star_home(tmp_path_factory, mnist1d_cache):
    """(home, (star id, [anchor 1, anchor 2, held-out 3])): a registry with anchors 1-2 and a held-out 3 of
    `tiny_config`, a star 4 from 1-2 and its measured barriers. Trained once per session; a test that needs it
    gets a copy in its own home (`shutil.copytree(star_home[0], home)` before opening it), so it still starts from an untouched registry."""
    from starcli.engine import recipes
    from starcli.registry import open_registry
    from starcli.solutions import anchors, barriers, stars

    h = tmp_path_factory.mktemp("star-home") / "home"
    (h / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, h / "datasets" / "mnist1d.npz")
    r = open_registry(h)
    try:
        ids = [o.solution.id for o in anchors.train(r, recipes.resolve("mnist1d-mlp", width=32, epochs=3), [1, 2, 3])]
        star, _ = stars.build_star(r, ids[:2], epochs=1)
        barriers.measure(r, star=star.id, held_out=[ids[2]], points=3, splits=("train",))
    finally:
        r.close()
    return h, (star.id, ids)


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from starcli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli():
    return run_cli


# Tables fit $COLUMNS when it is set (starcli/reports/tables.py); pytest-xdist exports COLUMNS=80 to its workers
# and a shell may export its own, so the tests start without it (a test that wants a width sets it).
os.environ.pop("COLUMNS", None)


def pytest_configure(config):
    """Two intra-op threads in a serial run; one per worker under pytest-xdist (`make test` runs two workers), so
    the workers do not fight over the cores. Decided here, not when this file is imported: under xdist the
    controller imports it too, before it starts its workers, and they inherit its environment, so a controller
    that set its serial default ("2") gave every worker two threads (setdefault then kept it). Two workers of
    two threads on two cores made OpenMP's spinning threads compete: the same 763 tests took 447 CPU-seconds
    with two threads per worker and 210 with one (two runs on a shared machine; the files that train in the
    test process, 8-10 times less). tests/test_suite_threads.py holds it. An $OMP_NUM_THREADS already set is kept."""
    distributed = os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1" if distributed else "2")
