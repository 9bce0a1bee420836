"""How much host memory a computation may take, so that one too large for the machine is refused with
advice before it starts instead of being killed by the kernel's OOM killer halfway (no message, no rows).

The budget is the smallest of: the memory the kernel says is available (/proc/meminfo's MemAvailable),
the room left under this process's cgroup limit (a container's or a SLURM job's), and
$STARLIGHT_MEMORY_LIMIT when set (bytes, or a number with K, M, G or T: a share of a machine one does not
want a run to take). None where none of them can be read (not Linux): nothing is refused there.
Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from starcli.errors import UsageError

ENV = "STARLIGHT_MEMORY_LIMIT"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from `123`, `512M`, `1.5G` (binary units; an optional trailing B or iB)."""
    raw = text.strip().upper()
    letters = ("K", "M", "G", "T")
    if raw.endswith("IB") and raw[-3:-2] in letters:
        raw = raw[:-2]  # 4GiB
    elif raw.endswith("B") and (raw[-2:-1] in letters or raw[-2:-1].isdigit()):
        raw = raw[:-1]  # 4GB, 500B
    unit = raw[-1:] if raw[-1:] in letters else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UsageError(f"${ENV} must be a size such as 4G, 512M or 1000000 (bytes), got {text!r}")
    return int(value * UNITS[unit])


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """The room left under this process's cgroup memory limit (v2 memory.max, else v1
    memory.limit_in_bytes as the container sees it), or None without a limit."""
    candidates = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):  # cgroup v2: the unified hierarchy
                group = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
                candidates.append((group / "memory.max", group / "memory.current"))
    except OSError:
        pass
    v1 = Path("/sys/fs/cgroup/memory")
    candidates.append((v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes"))
    for limit_file, used_file in candidates:
        try:
            limit = limit_file.read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a huge number
                continue
            return max(0, int(limit) - int(used_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int | None:
    """The host memory a computation may still take (see the module docstring), or None if unknown."""
    found = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    env = os.environ.get(ENV, "").strip()
    if env:
        found.append(parse_size(env))
    return min(found) if found else None


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
