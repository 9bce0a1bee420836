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
