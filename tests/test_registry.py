"""The registry: migrations, atomic rows, the content-addressed store and its integrity check."""

import sqlite3

import pytest
import torch

from starcli.registry import CorruptBlobError, open_registry
from starcli.registry.migrations import MIGRATIONS
from starcli.solutions import records


def _fields(key="k1", **kw):
    base = dict(
        key=key, kind="anchor", arch="mlp", arch_kwargs={"width": 4}, width=4, seed=1, dataset="mnist1d",
        recipe="r", config={"a": 1}, epochs=1, metrics={"train_acc": 1.0}, device="cpu", wall_seconds=0.1, versions={},
    )
    base.update(kw)
    return base


def test_opening_a_registry_applies_and_records_every_migration(home):
    reg = open_registry(home)
    con = sqlite3.connect(home / "registry.db")
    names = [r[0] for r in con.execute("select name from migrations order by name")]
    assert names == sorted(n for n, _ in MIGRATIONS)
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    reg.close()


def test_a_registry_from_an_older_version_is_migrated_on_open(home, monkeypatch):
    import starcli.registry.migrations as m
    from starcli.registry.database import make_engine

    # An "old starlight" that only knew the first migration wrote this registry.
    home.mkdir(parents=True)
    monkeypatch.setattr(m, "MIGRATIONS", MIGRATIONS[:1])
    engine = make_engine(f"sqlite:///{home / 'registry.db'}")
    assert m.apply(engine) == [MIGRATIONS[0][0]]
    engine.dispose()
    monkeypatch.undo()

    reg = open_registry(home)
    con = sqlite3.connect(home / "registry.db")
    assert [r[0] for r in con.execute("select name from migrations order by name")] == [n for n, _ in MIGRATIONS]
    cols = {r[1] for r in con.execute("pragma table_info(solutions)")}
    assert {"source_id", "target_id"} <= cols
    sol, created = records.add(reg, {"w": torch.ones(2)}, **_fields())
    assert created and sol.id == 1
    reg.close()


def test_add_stores_the_blob_then_the_row_and_a_repeated_key_returns_the_first(reg):
    sol, created = records.add(reg, {"w": torch.arange(4.0)}, **_fields())
    assert created
    path = reg.store.path(sol.sha256)
    assert path.exists() and path.parent.parent.name == "sha256"
    assert path.parent.name == sol.sha256[:2] and path.name == sol.sha256[2:] + ".safetensors"
    again, created2 = records.add(reg, {"w": torch.arange(4.0)}, **_fields())
    assert not created2 and again.id == sol.id
    assert len(records.query(reg)) == 1
    assert torch.equal(records.state_dict(reg, sol)["w"], torch.arange(4.0))


def test_a_corrupted_blob_is_a_clear_error_naming_the_file(reg):
    sol, _ = records.add(reg, {"w": torch.arange(4.0)}, **_fields())
    path = reg.store.path(sol.sha256)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlobError, match=str(path)):
        records.state_dict(reg, sol)


def test_the_store_holds_no_temporary_files_after_writes(reg):
    for i in range(3):
        reg.store.put({"w": torch.full((3,), float(i))})
    leftovers = [p for p in (reg.home / "blobs").rglob("*") if p.name.startswith(".tmp")]
    assert leftovers == []


def test_missing_ids_are_named_in_the_error(reg):
    from starcli.errors import StarlightError

    records.add(reg, {"w": torch.ones(1)}, **_fields())
    with pytest.raises(StarlightError, match="no solution with id 7, 9"):
        records.get_many(reg, [1, 7, 9])


def test_list_on_an_empty_folder_creates_no_registry(home, cli):
    code, out, err = cli("list", "--json")
    assert code == 0 and out.strip() == "[]"
    assert not home.exists()
