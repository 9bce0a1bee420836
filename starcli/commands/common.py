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
FormatOpt = typer.Option(None, "--format", help="Figure format: png | pdf | svg (default: the file's suffix, else png).")
DpiOpt = typer.Option(None, "--dpi", help="Figure resolution in dots per inch (default 150).")
ExecutorOpt = typer.Option("local", "--executor", "-x", help="local | slurm | ray: where training runs.")


def registry(create: bool = True):
    """Open (and migrate) the registry at --home / $STARLIGHT_HOME / ./.starlight."""
    from registry import open_registry

    return open_registry(state.home, create=create)


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


def ids(text: str, what: str = "id") -> list[int]:
    from starcli.selectors import parse_ids

    return parse_ids(text, what)


def flatten_metrics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k != "metrics"}
        row.update(r.get("metrics") or {})
        rows.append(row)
    return rows
