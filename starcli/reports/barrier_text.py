"""The barrier report a person reads: every pair, the summary per kind of pair and split, the star's own
metrics beside its anchors', and the definitions of what was measured."""

from __future__ import annotations

from typing import Any

from starcli.engine.barriers import FITTED_TRAIN_ACC, STAR_PAIRS, definitions
from starcli.engine.evidence import describe

from .tables import table_text

PAIR_COLUMNS = [
    "a", "b", "kind", "train_loss_barrier", "train_acc_barrier", "test_loss_barrier", "test_acc_barrier",
    "train_peak_loss", "test_peak_loss", "star_is_solution",
]
NOT_PAIR_KINDS = ("ratio", "star_metrics", "anchor_metrics", "verdict", "evidence")


SUMMARY_COLUMNS = ["pairs", "split", "loss barrier", "acc barrier (pp)", "peak loss", "n"]


def pair_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pair: its barriers and peak loss per split, and the star's verdict on star pairs."""
    star_is_solution = (result["summary"].get("verdict") or {}).get("star_is_solution")
    rows = []
    for p in result["pairs"]:
        row = {"a": p["a"], "b": p["b"], "kind": p["kind"]}
        for split in ("train", "test"):
            if split in p:
                row[f"{split}_loss_barrier"] = p[split]["loss_barrier"]
                row[f"{split}_acc_barrier"] = p[split]["acc_barrier"]
                row[f"{split}_peak_loss"] = max(p[split]["loss"])
        if p["kind"] == STAR_PAIRS and star_is_solution is not None:
            row["star_is_solution"] = star_is_solution
        rows.append(row)
    return rows


def human_report(result: dict[str, Any]) -> str:
    summary, settings = result["summary"], result["settings"]
    parts = [table_text(pair_rows(result), PAIR_COLUMNS, None, title="pairs")]
    rows = []
    for kind, by_split in summary.items():
        if kind in NOT_PAIR_KINDS:
            continue
        for split, stats in by_split.items():
            lb, ab, peak = stats["loss_barrier"], stats["acc_barrier"], stats.get("peak_loss")
            rows.append(
                {
                    "pairs": kind,
                    "split": split,
                    "loss barrier": f"{lb['mean']:.4f} ± {lb['std']:.4f}",
                    "acc barrier (pp)": f"{ab['mean']:.2f} ± {ab['std']:.2f}",
                    "peak loss": f"{peak['mean']:.4f} ± {peak['std']:.4f}" if peak else "-",
                    "n": lb["n"],
                }
            )
    for split, ratio in (summary.get("ratio") or {}).items():
        fmt = lambda r: "-" if r is None else f"{r:.3f}"  # noqa: E731
        rows.append({"pairs": "ratio star/regular", "split": split, "loss barrier": fmt(ratio["loss_barrier"]),
                     "acc barrier (pp)": fmt(ratio["acc_barrier"]), "n": None})
    parts.append(table_text(rows, SUMMARY_COLUMNS, None, title="summary (mean ± std over pairs)"))
    if summary.get("star_metrics"):
        lines = [_metrics_line(f"star {result['star']} itself", summary["star_metrics"])]
        if summary.get("anchor_metrics"):
            lines.append(_metrics_line("anchors' mean", summary["anchor_metrics"]))
        lines.append(verdict_line(summary.get("verdict")))
        lines += evidence_lines(summary.get("evidence"))
        parts.append("\n".join(lines))
    parts.append(definitions(settings))
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _metrics_line(label: str, m: dict[str, float]) -> str:
    nan = float("nan")
    return (
        f"{label:>16}: train loss {m.get('train_loss', nan):.4f}, train acc {m.get('train_acc', nan):.2f}%, "
        f"test loss {m.get('test_loss', nan):.4f}, test acc {m.get('test_acc', nan):.2f}%"
    )


