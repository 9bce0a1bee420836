"""Where the registry lives. One environment variable relocates everything, as in simonw/llm."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RegistryUsageError

HOME_ENV = "STARLIGHT_HOME"
DB_URL_ENV = "STARLIGHT_DB_URL"
STORE_URL_ENV = "STARLIGHT_STORE_URL"
# Only for s3:// stores; botocore itself also reads AWS_ENDPOINT_URL(_S3), which this one overrides.
S3_ENDPOINT_ENV = "STARLIGHT_S3_ENDPOINT_URL"


# Azure's documented form names the container before '@': abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH.
CONTAINER_AT_HOST = ("az", "abfs", "abfss")


def url_credentials(url: str) -> bool:
    """Whether the URL writes credentials before its host (`scheme://key:secret@host/...`).

    Read off the text, not urlsplit: a secret may hold '/', '?' or '#' (about half of AWS secret keys
    hold a '/'), which urlsplit would take for the start of the path and so miss the credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return False
    before = rest.rpartition("@")[0]
    return not (scheme.lower() in CONTAINER_AT_HOST and ":" not in before and "/" not in before)


def masked_url(url: str) -> str:
    """The URL for messages and `doctor`: whatever precedes the last '@' shown as ***."""
    if "://" not in url and "@" in url:  # not a URL at all, but it may still hold a secret
        return f"***@{url.rpartition('@')[2]}"
    if not url_credentials(url):
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def home(override: str | os.PathLike | None = None) -> Path:
    """The registry folder: --home, else $STARLIGHT_HOME, else ./.starlight (per project, like .git)."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else (Path.cwd() / ".starlight").resolve()


def db_url(home_dir: Path) -> str:
    """$STARLIGHT_DB_URL (e.g. PostgreSQL for many nodes), else SQLite inside the home.

    An in-memory SQLite URL is refused: rows would vanish at exit while their blobs stay behind."""
    url = os.environ.get(DB_URL_ENV)
    if url is not None and url.strip() == "":
        url = None
    if url is None:
        return f"sqlite:///{home_dir / 'registry.db'}"
    if is_memory_url(url):
        raise RegistryUsageError(
            f"{DB_URL_ENV}={url} is an in-memory database: everything registered would be lost at exit; "
            "name a file (sqlite:////path/registry.db) or a server (postgresql://...)"
        )
    return url


def is_memory_url(url: str) -> bool:
    """sqlite://, sqlite:///:memory:, sqlite:///file:x?mode=memory... : databases that live only in this process."""
    head, sep, rest = url.partition("://")
    if not sep or not head.lower().startswith("sqlite"):
        return False
    path = rest[1:] if rest.startswith("/") else rest
    path_only = path.split("?", 1)[0]
    return path_only in ("", ":memory:") or "mode=memory" in path.lower()


def store_url(home_dir: Path) -> str:
    """$STARLIGHT_STORE_URL (an fsspec URL such as s3://bucket/prefix, shared by many nodes), else `blobs/` in the home."""
    return os.environ.get(STORE_URL_ENV) or (home_dir / "blobs").as_uri()


def blob_cache(home_dir: Path) -> Path:
    """The read-through cache of a remote store's blobs; content-addressed too, so it never goes stale."""
    return home_dir / "cache" / "blobs"
