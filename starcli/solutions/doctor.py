"""`starlight doctor`: versions, devices, where the registry is, which datasets can be loaded."""

from __future__ import annotations

from typing import Any

import torch

from starcli.engine import data
from starcli.registry import RegistryError, open_registry, paths

from . import records


def report(home=None, data_dir=None, fix: bool = False) -> dict[str, Any]:

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    reg = open_registry(home, create=False, read_only=True)
    return {
        "versions": records.versions(),
        "devices": devices,
        "home": str(paths.home(home)),
        # Doctor output gets pasted into issues: no password of a URL is ever shown.
        "database": reg.describe() if reg else f"{paths.masked_url(paths.db_url(paths.home(home)))} (not created yet)",
        "checkpoints": reg.store.describe() if reg else paths.masked_url(paths.store_url(paths.home(home))),
        "solutions": len(records.query(reg)) if reg else 0,
        "datasets": data.available(data_dir),
    } | _garbage(reg, fix)


def _garbage(reg, fix: bool) -> dict[str, Any]:
    """Orphan checkpoints and stale runs/ folders: listed, or with fix removed (and listed as removed)."""
    from . import manage

    if reg is None:
        return {}
    verb = "removed" if fix else "found"
    try:
        found = manage.gc(reg, fix=fix)
    except RegistryError as e:  # a finding, not a failure: the rest of the report is what helps fix it
        stale = manage.stale_runs(reg)
        return {"store": f"unreachable: {e}", f"orphan_checkpoints_{verb}": "unknown (the store cannot be listed)",
                f"stale_runs_{verb}": manage.remove_runs(stale) if fix else [str(p) for p in stale]}
    return {f"orphan_checkpoints_{verb}": found["orphan_blobs"], f"stale_runs_{verb}": found["stale_runs"]}
