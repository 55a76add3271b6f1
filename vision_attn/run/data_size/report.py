"""The sweep's report, rewritten from ``results.csv`` after every cell: ``data_size.md`` and ``data_size.png``.

``data_size.md``: test top-1 by model and fraction (mean ± std over seeds) with each model's parameter count; for
every model other than the declared ``baseline``, its gap to the baseline at each fraction (the mean of the paired
per-seed gaps, model − baseline, with a 95% t-interval over seeds) and one sentence saying whether the gap shrinks
with data and whether it crosses zero; the optimizer steps each cell took; the budget rule.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..viz.curves import plot_data_size
from .journal import read_results
from .spec import fraction_key

__all__ = ["gap_trend", "paired_gaps", "summarize", "t_interval", "write_report"]

BAND = "min–max over seeds"  # what the shaded band of each top-1 curve is


def summarize(rows: Iterable[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Per model (in order of first appearance), per fraction: n_train, top-1 mean / min / max / std over seeds,
    seeds, mean train seconds, mean optimizer steps and parameter count (None where the rows lack them)."""
    rows = list(rows)
    order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    groups: Dict[Tuple[str, float], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["fraction"]), []).append(r)
    out: Dict[str, List[Dict[str, Any]]] = {}
    for (model, fraction), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        t = [r["top1"] for r in rs]
        mean = sum(t) / len(t)
        std = math.sqrt(sum((x - mean) ** 2 for x in t) / (len(t) - 1)) if len(t) > 1 else 0.0
        steps = [r["steps"] for r in rs if r.get("steps") is not None]
        params = [r["params"] for r in rs if r.get("params") is not None]
        out.setdefault(model, []).append(
            {
                "fraction": fraction,
                "n_train": round(sum(r["n_train"] for r in rs) / len(rs)),
                "top1": mean,
                "top1_min": min(t),
                "top1_max": max(t),
                "top1_std": std,
                "seeds": len(rs),
                "train_seconds": sum(r["train_seconds"] for r in rs) / len(rs),
                "steps": sum(steps) / len(steps) if steps else None,
                "params": max(params) if params else None,
            }
        )
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, Optional[float], Optional[float]]:
    """``(mean, low, high)``: the two-sided ``level`` Student-t interval of the mean of ``values`` (n - 1 degrees of
    freedom); low and high are None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    from scipy.stats import t  # imported here: only the report needs it

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_gaps(rows: Iterable[Dict[str, Any]], baseline: str) -> Dict[str, List[Dict[str, Any]]]:
    """For every model but ``baseline`` (in order of first appearance), at every fraction where it and the baseline
    share seeds: the per-seed gaps ``top1(model, seed) - top1(baseline, seed)`` (``by_seed``), their mean, 95%
    t-interval (``low``, ``high``; None with one seed), ``n`` and the fraction's mean ``n_train``."""
    rows = list(rows)
    base = {(fraction_key(r["fraction"]), r["seed"]): r["top1"] for r in rows if r["model"] == baseline}
    out: Dict[str, List[Dict[str, Any]]] = {}
    for model in dict.fromkeys(r["model"] for r in rows if r["model"] != baseline):
        mine = [r for r in rows if r["model"] == model and (fraction_key(r["fraction"]), r["seed"]) in base]
        points = []
        for fraction in sorted({r["fraction"] for r in mine}):
            at = [r for r in mine if r["fraction"] == fraction]
            by_seed = {r["seed"]: r["top1"] - base[(fraction_key(fraction), r["seed"])] for r in at}
            mean, low, high = t_interval(list(by_seed.values()))
            points.append(
                {
                    "fraction": fraction,
                    "n_train": round(sum(r["n_train"] for r in at) / len(at)),
                    "gap": mean,
                    "low": low,
                    "high": high,
                    "n": len(by_seed),
                    "by_seed": by_seed,
                }
            )
        out[model] = points
    return out


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` on ``xs``."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def gap_trend(points: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Whether a model's gap to the baseline (:func:`paired_gaps` points) shrinks with data and whether it crosses 0.

    ``slope``: least-squares slope of the mean gap on log10(fraction), top-1 per 10x data; its 95% CI is the
    t-interval over seeds of each seed's own slope (seeds with >= 2 fractions). ``trend``: ``"shrinks"`` when the
    slope's sign is opposite to the gap's at the smallest fraction (the gap moves toward zero or past it) and its CI
    excludes 0, ``"widens"`` when the sign is the same and the CI excludes 0, else ``"no clear trend"`` (with one
    seed, no CI: the slope's sign decides). ``crossing``: ``"crosses"`` when some fraction's CI lies wholly below 0 and
    a larger one's wholly above (attention behind, then ahead: the claim), ``"crosses the other way"`` (ahead, then
    behind), ``"no significant crossing"`` when the mean changes sign but the CIs do not separate, else
    ``"does not cross"``. Returns those, the numbers and ``sentence``.
    """
    pts = sorted(points, key=lambda p: p["fraction"])
    res: Dict[str, Any] = {
        "trend": "no clear trend",
        "crossing": "does not cross",
        "slope": None,
        "slope_low": None,
        "slope_high": None,
        "seeds_for_slope": 0,
    }
    if len(pts) >= 2:
        res["slope"] = _slope([math.log10(p["fraction"]) for p in pts], [p["gap"] for p in pts])
        per_seed = []
        for seed in sorted({s for p in pts for s in p["by_seed"]}):
            mine = [(math.log10(p["fraction"]), p["by_seed"][seed]) for p in pts if seed in p["by_seed"]]
            if len(mine) >= 2:
                per_seed.append(_slope([x for x, _ in mine], [y for _, y in mine]))
        res["seeds_for_slope"] = len(per_seed)
        if len(per_seed) >= 2:
            _, res["slope_low"], res["slope_high"] = t_interval(per_seed)
        clear = res["slope"] != 0 if res["slope_low"] is None else res["slope_low"] > 0 or res["slope_high"] < 0
        if clear:
            res["trend"] = "shrinks" if res["slope"] * pts[0]["gap"] < 0 else "widens"
    below = [p["fraction"] for p in pts if p["high"] is not None and p["high"] < 0]
    above = [p["fraction"] for p in pts if p["low"] is not None and p["low"] > 0]
    if below and above and min(below) < max(above):
        res["crossing"] = "crosses"
    elif below and above:
        res["crossing"] = "crosses the other way"
    elif any(p["gap"] < 0 for p in pts) and any(p["gap"] > 0 for p in pts):
        res["crossing"] = "no significant crossing"
    res["below"], res["above"] = below, above
    res["sentence"] = _sentence(pts, res)
    return res


def _sentence(pts: Sequence[Dict[str, Any]], res: Dict[str, Any]) -> str:
    if not pts:
        return "no fraction has both this model and the baseline yet."
    if res["slope"] is None:
        trend = "its trend is unknown (one fraction so far)"
    else:
        ci = (
            f"95% CI [{100 * res['slope_low']:+.1f}, {100 * res['slope_high']:+.1f}] over {res['seeds_for_slope']} seeds"
            if res["slope_low"] is not None
            else "no CI: fewer than 2 seeds span 2 fractions"
        )
        verb = {
            "shrinks": "shrinks with data",
            "widens": "widens with data",
            "no clear trend": "shows no clear trend with data",
        }[res["trend"]]
        trend = f"the gap {verb} (slope {100 * res['slope']:+.1f} top-1 points per 10x data, {ci})"
    n, c, fk = len(pts), res["crossing"], fraction_key
    if c == "crosses":
        cross = f"crosses zero (CI below 0 at fraction {fk(min(res['below']))}, above 0 at {fk(max(res['above']))})"
    elif c == "crosses the other way":
        cross = (
            f"crosses zero the other way (CI above 0 at fraction {fk(min(res['above']))}, below 0 at "
            f"{fk(max(res['below']))})"
        )
    elif c == "no significant crossing":
        cross = "its mean changes sign but no CI lies on each side of 0, so it does not cross significantly"
    elif all(p["gap"] < 0 for p in pts):
        cross = f"does not cross zero (model behind at every fraction; CI below 0 at {len(res['below'])} of {n})"
    elif all(p["gap"] > 0 for p in pts):
        cross = f"does not cross zero (model ahead at every fraction; CI above 0 at {len(res['above'])} of {n})"
    else:
        cross = "does not cross zero"
    return f"{trend}, and it {cross}."


def write_report(
    output_dir: str | os.PathLike,
    title: str = "",
    baseline: Optional[str] = None,
    budget_rule: Optional[str] = None,
    current: Optional[Set[str]] = None,
) -> Optional[Tuple[Path, Path]]:
    """Write ``data_size.md`` and ``data_size.png`` from ``output_dir/results.csv``; None when it has no rows.
    Gaps are to ``baseline`` (the sweep's declared baseline label); none without one. ``current``: the cell hashes
    of the sweep as configured now; rows made by another configuration (history) are left out."""
    out = Path(output_dir)
    rows = [r for r in read_results(out / "results.csv") if current is None or r["cell_hash"] in current]
    if not rows:
        return None
    summary = summarize(rows)
    gaps = paired_gaps(rows, baseline) if baseline is not None and baseline in summary else {}
    md = out / "data_size.md"
    md.write_text("\n".join(_markdown(rows, summary, gaps, title, baseline, budget_rule)) + "\n")
    png = plot_data_size(
        summary,
        out / "data_size.png",
        title=title or "Attention vs CNN by training-set size",
        gaps=gaps,
        baseline=baseline,
        band=BAND,
    )
    return md, png


def _markdown(
    rows: List[Dict[str, Any]],
    summary: Dict[str, List[Dict[str, Any]]],
    gaps: Dict[str, List[Dict[str, Any]]],
    title: str,
    baseline: Optional[str],
    budget_rule: Optional[str],
) -> List[str]:
    """The lines of ``data_size.md``."""
    fractions = sorted({r["fraction"] for r in rows})
    n_at = {
        f: round(sum(r["n_train"] for r in rows if r["fraction"] == f) / sum(r["fraction"] == f for r in rows))
        for f in fractions
    }
    head = "| model | params | " + " | ".join(f"{fraction_key(f)} ({n_at[f]})" for f in fractions) + " |"
    rule = "|---|---:|" + "---:|" * len(fractions)
    lines = [f"# {title or 'Test top-1 vs training-set size'}", ""]
    if budget_rule:
        lines += [f"Budget rule: {budget_rule}.", ""]
    lines += [
        "Test top-1 (%) on the full test split, mean ± std over seeds (n = seeds); columns: training fraction "
        "(training images).",
        "",
        head,
        rule,
    ]
    for model, points in summary.items():
        by_f = {p["fraction"]: p for p in points}
        cells = [
            "—"
            if f not in by_f
            else f"{100 * by_f[f]['top1']:.1f} ± {100 * by_f[f]['top1_std']:.1f} (n={by_f[f]['seeds']})"
            for f in fractions
        ]
        lines.append(f"| {model} | {_params(points)} | " + " | ".join(cells) + " |")
    lines.append("")
    if baseline is None:
        lines.append("No baseline declared (`baseline: <label>` in the sweep YAML): no gaps computed.")
    elif baseline not in summary:
        lines.append(f"The declared baseline `{baseline}` has no finished cells yet: no gaps computed.")
    else:
        lines += [
            f"Gap to the baseline `{baseline}` (top-1 points, model − baseline): the mean over seeds of the paired "
            "per-seed gap, with its 95% t-interval (Student t, n − 1 degrees of freedom; none for n = 1).",
            "",
            head.replace("| params ", "").replace("| model", "| model − baseline"),
            "|---|" + "---:|" * len(fractions),
        ]
        for model, points in gaps.items():
            by_f = {p["fraction"]: p for p in points}
            lines.append(f"| {model} | " + " | ".join(_gap_cell(by_f.get(f)) for f in fractions) + " |")
        lines.append("")
        for model, points in gaps.items():
            lines.append(f"- `{model}` − `{baseline}`: {gap_trend(points)['sentence']}")
        lines.append("")
    lines += [
        "Optimizer steps per cell (mean over seeds):",
        "",
        "| model | " + " | ".join(fraction_key(f) for f in fractions) + " |",
        "|---|" + "---:|" * len(fractions),
    ]
    for model, points in summary.items():
        by_f = {p["fraction"]: p for p in points}
        lines.append(
            f"| {model} | "
            + " | ".join(
                "—" if by_f.get(f) is None or by_f[f]["steps"] is None else f"{by_f[f]['steps']:.0f}" for f in fractions
            )
            + " |"
        )
    secs = sum(r["train_seconds"] for r in rows)
    lines += [
        "",
        f"Plot: `data_size.png`, top-1 with the {BAND} shaded"
        + (" and each model's gap to the baseline with its 95% CI" if gaps else "")
        + ".",
        f"{len(rows)} cells, {secs / 60:.1f} min of training in all; devices per cell: "
        + ", ".join(sorted({str(r["devices"]) for r in rows}))
        + ".",
    ]
    return lines


def _params(points: List[Dict[str, Any]]) -> str:
    counts = {p["params"] for p in points if p["params"] is not None}
    return "?" if not counts else "/".join(f"{c / 1e6:.3f}M" for c in sorted(counts))


def _gap_cell(p: Optional[Dict[str, Any]]) -> str:
    if p is None:
        return "—"
    ci = "" if p["low"] is None else f" [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"
    return f"{100 * p['gap']:+.1f}{ci} (n={p['n']})"
