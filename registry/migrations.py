"""Schema migrations: an ordered list of small functions, each recorded in `migrations` once applied.

A registry written by an older starlight opens in a newer one: opening applies whatever is missing.
Each migration spells out its own DDL (not `create_all` of today's models) so that history stays fixed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = []


def migration(fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_solutions(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table(
        "solutions",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True, index=True),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("arch", sa.String(128), nullable=False, index=True),
        sa.Column("arch_kwargs", sa.JSON, nullable=False),
        sa.Column("width", sa.Integer, index=True),
        sa.Column("seed", sa.Integer),
        sa.Column("dataset", sa.String(64), nullable=False, index=True),
        sa.Column("recipe", sa.String(128)),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("epochs", sa.Integer),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("wall_seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("anchors", sa.JSON, nullable=False),
    )
    meta.create_all(conn)


@migration
def m002_barriers(conn: Connection) -> None:
    meta = sa.MetaData()
    sa.Table("solutions", meta, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "barriers",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("a_id", sa.Integer, sa.ForeignKey("solutions.id"), nullable=False, index=True),
        sa.Column("b_id", sa.Integer, sa.ForeignKey("solutions.id"), nullable=False, index=True),
        sa.Column("settings_hash", sa.String(64), nullable=False, index=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("a_id", "b_id", "settings_hash", name="uq_barrier_pair_settings"),
    )
    meta.tables["barriers"].create(conn)


@migration
def m003_provenance(conn: Connection) -> None:
    """Aligned copies and soups record where they came from."""
    conn.execute(sa.text("ALTER TABLE solutions ADD COLUMN source_id INTEGER REFERENCES solutions(id)"))
    conn.execute(sa.text("ALTER TABLE solutions ADD COLUMN target_id INTEGER REFERENCES solutions(id)"))


@migration
def m004_workbench(conn: Connection) -> None:
    """Labels a researcher gives (tags, a note) and the per-epoch training loss of anchors and stars."""
    for column in ("tags JSON", "note TEXT", "history JSON"):
        conn.execute(sa.text(f"ALTER TABLE solutions ADD COLUMN {column}"))


def _migrations_table() -> sa.Table:
    return sa.Table(
        "migrations",
        sa.MetaData(),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("applied_at", sa.DateTime, nullable=False),
    )


def pending(engine: sa.Engine) -> list[str]:
    """The migrations not yet applied, read without any lock (for read-only openers)."""
    table = _migrations_table()
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("migrations"):
            return [name for name, _ in MIGRATIONS]
        done = {row[0] for row in conn.execute(sa.select(table.c.name))}
    return [name for name, _ in MIGRATIONS if name not in done]


def apply(engine: sa.Engine) -> list[str]:
    """Apply the missing migrations in order inside one transaction; return their names.

    Concurrent openers (several workers starting at once) serialise on a lock so each migration
    runs exactly once: an advisory lock on PostgreSQL; on SQLite every transaction already starts
    with BEGIN IMMEDIATE (see database.py), which is the write lock.
    """
    table = _migrations_table()
    with engine.connect() as conn:
        # Fast path: nothing to do, no write lock taken.
        if sa.inspect(conn).has_table("migrations"):
            done = {row[0] for row in conn.execute(sa.select(table.c.name))}
            if all(name in done for name, _ in MIGRATIONS):
                return []
    applied: list[str] = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(734951)"))
        table.create(conn, checkfirst=True)
        done = {row[0] for row in conn.execute(sa.select(table.c.name))}
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            fn(conn)
            conn.execute(
                table.insert().values(name=name, applied_at=datetime.now(timezone.utc).replace(tzinfo=None))
            )
            applied.append(name)
    return applied
