"""What every command shares: the global options, opening the registry, printing data and errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Iterable

import typer

from starcli.errors import UsageError


@dataclass
class GlobalState:
    home: str | None = None
    debug: bool = False
    # The raw command line (set by main): Click keeps only the last of a repeated tuple option such as --pair.
    argv: tuple[str, ...] = ()


state = GlobalState()

# Options several commands share, declared once (as sqlite-utils does with its output_options).
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
CsvOpt = typer.Option(False, "--csv", help="CSV on stdout.")
MdOpt = typer.Option(False, "--md", help="Markdown table on stdout.")
HeldOutOpt = typer.Option(None, "--held-out", help="Held-out ids, e.g. 6-10.")
BnCalibrationOpt = typer.Option(
    "full", "--bn-calibration", help="BatchNorm re-estimation: full, or N (a fixed seeded subset of N samples)."
)
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of torchvision datasets (default $STARLIGHT_DATA_DIR).")
DownloadOpt = typer.Option(False, "--download", help="Download a torchvision dataset into --data-dir.")
ForceOpt = typer.Option(False, "--force", help="Write into --out even when it already holds files (they are replaced).")
ExecutorOpt = typer.Option("local", "--executor", "-x", help="local | slurm | ray: where training runs.")


def registry(create: bool = True, read_only: bool = False):
    """Open (and migrate) the registry at --home / $STARLIGHT_HOME / ./.starlight; read_only for commands
    that only read (list, show, doctor): they never wait for a writer and work on a read-only registry."""
    from registry import open_registry

    return open_registry(state.home, create=create, read_only=read_only)


def reporter(enabled: bool = True):
    """A rich progress display on stderr, or a silent one."""
    from starcli.progress import Reporter, RichReporter

    return RichReporter() if enabled else Reporter()


def echo_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def one_format(**flags: bool) -> str | None:
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise UsageError(f"choose one output format, not {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else None


def ids(text: str, what: str = "id", unique: bool = False) -> list[int]:
    from starcli.selectors import parse_ids

    return parse_ids(text, what, unique=unique)


def check_out_folder(out, force: bool) -> None:
    """An --out folder is checked before any work: an existing file, or a folder that already holds files
    (which the command would overwrite) without --force, is a usage error; its parent must be writable."""
    from pathlib import Path

    from starcli.reports.figures import check_writable_folder

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is an existing file; name a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UsageError(f"--out {folder} already holds files that would be overwritten; choose an empty folder or pass --force")
    check_writable_folder(folder, "--out")


def device(name: str) -> str:
    """Resolve --device before anything is opened: a cached answer must not hide `--device tpu` (imports torch)."""
    from starcli.engine import devices

    devices.resolve(name)
    return name


def flatten_metrics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k != "metrics"}
        row.update(r.get("metrics") or {})
        rows.append(row)
    return rows
