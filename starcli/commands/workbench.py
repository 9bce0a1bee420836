"""rm, tag, untag, note, history, barriers, curves, export: managing and browsing what is registered."""

from __future__ import annotations

import re
import sys
from typing import List, Optional

import typer

from starcli.reports.tables import table_text

from . import app, common

BARRIER_COLUMNS = [
    "id", "a", "b", "kind", "points", "splits", "bn_calibration", "batch_size", "align", "renorm", "definition",
    "temperature", "train_loss_barrier", "train_acc_barrier", "test_loss_barrier", "test_acc_barrier", "created_at",
]  # fmt: skip
CURVE_COLUMNS = ["pair", "a", "b", "kind", "settings_hash", "align", "renorm", "definition", "split", "t", "loss", "acc"]
# Filters of `barriers` and `curves` by the protocol a row was measured under (issue 22).
RenormFilterOpt = typer.Option(None, "--renorm", help="Only rows of this renormalisation: none, reset, repair, rescale, reshift, default (rows from before it was recorded).")
DefinitionFilterOpt = typer.Option(None, "--definition", help="Only rows of this barrier definition: eq1, endpoint-mean, error.")
AlignFilterOpt = typer.Option(None, "--align", help="Only rows of this alignment: none, weight, activation.")


@app.command()
def rm(
    ids: str = typer.Argument(..., help="Solutions: 3, 1-5, or attributes like seed=1-5,recipe=mnist1d-mlp."),
    cascade: bool = typer.Option(
        False, "--cascade", help="Also remove what depends on them (stars, soups, aligned copies, barrier rows)."
    ),
    json_: bool = common.JsonOpt,
) -> None:
    """Remove solutions, their barrier rows and the checkpoints nothing else references."""
    from starcli.solutions import manage, records

    reg = common.existing_registry()
    removal = manage.remove(reg, records.select_ids(reg, ids, "solution"), cascade=cascade)
    if json_:
        common.echo_json(removal.as_dict())
        return
    print(
        f"removed solutions {', '.join(map(str, removal.solutions))}; "
        f"{len(removal.barriers)} barrier rows; {len(removal.blobs)} checkpoints"
        + (f"; {len(removal.landscapes)} instrument rows" if removal.landscapes else "")
    )


@app.command()
def tag(
    ids: str = typer.Argument(..., help="Solutions: 3, 1-5, or attributes like seed=1-5."),
    name: str = typer.Argument(..., help="The tag, a word (e.g. paper, bad-lr)."),
) -> None:
    """Add a tag to solutions (`list --tag NAME` finds them)."""
    _tag(ids, name, False)


@app.command()
def untag(
    ids: str = typer.Argument(..., help="Solutions: 3, 1-5, or attributes like tag=paper."),
    name: str = typer.Argument(..., help="The tag to remove."),
) -> None:
    """Remove a tag from solutions."""
    _tag(ids, name, True)


def _tag(ids: str, name: str, remove_it: bool) -> None:
    from starcli.solutions import manage, records

    reg = common.existing_registry()
    changed = manage.tag(reg, records.select_ids(reg, ids, "solution"), name, remove_it=remove_it)
    verb = "untagged" if remove_it else "tagged"
    print(f"{verb} {len(changed)} solutions{': ' + ', '.join(map(str, changed)) if changed else ''}")


@app.command()
def note(
    id: int = typer.Argument(..., help="Solution id."),
    text: str = typer.Argument(..., help="The note ('' clears it)."),
) -> None:
    """Attach a note to a solution (shown by `show`)."""
    from starcli.solutions import manage

    manage.note(common.existing_registry(), id, text)


@app.command()
def history(
    id: int = typer.Argument(..., help="Solution id (an anchor or a star)."),
    plot: Optional[str] = typer.Option(
        None, "--plot", help="Write the loss (and, where kept, the accuracy) per epoch as a PNG."
    ),
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """The per-epoch training loss and accuracy of an anchor or a star.

    train_loss is the mean over the epoch's batches; train_acc the % of the epoch's samples classified right
    as each step saw them (train mode, augmented, before that step's update; for a star, by the interpolated
    networks it descended, averaged over the draws). Blank where it was not kept (regression, older runs).
    """
    from starcli.solutions import records

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    rows = records.history(common.existing_registry(read_only=True), id)  # reads only: no store needed
    if plot:
        from starcli.reports.figures import history_plot

        print(f"wrote {history_plot(plot, rows)}", file=sys.stderr)
    if fmt == "json":
        common.echo_json(rows)
    else:
        sys.stdout.write(table_text(rows, list(records.HISTORY_COLUMNS), fmt))


@app.command()
def barriers(
    star: Optional[int] = typer.Option(None, "--star", help="Only this star's pairs (and its anchors' baseline)."),
    kind: List[str] = typer.Option([], "--kind", help="star-held-out, regular-held-out or pair (repeatable)."),
    renorm: Optional[str] = RenormFilterOpt,
    definition: Optional[str] = DefinitionFilterOpt,
    align: Optional[str] = AlignFilterOpt,
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """List the stored barrier measurements with the settings they were measured under."""
    from starcli.solutions import barriers as stored

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    reg = common.registry(create=False, read_only=True)  # rows only: works while the store is down
    if reg is not None and star is not None:
        from starcli.solutions import records

        records.get_star(reg, star, "to list pairs of")  # as `barrier --star` refuses a non-star
    rows = stored.stored(reg, star=star, kinds=kind or None, renorm=renorm, definition=definition, align=align) if reg else []
    if fmt == "json":
        common.echo_json(rows)
    elif not rows and fmt is None:
        print("no barriers stored yet; measure some with `starlight barrier`", file=sys.stderr)
    else:
        sys.stdout.write(table_text(rows, BARRIER_COLUMNS, fmt))


def parse_pair(text: str) -> tuple[int, int]:
    from starcli.errors import UsageError

    from starcli.selectors import MAX_ID

    a, sep, b = text.replace(":", "-").partition("-")
    # ASCII digits only, as every other selector (int() would read '٣' as 3): selectors.py
    if not sep or not re.fullmatch(r"[0-9]+", a) or not re.fullmatch(r"[0-9]+", b) or max(int(a), int(b)) > MAX_ID:
        raise UsageError(f"a pair is written A-B with ASCII digits (e.g. 6-7), got {text!r}")
    return int(a), int(b)


@app.command()
def curves(
    pairs: Optional[List[str]] = typer.Argument(None, help="Pairs A-B (e.g. 6-7 6-8), as stored."),
    star: Optional[int] = typer.Option(None, "--star", help="Every stored pair of this star."),
    renorm: Optional[str] = RenormFilterOpt,
    definition: Optional[str] = DefinitionFilterOpt,
    align: Optional[str] = AlignFilterOpt,
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """The stored interpolation curves as a tidy table: pair, split, t, loss, acc (one row per point)."""
    from starcli.solutions import barriers as stored

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    rows = stored.curves(common.existing_registry(read_only=True), [parse_pair(p) for p in pairs or []] or None, star=star,
                         renorm=renorm, definition=definition, align=align)
    if fmt == "json":
        common.echo_json(rows)
    else:
        sys.stdout.write(table_text(rows, CURVE_COLUMNS, fmt))
