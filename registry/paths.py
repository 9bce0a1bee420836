"""Where the registry lives. One environment variable relocates everything, as in simonw/llm."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "STARLIGHT_HOME"
DB_URL_ENV = "STARLIGHT_DB_URL"


def home(override: str | os.PathLike | None = None) -> Path:
    """The registry folder: --home, else $STARLIGHT_HOME, else ./.starlight (per project, like .git)."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else (Path.cwd() / ".starlight").resolve()


def db_url(home_dir: Path) -> str:
    """$STARLIGHT_DB_URL (e.g. PostgreSQL for many nodes), else SQLite inside the home."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{home_dir / 'registry.db'}"
