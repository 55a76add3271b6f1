"""Running a sweep: one process per cell (a pool of ``parallel_cells`` device slots), or the cells' commands.

A cell is ``python -m vision_attn.run.data_size cell --result <cell>/result.json ... -- <LightningCLI args>``; it fits
and tests in its own process, so DDP works inside it and a crash stays in it. The sweep process is the only writer
of ``results.csv`` and rewrites the report after every finished cell.

Every row records what produced it: ``cell_hash`` (a hash of the cell's LightningCLI arguments — budget, fraction,
seed, every override — and of the model config file's text) and ``code_version``. A cell whose hash changed (a new
budget, an edited config) reruns; rows of other hashes stay in ``results.csv`` as history but leave the report.
A lock file keeps a second sweep out of the same output folder; cells die with the sweep (Linux parent-death signal,
each cell leading its own process group), and a rerun appends to a cell's log instead of truncating it.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .journal import append_result, read_result_json, read_results, write_result_json
from .report import write_report
from .spec import SweepCell, SweepSpec, epoch_budget_steps, fraction_key, load_sweep

__all__ = ["cell_cli_args", "cell_command", "cell_hash", "code_version", "run_cell", "run_sweep", "SweepLockedError"]


class SweepLockedError(RuntimeError):
    """Another sweep is running in the same output folder."""


def cell_cli_args(spec: SweepSpec, cell: SweepCell, cell_dir: Path, extra: Sequence[str] = ()) -> List[str]:
    """The LightningCLI arguments of one cell: model config, sweep/model/command-line overrides, then the cell's own.
    Under the equal-epochs budget the steps here are the floor (``min_steps``); the cell raises them (:func:`run_cell`)."""
    model = spec.models[cell.model]
    steps = str(spec.steps if spec.epochs is None else spec.min_steps)
    return [
        "--config",
        model["config"],
        *spec.args,
        *model["args"],
        *extra,
        "--data.init_args.train_fraction",
        fraction_key(cell.fraction),
        "--data.init_args.fraction_seed",
        str(cell.seed),
        "--seed_everything",
        str(cell.seed),
        "--trainer.max_steps",
        steps,
        "--trainer.max_epochs",
        "-1",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.val_check_interval",
        steps,
        "--trainer.default_root_dir",
        str(cell_dir),
    ]


def cell_hash(spec: SweepSpec, cell: SweepCell, extra: Sequence[str] = ()) -> str:
    """12 hex digits identifying what a cell computes: its CLI arguments (without the output folder) and the text of
    its model config file. Equal hashes give the same experiment; any change to budget, overrides or config differs."""
    args = cell_cli_args(spec, cell, Path("."), extra)
    i = args.index("--trainer.default_root_dir")
    config = Path(spec.models[cell.model]["config"])
    payload = {
        "model": cell.model,
        "args": args[:i] + args[i + 2 :],
        "budget": [spec.epochs, spec.min_steps],
        "config": config.read_text() if config.is_file() else str(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def code_version() -> str:
    """The package version and, in a git checkout, its commit (``+dirty`` when files differ from it)."""
    from ... import __version__

    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


def cell_command(
    spec: SweepSpec, cell: SweepCell, out: Path, extra: Sequence[str] = (), python: str = sys.executable
) -> List[str]:
    """The command that runs one cell and leaves its row in ``out/cells/<model>/f<fraction>-s<seed>/result.json``."""
    cell_dir = out.resolve() / "cells" / cell.dirname
    return [
        python,
        "-m",
        "vision_attn.run.data_size",
        "cell",
        "--result",
        str(cell_dir / "result.json"),
        "--model-label",
        cell.model,
        "--fraction",
        fraction_key(cell.fraction),
        "--seed",
        str(cell.seed),
        "--cell-hash",
        cell_hash(spec, cell, extra),
        *([] if spec.epochs is None else ["--epochs", f"{spec.epochs:g}", "--min-steps", str(spec.min_steps)]),
        "--",
        *cell_cli_args(spec, cell, cell_dir, extra),
    ]


@contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.sweep.lock`` (an exclusive advisory lock, released when the process dies) for one sweep."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".sweep.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise SweepLockedError(
            f"{out}: another sweep ({owner}) is running in this output folder; wait for it or pick another --output-dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def run_sweep(
    config: str | os.PathLike,
    output_dir: str | os.PathLike,
    extra_args: Sequence[str] = (),
    parallel_cells: int = 1,
    python: str = sys.executable,
    log=None,
    print_cells: bool = False,
    launcher: Optional[Dict[str, Any]] = None,
) -> List[Any]:
    """Run every cell of a sweep not yet in ``output_dir/results.csv``; returns all rows. Raises RuntimeError
    naming the failed cells (and their logs) after running all the others.

    Cells that finished elsewhere (their ``result.json`` exists, e.g. run as cluster jobs) are collected into
    ``results.csv`` instead of run. ``print_cells=True`` runs nothing: it logs and returns the command of every
    cell still to run, one line each (to submit as jobs, e.g. under ``srun`` for multi-node DDP cells).
    ``launcher`` (``{"cluster": "slurm" | "local", ...}``, see :mod:`.launch`) submits the cells through submitit as one
    job array instead of the local process pool, waits, and collects their rows."""
    log = log or (lambda msg: print(msg, flush=True))
    if parallel_cells < 1:
        raise ValueError(f"parallel_cells must be >= 1; got {parallel_cells}")
    spec = load_sweep(config)
    out = Path(output_dir)
    with sweep_lock(out):
        return _run_sweep_locked(spec, out, extra_args, parallel_cells, python, log, print_cells, launcher)


def _run_sweep_locked(
    spec: SweepSpec,
    out: Path,
    extra_args: Sequence[str],
    parallel_cells: int,
    python: str,
    log: Callable[[str], Any],
    print_cells: bool,
    launcher: Optional[Dict[str, Any]],
) -> List[Any]:
    results = out / "results.csv"
    hashes = {c.key: cell_hash(spec, c, extra_args) for c in spec.cells()}
    current = set(hashes.values())
    done = {
        (r["model"], fraction_key(r["fraction"]), r["seed"]) for r in read_results(results) if r["cell_hash"] in current
    }
    todo = [c for c in spec.cells() if c.key not in done]
    # cells that finished without reaching results.csv (run as separate jobs, or the sweep was killed just then)
    collected = 0
    for cell in list(todo):
        row = read_result_json(out / "cells" / cell.dirname / "result.json")
        if row is not None and row["cell_hash"] == hashes[cell.key]:
            append_result(results, row)
            todo.remove(cell)
            collected += 1
    if print_cells:
        commands = [shlex.join(cell_command(spec, c, out, extra_args, python)) for c in todo]
        for line in commands:
            log(line)
        return commands
    log(
        f"sweep {spec.path}: {len(spec.cells())} cells, {len(done) + collected} already in {results}"
        f"{f' ({collected} collected from cells/)' if collected else ''}, {len(todo)} to run ({parallel_cells} at a time)"
    )
    if launcher is not None:
        from .launch import run_with_submitit

        failed = run_with_submitit(spec, todo, out, extra_args, launcher, log)
    else:
        failed = _run_pool(spec, todo, out, extra_args, parallel_cells, python, log)
    _write_report(out, spec, current)
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed, the others are in {results}: " + "; ".join(failed))
    return [r for r in read_results(results) if r["cell_hash"] in current]


def _current(spec: SweepSpec, extra_args: Sequence[str]) -> set:
    return {cell_hash(spec, c, extra_args) for c in spec.cells()}


def _write_report(out: Path, spec: SweepSpec, current: set) -> None:
    write_report(
        out,
        title=f"{spec.path.stem}: test top-1 vs training images",
        baseline=spec.baseline,
        budget_rule=spec.budget_rule,
        current=current,
    )


def _run_pool(
    spec: SweepSpec,
    todo: List[SweepCell],
    out: Path,
    extra_args: Sequence[str],
    parallel_cells: int,
    python: str,
    log: Callable[[str], Any],
) -> List[str]:
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
                _write_report(out, spec, _current(spec, extra_args))
                log(
                    f"  done  {cell.dirname}: top1 {row['top1']:.4f}, n_train {row['n_train']}, "
                    f"{row['train_seconds']:.0f} s, {row['images_per_second']:.0f} img/s"
                )
            else:
                failed.append(f"{cell.dirname} (exit {proc.returncode}; log {result_file.parent / 'cell.log'})")
                log(f"  FAILED {failed[-1]}")
    return failed


def _start_cell(
    spec: SweepSpec, cell: SweepCell, out: Path, extra_args: Sequence[str], python: str, slot_env: Dict[str, str]
) -> Tuple[subprocess.Popen, SweepCell, Path, Any]:
    """Launch one cell's process, its output (after its command line) going to ``cells/<cell>/cell.log``."""
    cell_dir = out / "cells" / cell.dirname
    cell_dir.mkdir(parents=True, exist_ok=True)
    result_file = cell_dir / "result.json"
    result_file.unlink(missing_ok=True)
    cmd = cell_command(spec, cell, out, extra_args, python)
    logf = open(cell_dir / "cell.log", "a")  # a rerun appends: an earlier attempt's output is kept
    logf.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}\n{shlex.join(cmd)}\n\n")
    logf.flush()
    env = {**os.environ, **slot_env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=os.getcwd(),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    return proc, cell, result_file, logf


def _die_with_parent() -> None:
    """In the cell's process, before exec: SIGTERM when the sweep process dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: cells outlive a killed sweep, as before
        pass


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


def run_cell(
    cli_args: Sequence[str],
    result_path: str | os.PathLike,
    label: str,
    fraction: float,
    seed: int,
    cell_hash: str = "",
    epochs: float | None = None,
    min_steps: int = 1,
) -> Dict[str, Any]:
    """Fit and test one cell in this process (DDP ranks included); rank 0 writes the result row as JSON.

    ``epochs``: the equal-epochs budget (:func:`~vision_attn.run.data_size.spec.epoch_budget_steps` of this cell's
    training images, at least ``min_steps``) replaces ``--trainer.max_steps`` and the validation interval."""
    from ...callbacks import Throughput  # Lightning is imported in the cell process only, not by the sweep
    from ..cli import VisionAttnCLI

    if os.getpgrp() == os.getpid():  # leading its own group (started by a sweep): take DDP workers down with it
        signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))

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
        "model": label,
        "fraction": fraction_key(fraction),
        "seed": int(seed),
        "n_train": int(cli.datamodule.n_train),
        "top1": round(float(res["test/top1"]), 6),
        "top5": round(float(res["test/top5"]), 6),
        "train_seconds": round(timer.seconds, 3),
        "images_per_second": round(timer.images / max(timer.seconds, 1e-9), 2),
        "devices": int(trainer.num_devices * trainer.num_nodes),
        "steps": int(trainer.global_step),
        "params": sum(p.numel() for p in cli.model.parameters()),
        "cell_hash": cell_hash,
        "code_version": code_version(),
    }
    if trainer.is_global_zero:
        write_result_json(result_path, row)
    return row
