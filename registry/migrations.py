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


@migration
def m005_ids_never_reused(conn: Connection) -> None:
    """Ids are never reused: SQLite gave a removed highest id to the next row (a rowid without
    AUTOINCREMENT), so a note, a script or an exported tracker run's "solution 9" could name another
    network. SQLite cannot add AUTOINCREMENT to a table: each table is rebuilt with it and its rows copied
    (ids kept), as SQLite's documentation describes. PostgreSQL's SERIAL sequences never reuse a value."""
    if conn.dialect.name != "sqlite":
        return
    meta = sa.MetaData()
    solutions = sa.Table(
        "solutions_new",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("arch", sa.String(128), nullable=False),
        sa.Column("arch_kwargs", sa.JSON, nullable=False),
        sa.Column("width", sa.Integer),
        sa.Column("seed", sa.Integer),
        sa.Column("dataset", sa.String(64), nullable=False),
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
        sa.Column("source_id", sa.Integer, sa.ForeignKey("solutions.id")),
        sa.Column("target_id", sa.Integer, sa.ForeignKey("solutions.id")),
        sa.Column("tags", sa.JSON),
        sa.Column("note", sa.Text),
        sa.Column("history", sa.JSON),
        sqlite_autoincrement=True,
    )
    barriers = sa.Table(
        "barriers_new",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("a_id", sa.Integer, sa.ForeignKey("solutions.id"), nullable=False),
        sa.Column("b_id", sa.Integer, sa.ForeignKey("solutions.id"), nullable=False),
        sa.Column("settings_hash", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("a_id", "b_id", "settings_hash", name="uq_barrier_pair_settings"),
        sqlite_autoincrement=True,
    )
    sa.Table("solutions", meta, sa.Column("id", sa.Integer, primary_key=True))  # what the references name
    for new, old in ((solutions, "solutions"), (barriers, "barriers")):
        indexes = [row[0] for row in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (old,))]
        new.create(conn)
        columns = ", ".join(f'"{c.name}"' for c in new.columns)
        conn.exec_driver_sql(f"INSERT INTO {new.name} ({columns}) SELECT {columns} FROM {old} ORDER BY id")
        conn.exec_driver_sql(f"DROP TABLE {old}")  # foreign keys are off meanwhile (apply), as SQLite asks
        conn.exec_driver_sql(f"ALTER TABLE {new.name} RENAME TO {old}")
        for sql in indexes:  # the same indexes, as the earlier migrations made them
            conn.exec_driver_sql(sql)


# m006 is left to the activation-matching/renormalisation work (issue 22 items 1-2), developed beside this.


@migration
def m007_landscapes(conn: Connection) -> None:
    """The field's instruments beyond lines (issue 22): sharpness at a solution, planes through three,
    curved paths between two. One row per (kind, the solutions it measures, settings): the solutions are
    columns with foreign keys, so that removing one finds its rows; the protocol is stored whole."""
    meta = sa.MetaData()
    sa.Table("solutions", meta, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "landscapes",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False, index=True),
        sa.Column("subject", sa.String(64), nullable=False),  # the solution ids measured, "12" or "3-4-5"
        sa.Column("a_id", sa.Integer, sa.ForeignKey("solutions.id"), nullable=False, index=True),
        sa.Column("b_id", sa.Integer, sa.ForeignKey("solutions.id"), index=True),
        sa.Column("c_id", sa.Integer, sa.ForeignKey("solutions.id"), index=True),
        sa.Column("settings_hash", sa.String(64), nullable=False, index=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("kind", "subject", "settings_hash", name="uq_landscape_subject_settings"),
        sqlite_autoincrement=True,  # ids never reused (m005)
    )
    meta.tables["landscapes"].create(conn)


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
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # A table SQLite rebuilds (m005) is dropped and renamed with foreign keys off, which can only be
            # switched outside a transaction; foreign_key_check then proves every reference still holds.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                if not sqlite:
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
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("a migration broke a reference between rows; nothing was changed")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
    return applied
