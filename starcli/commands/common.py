"""What every command shares: the global options, opening the registry, printing data and errors."""

from __future__ import annotations

import csv
import io
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

DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


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


def table_text(rows: list[dict[str, Any]], columns: list[str], fmt: str | None, title: str | None = None) -> str:
    """Rows as CSV, markdown, or a rich table for people."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False).print(table)
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


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
