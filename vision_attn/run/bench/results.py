"""Results as data: ``results/<benchmark>-<machine>.csv``, one row per measurement, and the tables the docs render
from them (``tools/benchmark.py results``; the docs site reads the files at build time, nothing is typed by hand).

Every row has :data:`REQUIRED` columns (``model, params, gflops, img_size, throughput, date, commit, machine``; a
cell that does not apply is empty) plus the benchmark's own metric columns (``median_ms``, ``top1``, ...).
:func:`write_results` is the one writer every benchmark calls; :func:`model_stats` gives a registered model's
parameters and GFLOPs at its default input size (counted on the meta device: no memory, no weights).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import os
import platform
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

REQUIRED = ("model", "params", "gflops", "img_size", "throughput", "date", "commit", "machine")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]*$")
_MACHINE = re.compile(r"^[a-z0-9][a-z0-9_.]*(-[a-z0-9_.]+)*$")
# `results` runs these `benchmark.py` argument lists (CPU sizes); each writes results/<name>-<machine>.csv
SUITES: Dict[str, List[str]] = {
    "speed": ["speed", "--only", "attention"],
    "vit": ["speed", "--only", "vit"],
    "models": ["speed", "--only", "models", "--models", "*_cifar", "*_patch4_32"],
    "gan": ["speed", "--only", "gan"],
    "compiled": ["speed", "--only", "compiled"],
    "pixel": ["pixel", "--only", "global", "local"],
    "kernels": ["pixel", "--only", "kernels", "kernels-inference"],
}


def machine_slug(device: Optional[torch.device] = None) -> str:
    """A file-name-safe name of this machine: ``cpu<cores>-<cpu model>`` or ``cuda-<gpu name>``, e.g.
    ``cpu2-intel-xeon-2.50ghz``, ``cuda-nvidia-h200``."""
    if device is not None and torch.device(device).type == "cuda":
        name = "cuda-" + torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1] for ln in f if ln.startswith("model name")), cpu)
        except OSError:
            pass
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        name = f"cpu{cores}-" + re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|\d+-core", " ", cpu.lower())
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def current_commit(repo: Optional[Path] = None) -> str:
    """The short git commit of ``repo`` (default: this checkout), ``+dirty`` with local changes; ``unknown`` outside
    a git checkout."""
    cwd = repo or Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def read_rows(path: str | Path) -> List[Dict[str, str]]:
    """The rows of one results CSV as dicts of strings (the file's column order)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_results(
    benchmark: str,
    rows: List[Dict[str, Any]],
    out_dir: str | Path = "results",
    *,
    key: Sequence[str] = ("model", "img_size"),
) -> Path:
    """Write ``rows`` to ``out_dir/<benchmark>-<machine>.csv`` and return its path.

    Missing ``date`` (UTC today), ``commit`` (:func:`current_commit`) and ``machine`` (:func:`machine_slug`) are
    filled in; every row must end up on one machine. Existing rows of the file with the same ``key`` values (plus
    ``implementation`` when present) are replaced, the others kept, so a rerun of a subset updates its rows.
    Columns: :data:`REQUIRED` first, then the rows' other keys in first-seen order.
    """
    if not _NAME.match(benchmark):
        raise ValueError(f"write_results: benchmark {benchmark!r} must be lower-case letters, digits, '_' or '.'")
    if not rows:
        raise ValueError(f"write_results({benchmark!r}): no rows to write")
    fill = {"date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(), "commit": None, "machine": None}
    new = []
    for i, row in enumerate(rows):
        if not row.get("model"):
            raise ValueError(f"write_results({benchmark!r}): row {i} has no 'model': {row}")
        row = {c: row.get(c, "") for c in REQUIRED} | {k: v for k, v in row.items() if k not in REQUIRED}
        for col in fill:
            if row[col] in ("", None):
                if fill[col] is None:
                    fill[col] = current_commit() if col == "commit" else machine_slug()
                row[col] = fill[col]
        new.append(row)
    machines = sorted({str(r["machine"]) for r in new})
    if len(machines) != 1 or not _MACHINE.match(machines[0]):
        raise ValueError(
            f"write_results({benchmark!r}): rows must share one machine slug (lower-case, '-'), got {machines}"
        )
    path = Path(out_dir) / f"{benchmark}-{machines[0]}.csv"
    ident = [k for k in key] + (["implementation"] if any("implementation" in r for r in new) else [])
    kept = read_rows(path) if path.is_file() else []
    replaced = {tuple(str(r.get(k, "")) for k in ident) for r in new}
    kept = [r for r in kept if tuple(str(r.get(k, "")) for k in ident) not in replaced]
    columns: List[str] = []
    for r in [*kept, *new]:
        columns += [c for c in r if c not in columns]
    columns = list(REQUIRED) + [c for c in columns if c not in REQUIRED]
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows([*kept, *new])
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)  # a reader never sees a half-written file
    return path


