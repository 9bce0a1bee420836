"""Fixtures for tests that start from a registry holding a star (tests/test_bundles.py, tests/test_sharing.py):
each test's registry is a copy of conftest's `star_home`, trained once per session instead of once per test.
A test module imports `reg` and `source` from here; they replace conftest's empty `reg` in that module only."""

from __future__ import annotations

import shutil

import pytest

from starcli.registry import open_registry


@pytest.fixture
def reg(home, request):
    """The test's registry: when the test uses `source`, a copy of conftest's `star_home` (trained once per
    session instead of once per test), else empty."""
    if "source" in request.fixturenames:
        shutil.copytree(request.getfixturevalue("star_home")[0], home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def source(reg, star_home):
    """Anchors 1-2, a held-out 3, a star 4 from 1-2, and its measured barriers: (star id, ids)."""
    return star_home[1]
