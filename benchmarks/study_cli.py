"""What the replicated studies (study_instruments.py, study_realign_every.py) share: running a CLI command,
their replicates' seeds, and reading a `barrier --json` result. Not a benchmark itself (`make bench` runs
bench_*.py only); the studies import it from their own folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def starlight(home: str, *args: str) -> object:
    """One CLI command with --json, its stdout parsed; its progress is not shown, its error is."""
    exe = Path(sys.executable).with_name("starlight")
    cmd = [str(exe) if exe.exists() else "starlight", "--home", home, *args, "--json"]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def replicate_seeds(r: int, anchors: int, held_outs: int, seed_from: int) -> tuple[list[int], list[int]]:
    """Replicate r's anchor and held-out seeds: a block of 10 seeds of its own from seed_from on."""
    base = seed_from + 10 * r
    return list(range(base, base + anchors)), list(range(base + anchors, base + anchors + held_outs))


def per_held_out(result: dict, held_outs: list[int]) -> tuple[list[float], list[float]]:
    """(star[h], regular[h] = mean over the anchors of anchor–h) train-loss barriers, in held_outs' order."""
    star = {p["b"]: p["train"]["loss_barrier"] for p in result["pairs"] if p["kind"] == "star-held-out"}
    regular: dict[int, list[float]] = {}
    for p in result["pairs"]:
        if p["kind"] == "regular-held-out":
            regular.setdefault(p["b"], []).append(p["train"]["loss_barrier"])
    return [star[h] for h in held_outs], [sum(regular[h]) / len(regular[h]) for h in held_outs]


def fmt_ci(result: dict) -> str:
    ci = result["ratio_ci"]
    if result["ratio"] is None or ci is None:
        return "undefined"
    return f"{result['ratio']:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]"
