"""The schema of a bundle's manifest.json: every field typed and bounded, so a hostile or damaged bundle
is one line naming the field before anything is read into the registry (was: `"metrics": [1, 2]` broke
`list` for the whole registry; 100 KB keys, 5 MB notes and path-like names went straight in)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from starcli.errors import StarlightError

from .records import KINDS, MAX_NOTE_CHARS, MAX_TAG_CHARS, MAX_TAGS

FORMAT, VERSION = "starlight-bundle", 1
MAX_SOLUTIONS = 10_000  # as many as a selector may name (selectors.MAX_IDS)
MAX_BARRIERS = 1_000_000
MAX_JSON_BYTES = 1 << 20  # a config, settings or result: a barrier's curves at 1,001 points are ~100 KB
MAX_HISTORY = 100_000  # rows: one per epoch, and epochs are at most 100,000
ID = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]  # an arch, dataset or recipe: never a path
NUMBER = Union[StrictInt, StrictFloat, None]
SCALAR = Union[StrictInt, StrictFloat, bool, Annotated[str, Field(max_length=256)], None]
KWARG = Union[SCALAR, Annotated[list[SCALAR], Field(max_length=64)]]


def _bounded_json(value: Any) -> Any:
    if len(json.dumps(value, default=str)) > MAX_JSON_BYTES:
        raise ValueError(f"is larger than {MAX_JSON_BYTES // 1024} KiB")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


JSON_OBJECT = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SolutionRow(_Strict):
    id: ID
    key: SHA256
    kind: Literal[KINDS]  # type: ignore[valid-type]
    arch: NAME
    arch_kwargs: Annotated[dict[Annotated[str, Field(max_length=64)], KWARG], Field(max_length=64)]
    width: Optional[Annotated[StrictInt, Field(ge=0, le=2**31)]] = None
    seed: Optional[Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]] = None
    dataset: NAME
    recipe: Optional[Annotated[str, Field(max_length=128)]] = None
    config: JSON_OBJECT
    epochs: Optional[Annotated[StrictInt, Field(ge=0, le=100_000)]] = None
    metrics: Annotated[dict[Annotated[str, Field(max_length=64)], NUMBER], Field(max_length=64)]
    sha256: SHA256
    device: Annotated[str, Field(max_length=32)]
    wall_seconds: Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=1e9)]
    created_at: Annotated[str, Field(max_length=40)]
    versions: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=128)]], Field(max_length=32)]
    status: Literal["complete"]
    anchors: Annotated[list[ID], Field(max_length=MAX_SOLUTIONS)]
    source_id: Optional[ID] = None
    target_id: Optional[ID] = None
    tags: Optional[Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS, pattern=r"^[^,=]+$")]],
                             Field(max_length=MAX_TAGS)]] = None
    note: Optional[Annotated[str, Field(max_length=MAX_NOTE_CHARS)]] = None
    history: Optional[Annotated[list[dict[Annotated[str, Field(max_length=64)], NUMBER]], Field(max_length=MAX_HISTORY)]] = None

    @model_validator(mode="after")
    def _references_fit_the_kind(self) -> "SolutionRow":
        if self.kind == "star" and len(self.anchors) < 2:
            raise ValueError("a star has at least 2 anchors")
        if self.kind in ("anchor", "external") and (self.anchors or self.source_id or self.target_id):
            raise ValueError(f"an {self.kind} is built from no other solution (no anchors, source_id or target_id)")
        return self

    def created(self) -> datetime:
        return _timestamp(self.created_at)


class BarrierRow(_Strict):
    a_id: ID
    b_id: ID
    settings_hash: SHA256
    settings: JSON_OBJECT
    result: JSON_OBJECT
    created_at: Optional[Annotated[str, Field(max_length=40)]] = None


class LandscapeRow(_Strict):
    """An instrument's row (solutions/landscapes.py): sharpness, a plane, a curve."""

    kind: Literal["sharpness", "plane", "curve"]
    subject: Annotated[str, Field(pattern=r"^[0-9]+(-[0-9]+){0,2}$", max_length=64)]
    a_id: ID
    b_id: Optional[ID] = None
    c_id: Optional[ID] = None
    settings_hash: SHA256
    settings: JSON_OBJECT
    result: JSON_OBJECT
    created_at: Optional[Annotated[str, Field(max_length=40)]] = None


class Manifest(_Strict):
    format: Literal["starlight-bundle"]
    version: Literal[1]
    solutions: Annotated[list[SolutionRow], Field(min_length=1, max_length=MAX_SOLUTIONS)]
    barriers: Annotated[list[BarrierRow], Field(max_length=MAX_BARRIERS)] = []
    # Written only when a bundle holds instrument rows, so bundles without them still import in
    # versions that predate the instruments.
    landscapes: Annotated[list[LandscapeRow], Field(max_length=MAX_BARRIERS)] = []


def parse(text: bytes, where: str) -> Manifest:
    """The manifest, or one StarlightError naming the first field that is wrong (never its value)."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StarlightError(f"{where} is not valid JSON: {'nested too deeply' if isinstance(e, RecursionError) else str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise StarlightError(f"{where} is not a {FORMAT} version {VERSION} manifest")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = []
        for p in first["loc"]:
            if isinstance(p, str) and (p in _TYPE_TAGS or "[" in p):
                break  # pydantic names the branch of a union it tried (int, float, ...): not a field
            loc.append(p)
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        msg = first["msg"].removeprefix("Value error, ")
        raise StarlightError(f"{where}: {field} is not allowed: {msg}; nothing was imported") from None
    except RecursionError:
        raise StarlightError(f"{where}: a value is nested too deeply; nothing was imported") from None
    for row in manifest.solutions:
        try:
            row.created()
        except ValueError:
            raise StarlightError(f"{where}: solutions id {row.id}: created_at {row.created_at[:40]!r} is not an ISO date; nothing was imported") from None
    return manifest


_TYPE_TAGS = {"int", "float", "bool", "str", "none", "constrained-str"}


def _timestamp(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
