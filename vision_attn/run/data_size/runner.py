"""Running a sweep: one process per cell (a pool of ``parallel_cells`` device slots), or the cells' commands.

A cell is ``python -m vision_attn.run.data_size cell --result <cell>/result.json ... -- <LightningCLI args>``; it fits
and tests in its own process, so DDP works inside it and a crash stays in it. The sweep process is the only writer
of ``results.csv`` and rewrites the report after every finished cell.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .journal import append_result, read_result_json, read_results, write_result_json
from .report import write_report
from .spec import SweepCell, SweepSpec, epoch_budget_steps, fraction_key, load_sweep

__all__ = ["cell_cli_args", "cell_command", "run_cell", "run_sweep"]


def cell_cli_args(spec: SweepSpec, cell: SweepCell, cell_dir: Path, extra: Sequence[str] = ()) -> List[str]:
    """The LightningCLI arguments of one cell: model config, sweep/model/command-line overrides, then the cell's own.
    Under the equal-epochs budget the steps here are the floor (``min_steps``); the cell raises them (:func:`run_cell`)."""
    model = spec.models[cell.model]
    steps = str(spec.steps if spec.epochs is None else spec.min_steps)
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
    return [python, "-m", "vision_attn.run.data_size", "cell", "--result", str(cell_dir / "result.json"),
            "--model-label", cell.model, "--fraction", fraction_key(cell.fraction), "--seed", str(cell.seed),
            *([] if spec.epochs is None else ["--epochs", f"{spec.epochs:g}", "--min-steps", str(spec.min_steps)]), "--",
            *cell_cli_args(spec, cell, cell_dir, extra)]


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
        row = read_result_json(out / "cells" / cell.dirname / "result.json")
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
    failed = _run_pool(spec, todo, out, extra_args, parallel_cells, python, log)
    _write_report(out, spec)
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed, the others are in {results}: " + "; ".join(failed))
    return read_results(results)


def _write_report(out: Path, spec: SweepSpec) -> None:
    write_report(out, title=f"{spec.path.stem}: test top-1 vs training images", baseline=spec.baseline,
                 budget_rule=spec.budget_rule)


def _run_pool(spec: SweepSpec, todo: List[SweepCell], out: Path, extra_args: Sequence[str], parallel_cells: int,
              python: str, log: Callable[[str], Any]) -> List[str]:
    """Run ``todo`` in at most ``parallel_cells`` processes, appending each finished row; returns the failures."""
    slots = _device_slots(parallel_cells)
    running: Dict[int, Tuple[subprocess.Popen, SweepCell, Path, Any]] = {}
    failed: List[str] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < parallel_cells:
            slot = next(i for i in range(parallel_cells) if i not in running)
            cell = queue.pop(0)
            running[slot] = _start_cell(spec, cell, out, extra_args, python, slots[slot])
            log(f"  start {cell.dirname} (slot {slot})")
        time.sleep(0.2)
        for slot, (proc, cell, result_file, logf) in list(running.items()):
            if proc.poll() is None:
                continue
            logf.close()
            del running[slot]
            row = read_result_json(result_file) if proc.returncode == 0 else None
            if row is not None:
                append_result(out / "results.csv", row)
                _write_report(out, spec)
                log(f"  done  {cell.dirname}: top1 {row['top1']:.4f}, n_train {row['n_train']}, "
                    f"{row['train_seconds']:.0f} s, {row['images_per_second']:.0f} img/s")
            else:
                failed.append(f"{cell.dirname} (exit {proc.returncode}; log {result_file.parent / 'cell.log'})")
                log(f"  FAILED {failed[-1]}")
    return failed


def _start_cell(spec: SweepSpec, cell: SweepCell, out: Path, extra_args: Sequence[str], python: str,
                slot_env: Dict[str, str]) -> Tuple[subprocess.Popen, SweepCell, Path, Any]:
    """Launch one cell's process, its output (after its command line) going to ``cells/<cell>/cell.log``."""
    cell_dir = out / "cells" / cell.dirname
    cell_dir.mkdir(parents=True, exist_ok=True)
    result_file = cell_dir / "result.json"
    result_file.unlink(missing_ok=True)
    cmd = cell_command(spec, cell, out, extra_args, python)
    logf = open(cell_dir / "cell.log", "w")
    logf.write(shlex.join(cmd) + "\n\n")
    logf.flush()
    env = {**os.environ, **slot_env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    return proc, cell, result_file, logf


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


def run_cell(cli_args: Sequence[str], result_path: str | os.PathLike, label: str, fraction: float, seed: int,
             epochs: float | None = None, min_steps: int = 1) -> Dict[str, Any]:
    """Fit and test one cell in this process (DDP ranks included); rank 0 writes the result row as JSON.

    ``epochs``: the equal-epochs budget (:func:`~vision_attn.run.data_size.spec.epoch_budget_steps` of this cell's
    training images, at least ``min_steps``) replaces ``--trainer.max_steps`` and the validation interval."""
    from ...callbacks.throughput import Throughput  # Lightning is imported in the cell process only, not by the sweep
    from ..cli import VisionAttnCLI

    cli = VisionAttnCLI(args=list(cli_args), run=False)
    if epochs is not None:
        dm, t = cli.datamodule, cli.trainer
        dm.prepare_data()
        dm.setup("fit")  # n_train is known only now
        steps = epoch_budget_steps(dm.n_train, dm.batch_size, epochs, min_steps, t.num_devices * t.num_nodes)
        t.fit_loop.epoch_loop.max_steps = steps
        t.val_check_interval = steps  # validate once, after the last step, as under the equal-steps rule
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
        "devices": int(trainer.num_devices * trainer.num_nodes), "steps": int(trainer.global_step),
        "params": sum(p.numel() for p in cli.model.parameters()),
    }
    if trainer.is_global_zero:
        write_result_json(result_path, row)
    return row
