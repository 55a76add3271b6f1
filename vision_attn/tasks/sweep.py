"""Attention vs CNN at varying training-data sizes: a grid of ordinary Lightning fits, resumable, with a plot.

A sweep YAML names models (each a LightningCLI config plus overrides), training fractions, seeds and a budget::

    fractions: [0.01, 0.1, 1.0]     # of the (non-validation) training images; stratified, nested per seed
    seeds: [0, 1, 2]                # seed_everything and fraction_seed of a cell
    budget:
      steps: 2000                   # every cell: this many optimizer steps, whatever its fraction
    args: [--data.init_args.root=data]          # passed to every cell
    models:
      resnet18_cifar:                           # the label in results.csv
        config: configs/resnet18_cifar10.yaml
        args: [--model.init_args.lr=0.1]        # passed to this model's cells

**Budget rule: equal optimizer steps.** Every cell trains ``budget.steps`` optimizer steps (Lightning ``max_steps``),
so a 1% cell runs 100x the epochs of the 100% cell and every model and fraction gets the same compute; choose
``steps = epochs x N_full / (batch_size x devices)`` to give the full-data cells a usual number of epochs. The
learning-rate schedule (warm-up, cosine) spans those steps. Validation runs once, after the last step (it is
what ``best.ckpt`` records); the reported numbers are top-1/top-5 of the final weights on the full test split.

Each cell runs in its own process (``python -m vision_attn.tasks.sweep cell ...``), so Lightning DDP
(``--trainer.devices N``) works inside a cell and a crash stays in its cell. The parent is the only writer
of ``results.csv``: one row is appended and fsynced when a cell finishes, so killing the sweep loses at most
the cells running; a rerun skips the cells already in ``results.csv``. ``data_size.png`` (top-1 vs number of
training images, log x, one line per model with the seed spread) and ``data_size.md`` are rewritten from
``results.csv`` after every cell.

Clusters: ``print_cells`` (``--print-cells``) prints each remaining cell's command instead of running it, to submit
as jobs (e.g. ``srun`` with ``--trainer.num_nodes``); a cell leaves its row in its ``result.json``, and the next run
of the sweep collects those into ``results.csv`` before running what is still missing.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

__all__ = [
    "RESULT_COLUMNS",
    "SweepCell",
    "SweepSpec",
    "load_sweep",
    "read_results",
    "run_sweep",
    "write_report",
]

RESULT_COLUMNS = ("model", "fraction", "seed", "n_train", "top1", "top5", "train_seconds", "images_per_second", "devices")


class SweepConfigError(ValueError):
    """A sweep YAML that cannot be run; the message names the file and the offending entry."""


@dataclass(frozen=True)
class SweepCell:
    """One fit of the grid: a model label, a training fraction and a seed."""

    model: str
    fraction: float
    seed: int

    @property
    def key(self) -> Tuple[str, str, int]:
        return (self.model, fraction_key(self.fraction), int(self.seed))

    @property
    def dirname(self) -> str:
        return f"{self.model}/f{fraction_key(self.fraction)}-s{self.seed}"


@dataclass
class SweepSpec:
    """A parsed sweep YAML (see the module docstring); ``path`` is the file it came from."""

    path: Path
    models: Dict[str, Dict[str, Any]]
    fractions: List[float]
    seeds: List[int]
    steps: int
    args: List[str] = field(default_factory=list)

    def cells(self) -> List[SweepCell]:
        """Every cell, smallest fraction first (the cheap end of the curve arrives first), then seed, then model."""
        return [SweepCell(m, f, s) for f in sorted(self.fractions) for s in self.seeds for m in self.models]


def fraction_key(fraction: float) -> str:
    """The canonical text of a fraction in results.csv and folder names (``0.01``, ``0.5``, ``1``)."""
    return f"{float(fraction):g}"


def _as_args(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, dict):  # {"--trainer.max_epochs": 3} or {"trainer.max_epochs": 3}
        return [f"{k if k.startswith('--') else '--' + k}={json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v}"
                for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(a, (str, int, float)) for a in value):
        return [str(a) for a in value]
    raise SweepConfigError(f"{where}: expected a list of CLI arguments or a mapping of them; got {value!r}")


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep YAML. Config paths are resolved against the current directory, then the YAML's folder
    and its parents (so ``configs/...`` works from the repository root and from anywhere else)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: expected a mapping with models, fractions, seeds and budget; got {type(raw).__name__}")
    unknown = set(raw) - {"models", "fractions", "seeds", "budget", "args", "description"}
    if unknown:
        raise SweepConfigError(f"{path}: unknown keys {sorted(unknown)}; expected models, fractions, seeds, budget, args")
    for key in ("models", "fractions", "budget"):
        if key not in raw:
            raise SweepConfigError(f"{path}: missing '{key}'")
    fractions = raw["fractions"]
    if not isinstance(fractions, list) or not fractions or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
        raise SweepConfigError(f"{path}: 'fractions' must be a non-empty list of numbers in (0, 1]; got {fractions!r}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepConfigError(f"{path}: 'seeds' must be a non-empty list of integers; got {seeds!r}")
    budget = raw["budget"]
    if not isinstance(budget, dict) or set(budget) != {"steps"} or not isinstance(budget["steps"], int) or budget["steps"] < 1:
        raise SweepConfigError(
            f"{path}: 'budget' must be {{steps: N}} with N >= 1 optimizer steps per cell (the equal-steps rule); got {budget!r}"
        )
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise SweepConfigError(f"{path}: 'models' must map labels to {{config: ..., args: [...]}}; got {models!r}")
    parsed: Dict[str, Dict[str, Any]] = {}
    for label, entry in models.items():
        where = f"{path}: models.{label}"
        if not isinstance(label, str) or not label or any(c in label for c in "/\\, \n"):
            raise SweepConfigError(f"{where}: a label must be a non-empty name without '/', ',', spaces")
        if not isinstance(entry, dict) or "config" not in entry:
            raise SweepConfigError(f"{where}: expected a mapping with 'config' (a LightningCLI YAML) and optional 'args'")
        extra = set(entry) - {"config", "args"}
        if extra:
            raise SweepConfigError(f"{where}: unknown keys {sorted(extra)}")
        parsed[label] = {"config": str(_find_config(entry["config"], path, where)), "args": _as_args(entry.get("args"), where)}
    return SweepSpec(
        path=path, models=parsed, fractions=[float(f) for f in fractions], seeds=[int(s) for s in seeds],
        steps=int(budget["steps"]), args=_as_args(raw.get("args"), f"{path}: args"),
    )


def _find_config(name: str, sweep_path: Path, where: str) -> Path:
    candidates = [Path(name)] + [p / name for p in [sweep_path.parent, *sweep_path.resolve().parents]]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise SweepConfigError(f"{where}: config {name} not found (looked in the current directory and above {sweep_path.parent})")


# ---- results.csv ---------------------------------------------------------------------------------------------------
def read_results(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """The finished cells in ``results.csv``, typed. A torn last line (a kill during the write) is dropped and the
    file rewritten without it; any other malformed row is an error naming the file and line (nothing is rewritten)."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    if tuple(header) != RESULT_COLUMNS:
        raise ValueError(f"{path}: header {header} is not {list(RESULT_COLUMNS)}; move the file away or pick another --output-dir")
    rows: List[Dict[str, Any]] = []
    for i, line in enumerate(lines[1:], start=2):
        last = i == len(lines)
        try:
            (values,) = list(csv.reader([line]))
            if len(values) != len(RESULT_COLUMNS):
                raise ValueError(f"{len(values)} fields, expected {len(RESULT_COLUMNS)}")
            row = dict(zip(RESULT_COLUMNS, values))
            rows.append({
                "model": row["model"], "fraction": float(row["fraction"]), "seed": int(row["seed"]),
                "n_train": int(row["n_train"]), "top1": float(row["top1"]), "top5": float(row["top5"]),
                "train_seconds": float(row["train_seconds"]), "images_per_second": float(row["images_per_second"]),
                "devices": int(row["devices"]),
            })
        except ValueError as err:
            if last and not line.endswith("\n"):
                # the process was killed while appending this row: the cell did not finish; forget it
                _atomic_write(path, "".join(lines[:-1]))
                break
            raise ValueError(f"{path}, line {i}: malformed row {line.strip()!r}: {err}") from None
    return rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_result(path: Path, row: Dict[str, Any]) -> None:
    """Append one row (writing the header first if the file is new) and fsync, so a finished cell survives a kill."""
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow([row[c] for c in RESULT_COLUMNS])
        f.flush()
        os.fsync(f.fileno())