def evidence_lines(evidence: dict[str, Any] | None) -> list[str]:
    """The second verdict, per split: does the star connect better than regular pairs, worded from the CI."""
    if not evidence:
        return ["connects better than regular pairs: unknown (no regular baseline was measured; --baseline anchors)."]
    return [f"connects better: {describe(result, split)}" for split, result in evidence.items()]


def verdict_line(verdict: dict[str, Any] | None) -> str:
    """The plain sentence under every star's barriers: is the star itself a solution? With the numbers the
    rule compares (ratio, absolute excess, train accuracies), and a warning when the anchors themselves
    have not fitted their training set, since "a solution" is relative to them."""
    if not verdict or verdict.get("star_is_solution") is None:
        return "A small barrier only counts if the star is itself a good solution: its train loss is unknown here."
    ratio, excess = verdict["loss_ratio"], verdict.get("loss_excess")
    times = f"{ratio:.2f}× the anchors'" if ratio is not None else "compared with the anchors'"
    regression = verdict.get("task") == "regression"
    if excess is not None:
        times += f", {excess:+.4g} (mean squared error)" if regression else f", {excess:+.4f} nats"
    accs = (verdict.get("star_train_acc"), verdict.get("anchor_train_acc"))
    if None not in accs:
        times += f"; train {'R²' if regression else 'acc'} {accs[0]:.2f}% vs {accs[1]:.2f}%"
    if verdict["star_is_solution"]:
        line = f"verdict: the star is a solution (train loss {times}; rule: {verdict['rule']})."
    else:
        line = (
            f"WARNING: the star is NOT a solution (train loss {times}; rule: {verdict['rule']}); part of a small "
            f"barrier is then its own high loss at t = 0, not connectivity. {_advice(verdict.get('star_settings') or {})}"
        )
    if verdict.get("anchors_fitted") is False:
        line += (
            f"\nWARNING: the anchors themselves fit only {verdict['anchor_train_acc']:.1f}% of their training set (below "
            f"{FITTED_TRAIN_ACC:g}%): they are under-fitted models, and \"a solution\" here means only \"as good as they are\"."
        )
    return line


def _advice(settings: dict[str, Any]) -> str:
    """What to try next, given the settings the star was actually built with."""
    if not settings:
        return "Train it longer (--epochs) or with the default preset (solution)."
    if not settings.get("mu_star"):
        return "Give its own loss a weight (--mu-star 1, as the default preset solution does)."
    if not settings.get("align_anchors"):
        return "Re-align the anchors to it every epoch (--realign, as the default preset solution does)."
    if (settings.get("realign_every") or 1) > 1:  # absent: every epoch (stars built before the option)
        return "Re-align the anchors to it every epoch, not every few (--realign-every 1, as the default preset does)."
    if settings.get("init") != "anchor-mean":
        return "Start it from the anchors' aligned mean (--init anchor-mean)."
    return "It already uses the default preset's settings: train it longer (--epochs) or from more anchors."


DEMO_COLUMNS = [
    "replicate", "star", "anchors", "held-outs", "star-held-out (train)", "regular-held-out (train)", "ratio (train)",
    "star train loss vs anchors'", "star is a solution",
]


def demo_report(result: dict[str, Any]) -> str:
    """What `starlight demo` prints: one row per replicate, both verdicts over all replicates, and the claim
    this run supports, worded from its own confidence interval."""
    first = result["replicates"][0]
    header = (
        f"demo: {len(result['replicates'])} replicates of `{result['recipe']}` at width {result['width']}; each has its "
        f"own seeds: {len(first['anchors'])} anchors build a star (default settings), tested with weight matching on "
        f"{len(first['held_out'])} held-outs beside the regular baseline (each anchor to each held-out).\n\n"
    )
    return header + replicates_report(result, with_claim=True)


