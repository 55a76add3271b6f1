"""The sweep's report, rewritten from ``results.csv`` after every cell: ``data_size.md`` (a table of top-1 by model
and fraction, mean ± std over seeds, and the gap between the first two models) and ``data_size.png``."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ..viz.curves import plot_data_size
from .journal import read_results
from .spec import fraction_key

__all__ = ["summarize", "write_report"]


def summarize(rows: Iterable[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Per model (in order of first appearance), per fraction: n_train, top-1 mean / min / max / std over seeds,
    seeds, mean train seconds."""
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
        out.setdefault(model, []).append({
            "fraction": fraction, "n_train": round(sum(r["n_train"] for r in rs) / len(rs)), "top1": mean,
            "top1_min": min(t), "top1_max": max(t), "top1_std": std, "seeds": len(rs),
            "train_seconds": sum(r["train_seconds"] for r in rs) / len(rs),
        })
    return out


def write_report(output_dir: str | os.PathLike, title: str = "", current: Optional[Set[str]] = None
                 ) -> Optional[Tuple[Path, Path]]:
    """Write ``data_size.md`` and ``data_size.png`` from ``output_dir/results.csv``; None when it has no rows.

    ``current``: the cell hashes of the sweep as configured now; rows made by another configuration are left out.
    """
    out = Path(output_dir)
    rows = [r for r in read_results(out / "results.csv") if current is None or r["cell_hash"] in current]
    if not rows:
        return None
    summary = summarize(rows)
    md = out / "data_size.md"
    md.write_text("\n".join(_table(rows, summary, title)) + "\n")
    png = plot_data_size(summary, out / "data_size.png", title=title or "Attention vs CNN by training-set size")
    return md, png


def _table(rows: List[Dict[str, Any]], summary: Dict[str, List[Dict[str, Any]]], title: str) -> List[str]:
    """The lines of ``data_size.md``."""
    fractions = sorted({r["fraction"] for r in rows})
    lines = [f"# {title or 'Test top-1 vs training-set size'}", "",
             "Test top-1 (%) on the full test split, mean ± std over seeds (n = seeds); columns: training fraction "
             "(training images).", ""]
    n_at = {f: round(sum(r["n_train"] for r in rows if r["fraction"] == f) / max(1, sum(r["fraction"] == f for r in rows)))
            for f in fractions}
    lines.append("| model | " + " | ".join(f"{fraction_key(f)} ({n_at[f]})" for f in fractions) + " |")
    lines.append("|---|" + "---:|" * len(fractions))
    for model, points in summary.items():
        by_f = {p["fraction"]: p for p in points}
        cells = []
        for f in fractions:
            p = by_f.get(f)
            cells.append("" if p is None else f"{100 * p['top1']:.1f} ± {100 * p['top1_std']:.1f} (n={p['seeds']})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    models = list(summary)
    if len(models) >= 2:
        a, b = models[0], models[1]
        gap = []
        for f in fractions:
            pa = {p["fraction"]: p for p in summary[a]}.get(f)
            pb = {p["fraction"]: p for p in summary[b]}.get(f)
            if pa and pb:
                gap.append(f"{fraction_key(f)}: {100 * (pa['top1'] - pb['top1']):+.1f}")
        lines += ["", f"Gap `{a}` − `{b}` (top-1 points) by fraction: " + ", ".join(gap)]
    secs = sum(r["train_seconds"] for r in rows)
    lines += ["", f"{len(rows)} cells, {secs / 60:.1f} min of training in all; devices per cell: "
              + ", ".join(sorted({str(r['devices']) for r in rows})) + "."]
    return lines
