"""The registry: one SQL database (SQLite by default, PostgreSQL via STARLIGHT_DB_URL) plus the blob store
(`blobs/` in the home by default, an object store via STARLIGHT_STORE_URL)."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from . import migrations, paths
from .objects import open_store

SQLITE_BUSY_TIMEOUT_MS = 60_000


def json_dumps(value) -> str:
    """JSON columns on every backend: a NaN or infinity is stored as null.

    PostgreSQL's json type rejects NaN and Infinity (so does the JSON standard) while SQLite would keep
    them; writing null on both makes a diverged metric storable and both backends read back the same.
    """
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def make_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=json_dumps)
    # Driver-level autocommit, with our own BEGIN IMMEDIATE: every transaction takes the write lock up
    # front and waits for it (busy timeout). A deferred transaction that upgrades from read to write fails
    # at once with "database is locked" under WAL when another process wrote in between.
    engine = sa.create_engine(
        url,
        connect_args={"isolation_level": None, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        json_serializer=json_dumps,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Registry:
    """The registry at one home: `registry.db` (or $STARLIGHT_DB_URL) and `blobs/` (or $STARLIGHT_STORE_URL)."""

    def __init__(self, home: Path, url: str | None = None, store_url: str | None = None):
        self.home = Path(home)
        self.store_url = store_url or paths.store_url(self.home)
        # The store first: a malformed store URL is reported before anything is created or migrated.
        self.store = open_store(self.store_url, paths.blob_cache(self.home))
        self.home.mkdir(parents=True, exist_ok=True)
        self.url = url or paths.db_url(self.home)
        self.engine = make_engine(self.url)
        migrations.apply(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def describe(self) -> str:
        if self.url.startswith("sqlite"):
            return str(self.home / "registry.db")
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)  # doctor output gets pasted

    def close(self) -> None:
        self.engine.dispose()


def open_registry(home: str | Path | None = None, create: bool = True) -> Registry | None:
    """Open (and migrate) the registry at `home`; with create=False, None when there is none yet.

    Read-only commands pass create=False so that `starlight list` in an empty folder leaves no trace.
    """
    home_dir = paths.home(home)
    url = paths.db_url(home_dir)
    if not create and url.startswith("sqlite") and not (home_dir / "registry.db").exists():
        return None
    return Registry(home_dir, url)
