"""Where state lives: the registry's paths (registry/paths.py) and the folder of downloaded datasets."""

from __future__ import annotations

import os
from pathlib import Path

from starcli.registry.paths import DB_URL_ENV, HOME_ENV, db_url, home  # noqa: F401  (one definition, re-exported)

DATA_DIR_ENV = "STARLIGHT_DATA_DIR"


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    value = override or os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser().resolve() if value else None
