"""starlight for notebooks: what is registered, as pandas DataFrames (pandas is the optional extra `pandas`).

    from starcli import api
    sols = api.solutions(kind="anchor", recipe="mnist1d-mlp")   # one row per solution, metrics as columns
    bars = api.barriers(star=9)                                   # stored pairs of one protocol: settings and barriers
    cur = api.curves(star=9)                                      # tidy: pair, split, t, loss, acc
    hist = api.history(3)                                         # epoch, train_loss, train_acc
    inst = api.landscapes(kind="sharpness")                       # stored sharpness, planes and curves

Each function opens the registry at `home` (default $STARLIGHT_HOME or ./.starlight) and reads it only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from starcli.errors import StarlightError

if TYPE_CHECKING:
    import pandas as pd


def _pandas():
    try:
        import pandas
    except ImportError:
        raise StarlightError("starcli.api needs pandas: pip install 'starlight-landscapes[pandas]'") from None
    return pandas


@contextmanager
def _registry(home) -> Iterator[Any]:
    from starcli.registry import open_registry

    reg = open_registry(home, create=False)
    if reg is None:
        raise StarlightError("there is no registry here yet (train some solutions first, or pass home=)")
    try:
        yield reg
    finally:
        reg.close()


def solutions(
    home=None, *, kind: str | None = None, recipe: str | None = None, tag: str | None = None, seeds=None,
    arch: str | None = None, dataset: str | None = None, width: int | None = None,
) -> "pd.DataFrame":
    """One row per solution: the `list --json` record with its metrics (and a star's settings) as columns."""
    from starcli.solutions import records

    pd = _pandas()
    with _registry(home) as reg:
        sols = records.query(reg, kind, arch, dataset, width, recipe=recipe, tag=tag, seeds=seeds)
        rows = []
        for sol in sols:
            rec = records.record(reg, sol) | records.star_columns(sol)
            rows.append({k: v for k, v in rec.items() if k != "metrics"} | dict(rec["metrics"] or {}))
    return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame(columns=["id"]).set_index("id")


def barriers(
    home=None, *, star: int | None = None, kind: str | list[str] | None = None, settings: str = "latest",
    renorm: str | None = None, definition: str | None = None, align: str | None = None,
) -> "pd.DataFrame":
    """One row per stored barrier measurement (`starlight barriers`): pair, kind, the settings it was measured
    under (points, bn_calibration, batch_size, align, renorm, definition, temperature, settings_hash) and its
    barriers per split. renorm, definition, align: only rows of that protocol.

    settings: rows measured under different settings are different experiments and must not be averaged
    together. "latest" (the default) keeps the rows of the settings most recently measured among those
    selected, and warns how many others were left out; "all" keeps every row (group by `settings_hash`
    before averaging); a hash or a prefix of one keeps that experiment's rows."""
    from starcli.solutions import barriers as stored

    pd = _pandas()
    kinds = [kind] if isinstance(kind, str) else kind
    with _registry(home) as reg:
        rows = _one_protocol(
            stored.stored(reg, star=star, kinds=kinds, renorm=renorm, definition=definition, align=align), settings
        )
    return pd.DataFrame(rows)


def curves(
    pairs=None, home=None, *, star: int | None = None, settings: str = "latest", renorm: str | None = None,
    definition: str | None = None, align: str | None = None,
) -> "pd.DataFrame":
    """The tidy curve table (`starlight curves`): pair, a, b, kind, settings_hash, the protocol (align,
    renorm, definition, temperature), split, t, loss, acc.

    pairs: [(a, b), …]; or star=S for all of S's stored pairs. settings, renorm, definition, align: as for
    `barriers`."""
    from starcli.solutions import barriers as stored

    pd = _pandas()
    with _registry(home) as reg:
        rows = _one_protocol(stored.curves(reg, [tuple(p) for p in pairs] if pairs else None, star=star, renorm=renorm,
                                           definition=definition, align=align), settings)
    return pd.DataFrame(rows)


def _one_protocol(rows: list[dict[str, Any]], settings: str) -> list[dict[str, Any]]:
    """The rows of one measurement protocol (see `barriers`)."""
    if settings == "all" or not rows:
        return rows
    hashes = list(dict.fromkeys(r["settings_hash"] for r in rows))
    if settings == "latest":
        if "created_at" in rows[0]:
            wanted = max(rows, key=lambda r: (r["created_at"], r.get("id", 0)))["settings_hash"]
        else:
            wanted = hashes[-1]
    else:
        matching = [h for h in hashes if h.startswith(settings) or settings.startswith(h)]
        if len(matching) != 1:
            raise StarlightError(
                f"settings={settings!r} matches {len(matching)} of the stored settings ({', '.join(hashes)}); "
                "give a longer prefix, 'latest' or 'all'"
            )
        wanted = matching[0]
    kept = [r for r in rows if r["settings_hash"] == wanted]
    if len(hashes) > 1 and settings == "latest":
        import warnings

        warnings.warn(
            f"{len(rows) - len(kept)} row(s) measured under {len(hashes) - 1} other setting(s) were left out "
            f"(kept settings {wanted}); pass settings='all' and group by settings_hash to see them",
            stacklevel=3,
        )
    return kept


def landscapes(home=None, *, kind: str | None = None, solution: int | None = None) -> "pd.DataFrame":
    """One row per stored instrument measurement (`starlight landscapes`): kind (sharpness, plane, curve),
    the solutions measured (`subject`), the headline numbers and the settings' hash. Rows of different
    settings are different experiments: group by `settings_hash` before comparing."""
    from starcli.solutions import landscapes as stored

    pd = _pandas()
    with _registry(home) as reg:
        rows = stored.stored(reg, kind=kind, solution=solution)
    return pd.DataFrame(rows)


def history(id: int, home=None) -> "pd.DataFrame":
    """A solution's per-epoch training rows (`starlight history`), indexed by epoch: train_loss and
    train_acc (NaN where it was not kept: regression runs, rows stored before accuracy was)."""
    from starcli.solutions import records

    pd = _pandas()
    with _registry(home) as reg:
        rows = records.history(reg, id)
    return pd.DataFrame(rows, columns=list(records.HISTORY_COLUMNS)).astype({"train_acc": float}).set_index("epoch")
