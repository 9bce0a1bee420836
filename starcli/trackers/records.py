"""starlight's own JSON records -> the trackers' data model. Plain dicts in, so no registry import here.

solution_run(solutions.record(reg, sol, full=True), history)   # `show --json` of one solution
pair_runs(barriers.measure(...))                               # `barrier --json`: one TrackedPair per pair
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import TrackedPair, TrackedRun, run_name

FINAL = ("train_loss", "train_acc", "test_loss", "test_acc")


def solution_run(record: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = (), group: str = "export") -> TrackedRun:
    """A solution's full record (it needs "config"); history is its per-epoch rows, if they were kept."""
    metrics = record.get("metrics") or {}
    config = record.get("config") or {"arch_kwargs": {"width": record.get("width")}}
    return TrackedRun(
        name=run_name(record["kind"], config, record.get("seed"), prefix=f"solution {record['id']}: "),
        group=group,
        job_type=record["kind"],
        params=dict(record.get("config") or {}),
        metrics={k: metrics.get(k) for k in FINAL} | {k: v for k, v in metrics.items() if k not in FINAL},
        history=tuple(history),
        checkpoint=record.get("checkpoint"),
        tags={
            k: record[k] for k in ("kind", "arch", "dataset", "seed", "sha256", "recipe") if record.get(k) is not None
        },
    )


def pair_runs(measured: Mapping[str, Any], group: str = "export") -> list[TrackedPair]:
    """The pairs of a barrier measurement: barriers and peak loss per split as metrics, the curves as series."""
    settings = measured["settings"]
    out = []
    for pair in measured["pairs"]:
        metrics: dict[str, float] = {}
        curves: dict[str, list[float]] = {"t": list(pair["t"])}
        for split in settings["splits"]:
            curve = pair[split]
            metrics[f"{split}_loss_barrier"] = curve["loss_barrier"]
            metrics[f"{split}_acc_barrier"] = curve["acc_barrier"]
            metrics[f"{split}_peak_loss"] = max(curve["loss"])
            curves[f"{split}_loss"] = list(curve["loss"])
            curves[f"{split}_acc"] = list(curve["acc"])
        out.append(
            TrackedPair(
                name=f"pair {pair['a']}-{pair['b']} ({pair['kind']})",
                params={"a_id": pair["a"], "b_id": pair["b"], "kind": pair["kind"], "settings": dict(settings)},
                metrics=metrics,
                curves=curves,
                tags={"kind": pair["kind"]},
                group=group,
                job_type=pair["kind"],
            )
        )
    return out
