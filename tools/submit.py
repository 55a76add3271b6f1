#!/usr/bin/env python
"""Submit a (multi-node) DDP fit to SLURM through submitit; preempted or timed-out jobs requeue and resume.

    python tools/submit.py --config configs/detr_r50_coco.yaml --nodes 4 --gpus-per-node 8 --partition gpu --time 72:00:00
    python tools/submit.py --config configs/quickstart.yaml --launcher submitit-local -- --trainer.max_epochs 2

Everything after ``--`` goes to ``tools/train.py fit`` (``--model.init_args.lr 1e-4 ...``). Runs go to
``--output-dir`` (default: the config's ``trainer.default_root_dir``) as ``version_N/``; submitit's logs to its
``submitit/<job id>/``. The local launcher runs the same job on this machine and waits for it.
"""

import argparse
import sys

import torch

from vision_attn.run.submit import LAUNCHERS, submit


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s --config CFG [options] [-- TRAIN.PY FIT ARGS ...]",
        epilog="Everything after -- is passed to tools/train.py fit unchanged, e.g. "
        "-- --trainer.max_epochs 2 --data.init_args.root /datasets/my_images",
    )
    p.add_argument("--config", required=True, help="training YAML (as for tools/train.py)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="one task per GPU; 0: one CPU task per node (default: this machine's GPUs, 0 without any)",
    )
    p.add_argument("--partition", default=None)
    p.add_argument("--time", default="72:00:00", help="SLURM time limit: minutes, H:MM:SS or D-HH:MM:SS")
    p.add_argument("--launcher", choices=LAUNCHERS, default="slurm")
    p.add_argument("--output-dir", default=None, help="run folder on a filesystem every node sees")
    p.add_argument("--cpus-per-task", type=int, default=10)
    p.add_argument("--mem-gb", type=int, default=None, help="per node (default: 40 per GPU)")
    a = p.parse_args(argv)
    if a.gpus_per_node is None:  # a CPU machine must not start 8 tasks that wait for GPUs forever
        a.gpus_per_node = torch.cuda.device_count()
    job = submit(
        a.config,
        train_args,
        nodes=a.nodes,
        gpus_per_node=a.gpus_per_node,
        partition=a.partition,
        time=a.time,
        launcher=a.launcher,
        output_dir=a.output_dir,
        cpus_per_task=a.cpus_per_task,
        mem_gb=a.mem_gb,
    )
    print(f"submitted job {job.job_id} ({a.launcher}); logs: {job.paths.folder}")
    if a.launcher == "submitit-local":
        print(f"finished: {job.result()}")
    return job


if __name__ == "__main__":
    main()