def replicates_report(result: dict[str, Any], with_claim: bool = False) -> str:
    """Several stars read as replicates (`barrier --star 9,19,29`, the demo): a row per star, the solution
    verdict over all of them, and the pooled comparison per split with its CI."""
    reps = result["replicates"]
    rows, verdicts = [], []
    for i, rep in enumerate(reps):
        summary = rep["summary"]
        v = summary.get("verdict") or {}
        verdicts.append(v)
        stat = lambda kind: (summary.get(kind) or {}).get("train", {}).get("loss_barrier") or {}  # noqa: E731
        star, regular = stat("star-held-out"), stat("regular-held-out")
        ratio = ((summary.get("ratio") or {}).get("train") or {}).get("loss_barrier")
        rows.append({
            "replicate": rep.get("replicate", i),
            "star": rep["star"],
            "anchors": _ids(rep["anchors"]),
            "held-outs": _ids(rep["held_out"]),
            "star-held-out (train)": f"{star['mean']:.3f} ± {star['std']:.3f}" if star else "-",
            "regular-held-out (train)": f"{regular['mean']:.3f} ± {regular['std']:.3f}" if regular else "-",
            "ratio (train)": "-" if ratio is None else f"{ratio:.3f}",
            "star train loss vs anchors'": "-" if v.get("loss_ratio") is None
            else f"{v['loss_ratio']:.2f}× ({v['loss_excess']:+.4f}{'' if v.get('task') == 'regression' else ' nats'})",
            "star is a solution": v.get("star_is_solution"),
        })
    parts = [table_text(rows, DEMO_COLUMNS, None, title="replicates (train loss barrier, mean ± std over pairs)")]
    known = [v.get("star_is_solution") for v in verdicts if v.get("star_is_solution") is not None]
    solutions = sum(bool(k) for k in known)
    rule = (verdicts[0] or {}).get("rule", "")
    lines = [f"verdict 1, the star is a solution: in {solutions} of {len(reps)} replicates (rule: {rule})."]
    for v in verdicts:
        if v.get("anchors_fitted") is False:
            lines.append(verdict_line(v).split("\n", 1)[-1])
            break
    evidence = result.get("evidence") or {}
    if not evidence:
        lines.append("verdict 2: unknown (no regular baseline was measured; --baseline anchors).")
    for split, found in evidence.items():
        lines.append(f"verdict 2, {split}: {describe(found, split)}")
    if result.get("shared_held_outs"):
        lines.append(
            f"caution: the stars share their {result['shared_held_outs']} held-outs, so they are not independent "
            "replicates and the CI is too narrow; give each star its own held-outs for a CI that holds."
        )
    if with_claim:
        lines.append(claim(evidence.get("train"), solutions, len(reps)))
    parts.append("\n".join(lines))
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def claim(found: dict[str, Any] | None, solutions: int, replicates: int) -> str:
    """The one sentence the demo stands behind, from its own CI and its solution verdicts."""
    if not found or found.get("ratio_ci") is None:
        return "claim: none; the regular baseline could not be measured."
    low, high = found["ratio_ci"]
    per = found.get("held_outs_per_replicate") or [found["held_outs"] // max(1, found["replicates"])]
    where = f"{found['replicates']} replicates × {per[0]} held-outs" if len(per) == 1 else f"{found['replicates']} replicates"
    ci = f"95% CI {low:.3f}–{high:.3f}"
    if found["connects_better"] == "yes" and solutions == replicates:
        return (
            f"claim: supported by this run, on this task — each star is itself a solution, and its barriers to new "
            f"solutions are {found['ratio']:.2f}× those between solutions ({ci}, {where}): the star is linearly "
            "connected to held-out solutions better than they are to each other."
        )
    if found["connects_better"] == "yes":
        return (
            f"claim: only partly supported — the star/regular ratio is {found['ratio']:.2f} ({ci}, {where}), but "
            f"only {solutions} of {replicates} stars are solutions, so part of the small barrier is the stars' own loss."
        )
    return (
        f"claim: NOT supported by this run — the star/regular ratio is {found['ratio']:.2f} with a {ci} ({where}), "
        "which does not lie below 1."
    )


def _ids(ids: list[int]) -> str:
    """1,2,3,4 → 1-4: a replicate's consecutive ids in a narrow column."""
    if ids and ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 2:
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))