def model_stats(name: str) -> Dict[str, Any]:
    """``{"params", "gflops", "img_size"}`` of registered ``name`` with its default arguments, at its default input
    size; GFLOPs = 1e9 FLOPs of one forward of one image (torch's FlopCounterMode: a multiply-add is 2 FLOPs),
    the SA-GAN's = its generator's for one sample. Built on the meta device when the model allows (no memory)."""
    from torch.utils.flop_counter import FlopCounterMode

    import vision_attn
    from vision_attn.models.protocols import GanModel, conforms

    with torch.device("meta"):
        model = vision_attn.create_model(name).eval()
    size = tuple(model.pretrained_cfg["input_size"])
    params = sum(p.numel() for p in model.parameters())
    for device in ("meta", "cpu"):
        if device == "cpu":  # an op without a meta kernel (a data-dependent check): uninitialised CPU weights suffice
            model = model.to_empty(device="cpu")
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.no_grad(), torch.device(device):
                if conforms(model, GanModel):
                    labels = torch.zeros(1, dtype=torch.long) if model.num_classes else None
                    model.generator(torch.randn(1, model.generator.z_dim), labels)
                else:
                    model(torch.randn(1, *size))
        except (RuntimeError, NotImplementedError):
            if device == "cpu":
                raise
            continue
        return {
            "params": params,
            "gflops": round(counter.get_total_flops() / 1e9, 3),
            "img_size": f"{size[1]}x{size[2]}",
        }
    raise AssertionError("unreachable")


def _registered(label: str) -> Optional[str]:
    from vision_attn.models.registry import is_model

    names = [w for w in re.split(r"[\s,()]+", label) if is_model(w)]
    return names[0] if names else None


