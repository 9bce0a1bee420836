"""The registry on both backends: SQLite always, PostgreSQL when STARLIGHT_TEST_PG_URL names a server.

Each PostgreSQL test gets its own schema (via the connection's search_path), so tests never see each
other's rows and need no CREATEDB privilege. `.ci/run` starts a server and sets the variable.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from starcli.errors import StarlightError
from starcli.registry import Registry
from starcli.registry.migrations import MIGRATIONS
from starcli.engine import recipes
from starcli.runners.jobs import run_job
from starcli.solutions import records, training

PG_URL = os.environ.get("STARLIGHT_TEST_PG_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, home: Path):
    """(home, database URL) of an empty registry on each backend."""
    if request.param == "sqlite":
        yield home, f"sqlite:///{home / 'registry.db'}"
        return
    if not PG_URL:
        pytest.skip("no PostgreSQL server: set STARLIGHT_TEST_PG_URL (bash .ci/run starts one)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield home, url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def open_reg(backend):
    regs = []

    def _open() -> Registry:
        regs.append(Registry(*backend))
        return regs[-1]

    yield _open
    for r in regs:
        r.close()


def _w(value: float = 1.0):
    # torch is imported here, not at the top: spawned workers import this module and should start fast.
    import torch

    return {"w": torch.full((2,), value)}


def _fields(key="k1", **kw):
    base = dict(
        key=key, kind="anchor", arch="mlp", arch_kwargs={"width": 4, "depth": 2}, width=4, seed=1, dataset="mnist1d",
        recipe="r", config={"lr": 0.1, "milestones": [1, 2], "nested": {"a": [1.5, None, "x"]}}, epochs=1,
        metrics={"train_acc": 99.5, "train_loss": 0.01}, device="cpu", wall_seconds=0.1, versions={"torch": "2"},
        anchors=[],  # anchors must exist when a row is inserted (records.add checks them)
        tags=["c", "a", "b"],
    )
    base.update(kw)
    return base


def _applied(reg: Registry) -> list[str]:
    with reg.engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.text("SELECT name FROM migrations")))


def test_opening_applies_every_migration_once_and_reopening_applies_none(open_reg):
    from starcli.registry import migrations

    reg = open_reg()
    assert _applied(reg) == sorted(n for n, _ in MIGRATIONS)
    assert migrations.apply(reg.engine) == []
    assert _applied(open_reg()) == sorted(n for n, _ in MIGRATIONS)


def test_json_columns_round_trip_the_same_values_on_both_backends(open_reg):
    reg = open_reg()
    sol, created = records.add(reg, _w(), **_fields())
    assert created
    again = records.get(open_reg(), sol.id)
    assert again.arch_kwargs == {"width": 4, "depth": 2}
    assert again.config == {"lr": 0.1, "milestones": [1, 2], "nested": {"a": [1.5, None, "x"]}}
    assert again.tags == ["c", "a", "b"] and again.versions == {"torch": "2"}
    assert again.metrics == {"train_acc": 99.5, "train_loss": 0.01}


def test_a_non_finite_metric_is_stored_as_null_rather_than_refused(open_reg):
    reg = open_reg()
    sol, _ = records.add(reg, _w(), **_fields(metrics={"loss": float("nan"), "acc": [float("inf"), 1.0]}))
    assert records.get(reg, sol.id).metrics == {"loss": None, "acc": [None, 1.0]}


def test_a_repeated_key_returns_the_first_row_and_queries_filter(open_reg):
    reg = open_reg()
    first, created = records.add(reg, _w(), **_fields("a"))
    again, created_again = records.add(reg, _w(), **_fields("a"))
    records.add(reg, _w(0.0), **_fields("b", kind="star", width=8))
    assert created and not created_again and again.id == first.id
    assert [s.key for s in records.query(reg, kind="anchor")] == ["a"]
    assert [s.key for s in records.query(reg, width=8)] == ["b"]


def test_provenance_columns_reference_other_solutions(open_reg):
    reg = open_reg()
    a, _ = records.add(reg, _w(), **_fields("a"))
    b, _ = records.add(reg, _w(0.0), **_fields("b", kind="aligned", source_id=a.id, target_id=a.id))
    assert (records.get(reg, b.id).source_id, records.get(reg, b.id).target_id) == (a.id, a.id)
    star, _ = records.add(reg, _w(2.0), **_fields("s", kind="star", anchors=[b.id, a.id]))
    assert records.get(reg, star.id).anchors == [b.id, a.id]  # a JSON list, in its order
    with pytest.raises(StarlightError, match="was removed while it was made"):  # anchors must exist
        records.add(reg, _w(3.0), **_fields("t", kind="star", anchors=[a.id, star.id + 1]))


# --- several processes at once ------------------------------------------------------------------


def _open_and_count(home: str, url: str) -> int:
    reg = Registry(Path(home), url)
    try:
        return len(_applied(reg))
    finally:
        reg.close()


def _pool(n: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))


@pytest.mark.slow
def test_four_processes_opening_a_new_registry_at_once_migrate_it_once(backend):
    home, url = backend
    with _pool(4) as pool:
        counts = list(pool.map(_open_and_count, [str(home)] * 4, [url] * 4))
    assert counts == [len(MIGRATIONS)] * 4
    reg = Registry(home, url)
    assert _applied(reg) == sorted(n for n, _ in MIGRATIONS)  # a primary key: a second run would have failed
    reg.close()


@pytest.mark.slow
def test_four_processes_training_into_one_registry_lose_no_rows_and_one_seed_twice_is_one_row(open_reg, tiny_config):
    reg = open_reg()
    config = recipes.resolve("mnist1d-mlp", width=16, epochs=1)
    # Seed 3 twice: two processes race to register the same (config, seed) key.
    jobs = [training.SeedJob(home=str(reg.home), db_url=reg.url, config=config, seed=seed, device="cpu") for seed in (1, 2, 3, 3)]
    with _pool(4) as pool:
        results = list(pool.map(run_job, jobs))
    assert results[2][0] == results[3][0]
    assert sorted(trained for _, trained in results[2:]) == [False, True]  # one registered it, one found it
    assert all(trained for _, trained in results[:2])
    rows = records.query(reg, kind="anchor")
    assert sorted(s.seed for s in rows) == [1, 2, 3]
    assert {s.id for s in rows} == {sid for sid, _ in results}
    assert all(reg.store.path(s.sha256).exists() for s in rows)


def test_ids_are_never_reused_after_the_highest_are_removed(open_reg):
    from starcli.solutions import manage

    reg = open_reg()
    a, _ = records.add(reg, _w(1.0), **_fields("a"))
    b, _ = records.add(reg, _w(2.0), **_fields("b"))
    manage.remove(reg, [b.id])
    c, _ = records.add(reg, _w(3.0), **_fields("c"))
    assert c.id > b.id  # "solution 2" in a note never names another network


def test_an_older_sqlite_registry_keeps_its_rows_and_stops_reusing_ids(home, monkeypatch):
    """m005 rebuilds an existing registry's tables with AUTOINCREMENT: every row, barrier row, index and
    reference kept."""
    import sqlite3

    import starcli.registry.migrations as m
    from starcli.registry import open_registry
    from starcli.registry.database import make_engine
    from starcli.registry.tables import BarrierResult
    from starcli.solutions import manage

    home.mkdir(parents=True)
    monkeypatch.setattr(m, "MIGRATIONS", [x for x in MIGRATIONS if x[0] != "m005_ids_never_reused"])
    engine = make_engine(f"sqlite:///{home / 'registry.db'}")
    m.apply(engine)
    engine.dispose()
    old = Registry(home)  # an older starlight's registry, with rows
    a, _ = records.add(old, _w(1.0), **_fields("a"))
    b, _ = records.add(old, _w(2.0), **_fields("b", kind="aligned", source_id=a.id, target_id=a.id))
    c, _ = records.add(old, _w(3.0), **_fields("c"))
    with old.session() as s:
        s.add(BarrierResult(a_id=a.id, b_id=c.id, settings_hash="h" * 64, settings={}, result={"x": 1}))
        s.commit()
    old.close()
    monkeypatch.undo()

    reg = open_registry(home)
    assert [s.key for s in records.get_many(reg, [a.id, b.id, c.id])] == ["a", "b", "c"]
    assert records.get(reg, b.id).source_id == a.id
    assert manage.remove(reg, [c.id], cascade=True).barriers == [1]
    d, _ = records.add(reg, _w(4.0), **_fields("d"))
    assert d.id > c.id
    con = sqlite3.connect(home / "registry.db")
    assert "AUTOINCREMENT" in con.execute("select sql from sqlite_master where name = 'solutions'").fetchone()[0]
    assert {r[1] for r in con.execute("pragma index_list(solutions)")} >= {"ix_solutions_key", "ix_solutions_kind"}
    assert con.execute("pragma foreign_key_check").fetchall() == []
    reg.close()


def _import(home: str, url: str, bundle: str) -> list[int]:
    from starcli.solutions import bundles

    reg = Registry(Path(home), url)
    try:
        return bundles.import_bundle(reg, bundle)["added"]
    finally:
        reg.close()


@pytest.mark.slow
def test_concurrent_imports_of_one_bundle_both_succeed_and_add_it_once(backend, tmp_path):
    """Each import is one transaction; the one that commits second keeps the first one's rows (same key,
    same sha256) instead of failing on the unique key."""
    from starcli import models
    from starcli.registry import BarrierResult, open_registry
    from starcli.solutions import bundles

    source = open_registry(tmp_path / "source")
    kwargs = models.complete_kwargs("mlp", {"num_classes": 10, "in_chans": 1, "input_size": 40, "width": 4})
    ids = []
    for seed in (1, 2):
        torch_state = models.create("mlp", **kwargs).state_dict()
        sol, _ = records.add(source, torch_state, **_fields(f"{seed:064x}", arch_kwargs=kwargs, seed=seed, tags=None))
        ids.append(sol.id)
    with source.session() as s:
        s.add(BarrierResult(a_id=ids[0], b_id=ids[1], settings_hash="a" * 64, settings={"points": 3}, result={"x": 1}))
        s.commit()
    bundle = tmp_path / "b.tar"
    bundles.export_bundle(source, ids, bundle)
    source.close()
    with _pool(2) as pool:
        added = list(pool.map(_import, *zip(*[(str(backend[0]), backend[1], str(bundle))] * 2)))
    assert sorted(len(a) for a in added) == [0, 2]
    reg = Registry(*backend)
    with reg.session() as s:
        assert len(records.query(reg)) == 2 and len(list(s.exec(sa.select(BarrierResult.id)))) == 1
    reg.close()
