"""Cells as a submitit job array: ``--launcher slurm`` on a cluster, ``--launcher submitit-local`` on this machine.

Each remaining cell becomes one task of ONE job array (``executor.map_array``; ``--array-parallelism`` caps how many
run at once). A task runs :func:`~.runner.run_cell` in its own process, under SLURM with Lightning's SLURM
environment (``--trainer.devices`` and ``--trainer.num_nodes`` make a cell DDP across the allocation). The sweep
waits for the array, then appends every finished cell's ``result.json`` to ``results.csv`` as the local pool does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .journal import append_result, read_result_json
from .spec import SweepCell, SweepSpec, fraction_key

__all__ = ["run_with_submitit"]


def _cell_job(
    cli_args: List[str],
    result: str,
    label: str,
    fraction: float,
    seed: int,
    cell_hash: str,
    epochs: Optional[float],
    min_steps: int,
) -> str:
    """One array task: fit and test a cell in this (submitit-started) process; returns its result file."""
    from .runner import run_cell

    run_cell(cli_args, result, label, fraction, seed, cell_hash, epochs, min_steps)
    return result


def run_with_submitit(
    spec: SweepSpec,
    todo: Sequence[SweepCell],
    out: Path,
    extra_args: Sequence[str],
    launcher: Dict[str, Any],
    log: Callable[[str], Any],
) -> List[str]:
    """Submit ``todo`` as one job array, wait, collect rows; returns the failed cells (with their logs).

    ``launcher``: ``{"cluster": "slurm"|"local", "array_parallelism": int, "partition": str|None, "time_min": int,
    "gpus_per_node": int, "nodes": int, "cpus_per_task": int}`` (missing keys take submitit's defaults).
    """
    import submitit

    from .runner import cell_cli_args, cell_hash

    if not todo:
        return []
    folder = out / "submitit"
    cluster = launcher.get("cluster", "slurm")
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params: Dict[str, Any] = {"timeout_min": int(launcher.get("time_min", 60)), "name": f"data_size-{spec.path.stem}"}
    gpus, nodes = int(launcher.get("gpus_per_node", 0)), int(launcher.get("nodes", 1))
    params.update(nodes=nodes, tasks_per_node=max(1, gpus), gpus_per_node=gpus)
    if launcher.get("cpus_per_task"):
        params["cpus_per_task"] = int(launcher["cpus_per_task"])
    if cluster == "slurm":
        params["slurm_array_parallelism"] = int(launcher.get("array_parallelism", 8))
        if launcher.get("partition"):
            params["slurm_partition"] = launcher["partition"]
    executor.update_parameters(**params)
    args = []
    for cell in todo:
        cell_dir = out.resolve() / "cells" / cell.dirname
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "result.json").unlink(missing_ok=True)
        args.append(
            (
                cell_cli_args(spec, cell, cell_dir, extra_args),
                str(cell_dir / "result.json"),
                cell.model,
                float(fraction_key(cell.fraction)),
                int(cell.seed),
                cell_hash(spec, cell, extra_args),
                spec.epochs,
                spec.min_steps,
            )
        )
    jobs = executor.map_array(_cell_job, *zip(*args))
    log(f"  submitted {len(jobs)} cells as job array {jobs[0].job_id.split('_')[0]} ({cluster}); logs in {folder}")
    failed = []
    for cell, job, a in zip(todo, jobs, args):
        try:
            job.result()
        except Exception as err:  # submitit re-raises the task's error, or reports a failed/cancelled task
            failed.append(
                f"{cell.dirname} (job {job.job_id}: {str(err).strip().splitlines()[-1][:200]}; "
                f"logs {folder / job.job_id.split('_')[0]})"
            )
            log(f"  FAILED {failed[-1]}")
            continue
        row = read_result_json(Path(a[1]))
        if row is None:
            failed.append(f"{cell.dirname} (job {job.job_id} left no result.json)")
            continue
        append_result(out / "results.csv", row)
        log(f"  done  {cell.dirname}: top1 {row['top1']:.4f}, n_train {row['n_train']}, job {job.job_id}")
    return failed
