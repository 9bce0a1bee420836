"""SQLModel tables. Their columns are created by registry/migrations.py; keep the two in step."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Solution(SQLModel, table=True):
    """One trained network: an anchor, a star, an imported checkpoint, an aligned copy, a soup..."""

    __tablename__ = "solutions"

    id: Optional[int] = Field(default=None, primary_key=True)
    # sha256 of (kind, resolved config, seed): the idempotency key that makes retraining a no-op.
    key: str = Field(index=True, unique=True, max_length=64)
    kind: str = Field(index=True, max_length=32)
    arch: str = Field(index=True, max_length=128)
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    width: Optional[int] = Field(default=None, index=True)
    seed: Optional[int] = None
    dataset: str = Field(index=True, max_length=64)
    recipe: Optional[str] = Field(default=None, max_length=128)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    epochs: Optional[int] = None
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sha256: str = Field(max_length=64)
    device: str = Field(default="cpu", max_length=32)
    wall_seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))
    versions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="complete", max_length=16)
    anchors: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source_id: Optional[int] = Field(default=None, foreign_key="solutions.id")
    target_id: Optional[int] = Field(default=None, foreign_key="solutions.id")
    # m004: nullable, so rows written before it read back as None (treat as "no tags", "no history").
    tags: Optional[list[str]] = Field(default=None, sa_column=Column(JSON, nullable=True))
    note: Optional[str] = None
    history: Optional[list[dict[str, Any]]] = Field(default=None, sa_column=Column(JSON, nullable=True))


class BarrierResult(SQLModel, table=True):
    """The interpolation curves of one ordered pair under one set of settings."""

    __tablename__ = "barriers"

    id: Optional[int] = Field(default=None, primary_key=True)
    a_id: int = Field(foreign_key="solutions.id", index=True)
    b_id: int = Field(foreign_key="solutions.id", index=True)
    settings_hash: str = Field(max_length=64, index=True)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))


class LandscapeResult(SQLModel, table=True):
    """One instrument's measurement beyond a line (sharpness at a solution, a plane through three, a
    curved path between two) under one set of settings; `subject` names the solutions ("12", "3-4-5")."""

    __tablename__ = "landscapes"

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)
    subject: str = Field(max_length=64)
    a_id: int = Field(foreign_key="solutions.id", index=True)
    b_id: Optional[int] = Field(default=None, foreign_key="solutions.id", index=True)
    c_id: Optional[int] = Field(default=None, foreign_key="solutions.id", index=True)
    settings_hash: str = Field(max_length=64, index=True)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))
