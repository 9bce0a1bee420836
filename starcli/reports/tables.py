"""Tables for people and programs: one cell format (`fmt`), markdown, CSV and rich text from the same rows."""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """A tidy CSV: one row per observation, one column per variable; missing values are empty cells."""
    columns = list(columns or _columns(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as people read it in a table: 4 significant digits, '-' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def mean_std(value: float | None, std: float | None, n: int | None = None) -> str:
    """'0.123 ± 0.045' (n shown when given): the form every barrier table uses."""
    if value is None:
        return "-"
    text = fmt(value, 3) if std is None or n == 1 else f"{fmt(value, 3)} ± {fmt(std, 2)}"
    return f"{text} (n={n})" if n is not None else text


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return repr(value)  # every digit: a 5.8e-19 barrier is not 0.0, and the CSV reads back to the same float
    return "" if value is None else value


# Off a terminal (a pipe, a file, a CI log) a table is never wrapped: rich makes it only as wide as its cells.
PIPE_WIDTH = 200


def text_width() -> int:
    """The width rich tables fit: $COLUMNS where set, the terminal's width when stdout is one, else PIPE_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    except (AttributeError, ValueError, OSError):  # a replaced or closed stdout
        pass
    return PIPE_WIDTH


def table_text(rows: list[dict[str, Any]], columns: list[str], fmt_name: str | None, title: str | None = None) -> str:
    """Rows as CSV, markdown, or a rich table for people: the one formatter every command prints with."""
    if fmt_name == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: _csv_cell(r.get(c)) for c in columns} for r in rows)
        return buf.getvalue()
    if fmt_name == "md":
        return markdown_table(rows, columns) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    buf = io.StringIO()
    Console(file=buf, width=text_width(), force_terminal=False).print(table)
    return buf.getvalue()
