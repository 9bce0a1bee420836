"""The registry: one SQL database (SQLite by default, PostgreSQL via STARLIGHT_DB_URL) plus the blob store
(`blobs/` in the home by default, an object store via STARLIGHT_STORE_URL)."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from . import migrations, paths
from .errors import RegistryError, RegistryUsageError
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


def make_engine(url: str, read_only: bool = False) -> sa.Engine:
    """The engine for `url`. Writers begin every SQLite transaction with BEGIN IMMEDIATE; read_only
    engines use a plain deferred BEGIN, which under WAL reads a snapshot beside a writer and never waits."""
    if not url.startswith("sqlite"):
        # PostgreSQL readers never wait for writers (MVCC): nothing to change for read_only.
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
        if not read_only:  # switching the journal mode writes; a read-only connection keeps what the file has
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not read_only:
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def read_only_url(db_file: Path, immutable: bool = False) -> str:
    """A SQLite URI that opens `db_file` read-only (mode=ro), so a registry on a read-only mount or a
    shared archive can be listed; `immutable` also skips the -wal/-shm files a read-only folder cannot hold."""
    from urllib.parse import quote

    flags = "mode=ro" + ("&immutable=1" if immutable else "")
    return f"sqlite:///file:{quote(str(db_file))}?{flags}&uri=true"


def check_home(home: Path) -> None:
    """A home that is a file, or a zero-byte registry.db beside checkpoints, is a wrong home, never a fresh one."""
    if home.exists() and not home.is_dir():
        raise RegistryUsageError(f"the registry home {home} is a file, not a folder; point --home / {paths.HOME_ENV} at a folder")
    db = home / "registry.db"
    if db.is_file() and db.stat().st_size == 0 and (home / "blobs").is_dir() and any((home / "blobs").iterdir()):
        raise RegistryError(
            f"{db} is empty but {home / 'blobs'} holds checkpoints: the database was truncated or replaced; "
            "restore registry.db from a backup (starting afresh here would orphan every checkpoint)"
        )


class Registry:
    """The registry at one home: `registry.db` (or $STARLIGHT_DB_URL) and `blobs/` (or $STARLIGHT_STORE_URL).

    read_only=True (list, show, doctor): deferred read transactions that never wait for a writer, no
    migrations and nothing created; a registry file or folder that cannot be written is opened mode=ro.
    """

    def __init__(self, home: Path, url: str | None = None, store_url: str | None = None, read_only: bool = False):
        self.home = Path(home)
        self.url = url or paths.db_url(self.home)
        if paths.is_memory_url(self.url):
            raise RegistryUsageError(f"{self.url} is an in-memory database: everything registered would be lost at exit; name a file")
        check_home(self.home)
        self.read_only = read_only
        self.store_url = store_url or paths.store_url(self.home)
        # The store first: a malformed store URL is reported before anything is created or migrated.
        self.store = open_store(self.store_url, paths.blob_cache(self.home))
        if read_only:
            self.engine = self._read_only_engine()
            if migrations.pending(self.engine):
                # An older registry: migrate it once with a writer, then read as before.
                writer = make_engine(self.url)
                try:
                    migrations.apply(writer)
                finally:
                    writer.dispose()
            return
        # A writer may store checkpoints: a missing bucket or a store that cannot be reached is one line
        # now, before the home is created and before any training, not when the first blob is written.
        self.store.check_reachable()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.url.startswith("sqlite") and not os.access(self.home, os.W_OK):
            raise RegistryError(
                f"the registry at {self.home} is read-only; this command writes, so use a writable --home "
                "(list, show, doctor and a barrier whose pairs are stored read it as it is)"
            )
        self.engine = make_engine(self.url)
        migrations.apply(self.engine)
        # A writer killed mid-write (kill -9, power loss) leaves its temp file; the next writer collects it.
        self.store.collect_temp()

    def _read_only_engine(self) -> sa.Engine:
        db = self.home / "registry.db"
        if not self.url.startswith("sqlite") or self.url != f"sqlite:///{db}":
            return make_engine(self.url, read_only=True)
        if os.access(db, os.W_OK) and os.access(self.home, os.W_OK):
            return make_engine(self.url, read_only=True)
        engine = make_engine(read_only_url(db), read_only=True)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
            return engine
        except sa.exc.OperationalError:
            # A WAL database in a folder we cannot write: no -shm can be made, so read the file as it stands.
            engine.dispose()
            return make_engine(read_only_url(db, immutable=True), read_only=True)

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


def open_registry(home: str | Path | None = None, create: bool = True, read_only: bool = False) -> Registry | None:
    """Open (and migrate) the registry at `home`; with create=False, None when there is none yet.

    Read-only commands pass create=False so that `starlight list` in an empty folder leaves no trace, and
    read_only=True so that they never wait for a writer and work on a read-only registry.
    """
    home_dir = paths.home(home)
    url = paths.db_url(home_dir)
    check_home(home_dir)
    if not create and url.startswith("sqlite") and not (home_dir / "registry.db").exists():
        return None
    return Registry(home_dir, url, read_only=read_only)
