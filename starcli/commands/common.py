"""What every command shares: the global options, opening the registry, printing data and errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Iterable

import typer
from typer.core import TyperCommand

from starcli.errors import UsageError


@dataclass
class GlobalState:
    home: str | None = None
    debug: bool = False
    quiet: bool = False


state = GlobalState()

# Help panels: the options most runs need come first, under "Options"; these follow.
OUTPUT, CLUSTER, DATA = "Output", "Cluster (--executor slurm | ray)", "Data"

# Options several commands share, declared once (as sqlite-utils does with its output_options).
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.", rich_help_panel=OUTPUT)
CsvOpt = typer.Option(False, "--csv", help="CSV on stdout.", rich_help_panel=OUTPUT)
MdOpt = typer.Option(False, "--md", help="Markdown table on stdout.", rich_help_panel=OUTPUT)
HeldOutOpt = typer.Option(None, "--held-out", help="Held-out ids, e.g. 6-10.")
BnCalibrationOpt = typer.Option(
    "full", "--bn-calibration", help="BatchNorm re-estimation: full, or N (a fixed seeded subset of N samples)."
)
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of torchvision datasets (default $STARLIGHT_DATA_DIR).", rich_help_panel=DATA)
DownloadOpt = typer.Option(False, "--download", help="Download a torchvision dataset into --data-dir.", rich_help_panel=DATA)
FormatOpt = typer.Option(None, "--format", help="Figure format: png | pdf | svg (default: the file's suffix, else png).", rich_help_panel=OUTPUT)
DpiOpt = typer.Option(None, "--dpi", help="Figure resolution in dots per inch (default 150).", rich_help_panel=OUTPUT)
ExecutorOpt = typer.Option("local", "--executor", "-x", help="local | slurm | ray: where training runs.", rich_help_panel=CLUSTER)


class PanelledCommand(TyperCommand):
    """Plain-text help (the app sets rich_markup_mode=None, so brackets in help texts print as written)
    with the options grouped by their `rich_help_panel`: Typer draws panels only in rich mode."""

    def format_options(self, ctx, formatter) -> None:
        args, panels = [], {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for name, records in panels.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


def registry(create: bool = True):
    """Open (and migrate) the registry at --home / $STARLIGHT_HOME / ./.starlight."""
    from registry import open_registry

    return open_registry(state.home, create=create)


def reporter(enabled: bool = True):
    """Progress on stderr: a rich display on a terminal, plain periodic lines elsewhere (SLURM logs,
    nohup), messages only under --quiet; or a silent one."""
    from starcli.progress import Reporter, for_stderr

    return for_stderr(quiet=state.quiet) if enabled else Reporter()


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
