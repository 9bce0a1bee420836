"""Id selectors: `3`, `1-5`, `1,3,7`, `1-3,9`, and the bounds every id, seed and count is held to.

Parsing is linear in the number of ids, and a selector naming more than MAX_IDS ids is refused before
anything is expanded, so `--seed 1-100000000` fails at once instead of never returning.
"""

from __future__ import annotations

import math
import re

from .errors import UsageError

# At most this many ids in one selector (a sweep of 10,000 seeds is far beyond any experiment here).
MAX_IDS = 10_000
# Solution ids are SQLite INTEGERs (signed 64-bit).
MAX_ID = 2**63 - 1
# Seeds feed torch.manual_seed(seed * 1_000_003 + epoch) and numpy-style 32-bit generators: 0..2**32-1
# keeps every derived seed inside torch's accepted range (< 2**64) and inside SQLite's int64.
MAX_SEED = 2**32 - 1
# `[0-9]`, not `\d`: a full-width `１` or Python's `1_0` is not an id.
_NUMBER = re.compile(r"[0-9]+")


def _number(part: str, text: str, what: str) -> int:
    if not _NUMBER.fullmatch(part):
        raise UsageError(
            f"malformed {what} selector {text!r}: {part!r} is not an integer or a range like 1-5 (ASCII digits only)"
        )
    if len(part) > 20:  # longer than any int64; int() of a huge string would be slow
        raise UsageError(f"{what} {part[:24]}... is too large")
    return int(part)


def parse_ids(text: str, what: str = "id", *, unique: bool = False, maximum: int | None = None) -> list[int]:
    """Expand a selector into ids in the order given.

    A descending range (`5-1`), an empty part, a non-integer, an id above `maximum` (default: seeds
    MAX_SEED, ids MAX_ID) or more than MAX_IDS ids is a usage error. Duplicates are dropped, or with
    unique=True refused (`--anchors 1,1` would silently build a one-anchor star).
    """
    if text is None or not str(text).strip():
        raise UsageError(f"empty {what} selector; use forms like 3, 1-5, 1,3,7 or 1-3,9")
    if maximum is None:
        maximum = MAX_SEED if what.startswith("seed") else MAX_ID
    text = str(text)
    ranges: list[tuple[int, int]] = []
    total = 0
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        start = _number(lo.strip(), text, what)
        stop = _number(hi.strip(), text, what) if sep else start
        if stop < start:
            raise UsageError(f"descending range {part!r} in {what} selector; write {stop}-{start}")
        if stop > maximum:
            raise UsageError(f"{what} {stop} is out of range: {what}s go from 0 to {maximum}")
        total += stop - start + 1
        if total > MAX_IDS:
            raise UsageError(f"{what} selector {text[:40]!r} names more than {MAX_IDS:,} ids, the most one command takes")
        ranges.append((start, stop))
    ids: list[int] = []
    seen: set[int] = set()
    for start, stop in ranges:
        for i in range(start, stop + 1):
            if i in seen:
                if unique:
                    raise UsageError(f"{what} {i} is given twice in {text!r}; name each one once")
                continue
            seen.add(i)
            ids.append(i)
    return ids


def check_int(value: int | None, flag: str, lo: int, hi: int) -> int | None:
    """An integer option within [lo, hi], else a usage error naming the flag and the range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{flag} must be an integer from {lo:,} to {hi:,}, got {value!r}")
    return value


def check_seed(value: int | None, flag: str = "--seed") -> int | None:
    return check_int(value, flag, 0, MAX_SEED)


def check_id(value: int | None, flag: str) -> int | None:
    return check_int(value, flag, 0, MAX_ID)


def check_finite(value: float | None, flag: str, lo: float = 0.0, *, strict: bool = False) -> float | None:
    """A finite number >= lo (> lo with strict), else a usage error: `--mu-star nan` is not a weight."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (strict and value == lo):
        raise UsageError(f"{flag} must be a finite number {'>' if strict else '>='} {lo:g}, got {value!r}")
    return value


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