# ---- the report -----------------------------------------------------------------------------------------------------
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


def write_report(output_dir: str | os.PathLike, title: str = "") -> Optional[Tuple[Path, Path]]:
    """Write ``data_size.md`` and ``data_size.png`` from ``output_dir/results.csv``; None when it has no rows."""
    out = Path(output_dir)
    rows = read_results(out / "results.csv")
    if not rows:
        return None
    summary = summarize(rows)
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
    md = out / "data_size.md"
    md.write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for model, points in summary.items():
        x = [p["n_train"] for p in points]
        ax.plot(x, [100 * p["top1"] for p in points], marker="o", label=model)
        if any(p["seeds"] > 1 for p in points):
            ax.fill_between(x, [100 * p["top1_min"] for p in points], [100 * p["top1_max"] for p in points], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title or "Attention vs CNN by training-set size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = out / "data_size.png"
    fig.savefig(png)
    plt.close(fig)
    return md, png


# ---- running -------------------------------------------------------------------------------------------------------
def cell_cli_args(spec: SweepSpec, cell: SweepCell, cell_dir: Path, extra: Sequence[str] = ()) -> List[str]:
    """The LightningCLI arguments of one cell: model config, sweep/model/command-line overrides, then the cell's own."""
    model = spec.models[cell.model]
    steps = str(spec.steps)
    return [
        "--config", model["config"], *spec.args, *model["args"], *extra,
        "--data.init_args.train_fraction", fraction_key(cell.fraction),
        "--data.init_args.fraction_seed", str(cell.seed),
        "--seed_everything", str(cell.seed),
        "--trainer.max_steps", steps, "--trainer.max_epochs", "-1",
        "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", steps,
        "--trainer.default_root_dir", str(cell_dir),
    ]


def cell_command(spec: SweepSpec, cell: SweepCell, out: Path, extra: Sequence[str] = (), python: str = sys.executable) -> List[str]:
    """The command that runs one cell and leaves its row in ``out/cells/<model>/f<fraction>-s<seed>/result.json``."""
    cell_dir = out.resolve() / "cells" / cell.dirname
    return [python, "-m", "vision_attn.tasks.sweep", "cell", "--result", str(cell_dir / "result.json"),
            "--model-label", cell.model, "--fraction", fraction_key(cell.fraction), "--seed", str(cell.seed), "--",
            *cell_cli_args(spec, cell, cell_dir, extra)]


def _finished_row(path: Path) -> Optional[Dict[str, Any]]:
    """The row a finished cell left in its result.json, or None when there is none (or it is unreadable)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and set(row) == set(RESULT_COLUMNS) else None


def run_sweep(
    config: str | os.PathLike,
    output_dir: str | os.PathLike,
    extra_args: Sequence[str] = (),
    parallel_cells: int = 1,
    python: str = sys.executable,
    log=None,
    print_cells: bool = False,
) -> List[Any]:
    """Run every cell of a sweep not yet in ``output_dir/results.csv``; returns all rows. Raises RuntimeError
    naming the failed cells (and their logs) after running all the others.

    Cells that finished elsewhere (their ``result.json`` exists, e.g. run as cluster jobs) are collected into
    ``results.csv`` instead of run. ``print_cells=True`` runs nothing: it logs and returns the command of every
    cell still to run, one line each (to submit as jobs, e.g. under ``srun`` for multi-node DDP cells)."""
    log = log or (lambda msg: print(msg, flush=True))
    if parallel_cells < 1:
        raise ValueError(f"parallel_cells must be >= 1; got {parallel_cells}")
    spec = load_sweep(config)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    done = {(r["model"], fraction_key(r["fraction"]), r["seed"]) for r in read_results(results)}
    todo = [c for c in spec.cells() if c.key not in done]
    # cells that finished without reaching results.csv (run as separate jobs, or the sweep was killed just then)
    collected = 0
    for cell in list(todo):
        row = _finished_row(out / "cells" / cell.dirname / "result.json")
        if row is not None:
            append_result(results, row)
            todo.remove(cell)
            collected += 1
    if print_cells:
        commands = [shlex.join(cell_command(spec, c, out, extra_args, python)) for c in todo]
        for line in commands:
            log(line)
        return commands
    log(f"sweep {spec.path}: {len(spec.cells())} cells, {len(done) + collected} already in {results}"
        f"{f' ({collected} collected from cells/)' if collected else ''}, {len(todo)} to run ({parallel_cells} at a time)")
    slots = _device_slots(parallel_cells)
    running: Dict[int, Tuple[subprocess.Popen, SweepCell, Path, Any]] = {}
    failed: List[str] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < parallel_cells:
            slot = next(i for i in range(parallel_cells) if i not in running)
            cell = queue.pop(0)
            cell_dir = out / "cells" / cell.dirname
            cell_dir.mkdir(parents=True, exist_ok=True)
            result_file = cell_dir / "result.json"
            result_file.unlink(missing_ok=True)
            cmd = cell_command(spec, cell, out, extra_args, python)
            logf = open(cell_dir / "cell.log", "w")
            logf.write(shlex.join(cmd) + "\n\n")
            logf.flush()
            env = {**os.environ, **slots[slot], "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
            running[slot] = (proc, cell, result_file, logf)
            log(f"  start {cell.dirname} (slot {slot})")
        time.sleep(0.2)
        for slot, (proc, cell, result_file, logf) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del running[slot]
            row = _finished_row(result_file) if proc.returncode == 0 else None
            if row is not None:
                append_result(results, row)
                write_report(out, title=f"{spec.path.stem}: test top-1 vs training images")
                log(f"  done  {cell.dirname}: top1 {row['top1']:.4f}, n_train {row['n_train']}, "
                    f"{row['train_seconds']:.0f} s, {row['images_per_second']:.0f} img/s")
            else:
                failed.append(f"{cell.dirname} (exit {proc.returncode}; log {result_file.parent / 'cell.log'})")
                log(f"  FAILED {failed[-1]}")
    write_report(out, title=f"{spec.path.stem}: test top-1 vs training images")
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed, the others are in {results}: " + "; ".join(failed))
    return read_results(results)


def _device_slots(n: int) -> List[Dict[str, str]]:
    """Environment of each parallel slot: one GPU each when GPUs are visible, else a share of the CPU threads."""
    if n == 1:
        return [{}]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        n_gpus = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch always importable here
        n_gpus = 0
    if n_gpus:
        ids = visible.split(",") if visible else [str(i) for i in range(n_gpus)]
        if n > len(ids):
            raise ValueError(f"--parallel-cells {n} > {len(ids)} visible GPUs")
        return [{"CUDA_VISIBLE_DEVICES": ids[i]} for i in range(n)]
    threads = str(max(1, (os.cpu_count() or 1) // n))
    return [{"OMP_NUM_THREADS": threads} for _ in range(n)]


def run_cell(cli_args: Sequence[str], result_path: str | os.PathLike, label: str, fraction: float, seed: int) -> Dict[str, Any]:
    """Fit and test one cell in this process (DDP ranks included); rank 0 writes the result row as JSON."""
    import pytorch_lightning as pl

    from ..run.cli import VisionAttnCLI

    class Throughput(pl.Callback):
        """Wall time of the training loop without validation, and the images it trained on (all processes)."""

        def __init__(self) -> None:
            self.images = 0
            self.seconds = 0.0
            self._val = 0.0
            self._t0 = 0.0
            self._v0 = 0.0

        def on_train_start(self, trainer, module):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            self.images += int(x.shape[0]) * trainer.world_size

        def on_validation_start(self, trainer, module):
            self._v0 = time.perf_counter()

        def on_validation_end(self, trainer, module):
            if self._t0:  # not the sanity check before training
                self._val += time.perf_counter() - self._v0

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self._t0 - self._val

    cli = VisionAttnCLI(args=list(cli_args), run=False)
    timer = Throughput()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (res,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    trainer = cli.trainer
    row = {
        "model": label, "fraction": fraction_key(fraction), "seed": int(seed),
        "n_train": int(cli.datamodule.n_train), "top1": round(float(res["test/top1"]), 6),
        "top5": round(float(res["test/top5"]), 6), "train_seconds": round(timer.seconds, 3),
        "images_per_second": round(timer.images / max(timer.seconds, 1e-9), 2),
        "devices": int(trainer.num_devices * trainer.num_nodes),
    }
    if trainer.is_global_zero:
        tmp = Path(str(result_path) + ".tmp")
        tmp.write_text(json.dumps(row) + "\n")
        os.replace(tmp, result_path)
    return row


def _main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vision_attn.tasks.sweep", description="run one cell of a sweep")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cell")
    c.add_argument("--result", required=True)
    c.add_argument("--model-label", required=True)
    c.add_argument("--fraction", type=float, required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("cli_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cli_args = a.cli_args[1:] if a.cli_args[:1] == ["--"] else a.cli_args
    run_cell(cli_args, a.result, a.model_label, a.fraction, a.seed)


if __name__ == "__main__":
    _main()