def summary_rows(
    summary: Iterable[Dict[str, Any]], config: Dict[str, Any], machine: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """The harness's summary rows (``benchmark``, ``implementation``, ``median_ms``, ...) as results rows: the model
    (a registered name when the label has one), its batch and image size read from the benchmark label, images/s."""
    out, stats = [], {}
    for r in summary:
        bench, impl = str(r["benchmark"]), str(r["implementation"])
        model = _registered(impl) or _registered(bench) or impl
        if model not in stats:
            stats[model] = model_stats(model) if _registered(model) else {}
        batch = re.search(r"\bB=(\d+)", bench)
        size = re.search(r"(\d+)px", bench) or re.search(r"(\d+x\d+)", bench)
        side = size.group(1) if size else ""
        row = {
            "model": model,
            "params": stats[model].get("params", ""),
            "gflops": stats[model].get("gflops", ""),
            "img_size": f"{side}x{side}" if side.isdigit() else side,
            "throughput": round(int(batch.group(1)) / r["median_ms"] * 1e3, 2) if batch else "",
            "machine": machine["slug"],
            "benchmark": bench,
            "implementation": impl,
            "ours": bool(r["ours"]),
            "batch": batch.group(1) if batch else "",
            "device": config.get("device", ""),
            "dtype": config.get("dtype", ""),
            "threads": machine.get("torch_threads", ""),
            "median_ms": round(r["median_ms"], 3),
            "iqr_ms": round(r["iqr_ms"], 3),
            "peer_over_ours": "" if r.get("peer_over_ours") is None else round(r["peer_over_ours"], 3),
            "peak_mib": "" if r.get("peak_mib") is None else round(r["peak_mib"], 1),
            "memory_peer_over_ours": ""
            if r.get("memory_peer_over_ours") is None
            else round(r["memory_peer_over_ours"], 2),
            "cpu": machine.get("cpu", ""),
            "torch": machine.get("torch", ""),
        }
        out.append(row)
    return out


def results(args: argparse.Namespace) -> Dict[str, object]:
    """``benchmark.py results``: run each suite of ``--only`` at CPU sizes and write its CSV under ``--out-dir``."""
    from .cli import build_parser

    written = {}
    for suite in args.only:
        argv = [*SUITES[suite], "--device", args.device, "--threads", str(args.threads)]
        argv += [f"--{k}={v}" for k, v in (("repeats", args.repeats), ("warmup", args.warmup)) if v is not None]
        sub = build_parser().parse_args(argv + list(args.suite_args.get(suite, [])))
        data = sub.func(sub)
        machine = dict(data["machine"], slug=machine_slug(torch.device(args.device)))
        path = write_results(
            suite, summary_rows(data["results"], data["config"], machine), args.out_dir, key=("benchmark",)
        )
        print(f"results: wrote {path}")
        written[suite] = str(path)
    return {"written": written}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``results`` subcommand."""
    p = sub.add_parser(
        "results",
        help="run the offline benchmarks at CPU sizes; write results/<benchmark>-<machine>.csv",
        description="Each suite is a benchmark.py command at its CPU defaults: "
        + "; ".join(f"{k} = {' '.join(v)}" for k, v in SUITES.items())
        + ".",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(SUITES),
        default=["speed", "vit", "models", "gan", "compiled"],
        help="suites to run (default: speed vit models gan compiled; pixel and kernels take ~10 min more)",
    )
    p.add_argument("--out-dir", default="results", help="where the CSVs go (default results/)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default: each suite's)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repeats first (default: each suite's)")
    p.add_argument(
        "--suite-args",
        action="append",
        default=[],
        metavar="SUITE:ARGS",
        help="more arguments for one suite's command, e.g. --suite-args='speed:--attn-batch 4'",
    )
    p.set_defaults(func=_results_main)


def _results_main(args: argparse.Namespace) -> Dict[str, object]:
    args.suite_args_raw, args.suite_args = args.suite_args, {}
    for spec in args.suite_args_raw:
        suite, _, rest = spec.partition(":")
        if suite not in SUITES:
            raise SystemExit(
                f"benchmark.py results: --suite-args {spec!r} names suite {suite!r}; expected SUITE:ARGS "
                f"with SUITE one of {list(SUITES)}"
            )
        args.suite_args.setdefault(suite, []).extend(shlex.split(rest))
    return results(args)


def render_table(
    rows: Sequence[Dict[str, str]], columns: Sequence[str], labels: Optional[Dict[str, str]] = None
) -> str:
    """A markdown table of ``columns`` of ``rows`` (header: ``labels[col]`` or the column name); numbers right-aligned."""
    labels = labels or {}

    def numeric(col: str) -> bool:
        vals = [r.get(col, "") for r in rows if r.get(col, "") != ""]
        return bool(vals) and all(re.fullmatch(r"[-+]?\d[\d.,eE+-]*", v) for v in vals)

    head = "| " + " | ".join(labels.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---:" if numeric(c) else "---" for c in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") or "–" for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])
