"""One multi-node DDP fit on SLURM through submitit, requeued and resumed from its ``last.ckpt`` when preempted.

The model is facebookresearch/detr's ``run_with_submitit.py``: the same entry point as a local run (here
``fit`` of :class:`~vision_attn.run.cli.VisionAttnCLI`) is the submitted callable, one task per GPU; on preemption or
timeout SLURM signals the job, submitit calls the callable's ``checkpoint()``, which returns a copy of itself set to
resume, and requeues it. That copy runs ``fit --ckpt_path last`` in the same output folder: the same ``version_N``,
its ``last.ckpt`` (the last completed epoch), its RNG states, its logs.

``launcher="submitit-local"`` runs the very same path through submitit's ``LocalExecutor`` (one machine, no SLURM).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence

from .resume import NothingToResumeError, find_last_checkpoint

__all__ = ["TrainJob", "make_executor", "parse_time", "submit"]

LAUNCHERS = ("slurm", "submitit-local")


def parse_time(text: str) -> int:
    """SLURM's time formats (``90``, ``1:30:00``, ``2-00:00:00``, ``45:00``) -> minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise ValueError(f"--time must be minutes, H:MM:SS or D-HH:MM:SS; got {text!r}")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:  # minutes (or days-hours)
        minutes = a * 60 if days is not None else a
    elif c is None:  # MM:SS, or D-HH:MM
        minutes = a * 60 + b if days is not None else a + (b > 0)
    else:  # HH:MM:SS
        minutes = a * 60 + b + (c > 0)
    return (days or 0) * 24 * 60 + minutes


@dataclasses.dataclass
class TrainJob:
    """The submitted callable: ``fit`` of the config in every task (one per GPU); ``checkpoint()`` requeues it.

    Args:
        config: the training YAML (absolute path).
        train_args: more CLI flags (``--model.init_args.lr 1e-4 ...``).
        output_dir: ``trainer.default_root_dir`` (runs go to its ``version_N/``); on a filesystem every node sees.
        nodes, gpus_per_node: the DDP layout (0 GPUs: one CPU process per node).
        launcher: ``"slurm"`` or ``"submitit-local"``.
        resume: continue the newest run in ``output_dir`` (set by ``checkpoint()``; a fresh start if it has none yet).
    """

    config: str
    train_args: List[str]
    output_dir: str
    nodes: int = 1
    gpus_per_node: int = 0
    launcher: str = "slurm"
    resume: bool = False

    def cli_args(self) -> List[str]:
        """The ``tools/train.py`` command line each task runs."""
        devices = max(1, self.gpus_per_node)
        args = [
            "fit",
            "--config",
            self.config,
            "--trainer.default_root_dir",
            self.output_dir,
            "--trainer.num_nodes",
            str(self.nodes),
            "--trainer.devices",
            str(devices),
            "--trainer.accelerator",
            "gpu" if self.gpus_per_node else "cpu",
        ]
        if self.nodes * devices > 1:
            args += ["--trainer.strategy", "ddp"]  # a later --trainer.strategy in train_args wins
        args += list(self.train_args)
        if self.resume:
            try:
                find_last_checkpoint(self.output_dir)
                args += ["--ckpt_path", "last"]
            except NothingToResumeError:
                print(f"nothing to resume in {self.output_dir} yet: starting the fit", flush=True)
        return args

    def _cluster_plugins(self) -> list:
        import submitit

        env = submitit.JobEnvironment()
        print(
            f"task {env.global_rank} of {env.num_tasks} (node {env.node}, local rank {env.local_rank}), "
            f"job {env.job_id}",
            flush=True,
        )
        if self.launcher == "slurm":
            from lightning_fabric.plugins.environments import SLURMEnvironment

            return [SLURMEnvironment(auto_requeue=False)]  # submitit requeues (checkpoint()); Lightning must not too
        if env.num_tasks > 1:  # local tasks: Lightning's own environment, told the ranks submitit gave them
            os.environ.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(20000 + int(env.job_id) % 20000),
                WORLD_SIZE=str(env.num_tasks),
                NODE_RANK="0",
                LOCAL_RANK=str(env.local_rank),
                RANK=str(env.global_rank),
            )
        return []

    def __call__(self) -> Optional[str]:
        from .cli import VisionAttnCLI

        cli = VisionAttnCLI(args=self.cli_args(), extra_plugins=self._cluster_plugins())
        best = cli.trainer.checkpoint_callback
        return str(best.last_model_path) if best is not None and best.last_model_path else None

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or timeout (on global rank 0): the same job, resuming."""
        import submitit

        print(f"requeued: the next run continues from the last checkpoint in {self.output_dir}", flush=True)
        return submitit.helpers.DelayedSubmission(dataclasses.replace(self, resume=True))


def make_executor(
    launcher: str,
    folder: str | os.PathLike,
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    partition: Optional[str] = None,
    time_min: int = 4320,
    cpus_per_task: int = 10,
    mem_gb: Optional[int] = None,
    name: str = "vision_attn",
):
    """A submitit executor for ``nodes`` x ``max(1, gpus_per_node)`` tasks (one per GPU), signalled 120 s before its
    time runs out so that ``checkpoint()`` can requeue it (DETR's settings: ``slurm_max_num_timeout=30``)."""
    import submitit

    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {LAUNCHERS}; got {launcher!r}")
    cluster = "slurm" if launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster, slurm_max_num_timeout=30)
    params = dict(
        name=name,
        nodes=nodes,
        tasks_per_node=max(1, gpus_per_node),
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        timeout_min=time_min,
    )
    if launcher == "slurm":
        params.update(slurm_signal_delay_s=120, mem_gb=mem_gb if mem_gb is not None else 40 * max(1, gpus_per_node))
        if partition:
            params["slurm_partition"] = partition
    elif nodes != 1:
        raise ValueError(f"--launcher submitit-local runs on this machine: --nodes must be 1; got {nodes}")
    executor.update_parameters(**params)
    return executor


def _default_output_dir(config: Path) -> Path:
    import yaml

    root = (yaml.safe_load(config.read_text()) or {}).get("trainer", {}).get("default_root_dir")
    return Path(root or Path("runs") / config.stem)


def submit(
    config: str | os.PathLike,
    train_args: Sequence[str] = (),
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    partition: Optional[str] = None,
    time: str = "72:00:00",
    launcher: str = "slurm",
    output_dir: Optional[str | os.PathLike] = None,
    cpus_per_task: int = 10,
    mem_gb: Optional[int] = None,
):
    """Submit ``fit`` of ``config`` as one job; return the submitit job.

    Runs go to ``output_dir`` (default: the config's ``trainer.default_root_dir``, else ``runs/<config name>``) as
    ``version_N/``; submitit's logs and pickles to ``output_dir/submitit/<job id>/``. ``--trainer.default_root_dir``
    in ``train_args`` is refused: the requeued job must find the run where this one wrote it.
    """
    config = Path(config).expanduser().absolute()
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist")
    if any(a.split("=", 1)[0] == "--trainer.default_root_dir" for a in train_args):
        raise ValueError(
            "give the run folder as --output-dir, not --trainer.default_root_dir (the requeued job looks there)"
        )
    out = Path(output_dir or _default_output_dir(config)).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    executor = make_executor(
        launcher,
        out / "submitit",
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        partition=partition,
        time_min=parse_time(time),
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        name=f"vision_attn-{config.stem}",
    )
    job = TrainJob(str(config), list(train_args), str(out), nodes, gpus_per_node, launcher)
    return executor.submit(job)
