"""Id selectors: `3`, `1-5`, `1,3,7`, `1-3,9`."""

from __future__ import annotations

from .errors import UsageError


def parse_ids(text: str, what: str = "id") -> list[int]:
    """Expand a selector into ids in the order given, without duplicates.

    A descending range (`5-1`), an empty part or a non-integer is a usage error.
    """
    if text is None or not str(text).strip():
        raise UsageError(f"empty {what} selector; use forms like 3, 1-5, 1,3,7 or 1-3,9")
    ids: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            start = int(lo)
            stop = int(hi) if sep else start
        except ValueError:
            raise UsageError(
                f"malformed {what} selector {text!r}: {part!r} is not an integer or a range like 1-5"
            ) from None
        if start < 0 or stop < 0:
            raise UsageError(f"malformed {what} selector {text!r}: {what}s are non-negative")
        if stop < start:
            raise UsageError(f"descending range {part!r} in {what} selector; write {stop}-{start}")
        for i in range(start, stop + 1):
            if i not in ids:
                ids.append(i)
    return ids


# Attributes a solution selector may name: integer ones take id selectors (1-5,9), the others exact values.
INTEGER_ATTRIBUTES = ("id", "seed", "width", "epochs")
TEXT_ATTRIBUTES = ("kind", "recipe", "arch", "dataset", "tag")
ATTRIBUTES = INTEGER_ATTRIBUTES + TEXT_ATTRIBUTES


def is_attribute_selector(text: str) -> bool:
    return "=" in str(text)


def parse_attributes(text: str, what: str = "id") -> dict[str, list]:
    """`seed=1-5,recipe=mnist1d-mlp` -> {"seed": [1..5], "recipe": ["mnist1d-mlp"]}.

    A comma starts a new attribute only where the next part has an `=`: `seed=1-3,7,kind=anchor` reads as
    seed in {1, 2, 3, 7} and kind anchor. Values of one attribute are alternatives; attributes all must hold.
    """
    raw: dict[str, list[str]] = {}
    current = None
    for part in str(text).split(","):
        part = part.strip()
        name, eq, value = part.partition("=")
        if eq:
            current = name.strip().lower()
            if current not in ATTRIBUTES:
                raise UsageError(
                    f"unknown attribute {name.strip()!r} in {what} selector {text!r}; use {', '.join(ATTRIBUTES)}"
                )
            if current in raw:
                raise UsageError(f"{what} selector {text!r} names {current} twice; list its values after one {current}=")
            raw[current] = [value.strip()]
        elif current is None:
            raise UsageError(f"malformed {what} selector {text!r}: write attr=value parts, e.g. seed=1-5,recipe=mnist1d-mlp")
        else:
            raw[current].append(part)
    out: dict[str, list] = {}
    for name, values in raw.items():
        if any(not v for v in values):
            raise UsageError(f"empty value for {name} in {what} selector {text!r}")
        out[name] = parse_ids(",".join(values), name) if name in INTEGER_ATTRIBUTES else values
    return out
