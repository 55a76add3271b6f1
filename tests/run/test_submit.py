"""tools/submit.py: a fit submitted through submitit requeues itself when preempted and resumes from its last.ckpt."""

import json
import os
import pickle
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from vision_attn.run.submit import TrainJob, parse_time, submit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import submit as submit_tool  # noqa: E402


def tiny_train_args(tmp_path, *extra):
    return [
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "200",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "40",
        "--data.init_args.batch_size",
        "40",
        "--model.init_args.model_args",
        '{"embed_dim": 16, "depth": 1, "num_heads": 2}',
        *extra,
    ]


def test_a_local_job_preempted_after_an_epoch_requeues_and_resumes_in_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    marker, out = tmp_path / "paused", tmp_path / "out"
    pause = json.dumps([{"class_path": "_pause_once.PauseBeforeSecondEpoch", "init_args": {"marker": str(marker)}}])
    job = submit(
        REPO / "configs/quickstart.yaml",
        tiny_train_args(tmp_path, "--trainer.callbacks", pause),
        launcher="submitit-local",
        gpus_per_node=0,
        output_dir=out,
        time="10",
    )
    ckpt = out / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 150
    while not (marker.is_file() and marker.read_text() and ckpt.is_file()):
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.2)
    first = torch.load(ckpt, weights_only=True)
    os.kill(int(marker.read_text()), signal.SIGUSR2)  # what SLURM sends before preempting or timing out a job
    final = job.result()
    assert final == str(ckpt)
    last = torch.load(ckpt, weights_only=True)
    assert first["epoch"] == 0 and last["global_step"] == 2 * first["global_step"] > 0  # epoch 1 ran after the requeue
    assert sorted(p.name for p in out.iterdir()) == ["submitit", "version_0"]  # one run, continued
    log = job.stdout() + job.stderr()
    assert "requeued: the next run continues" in log and f"resuming from {ckpt}" in log


def test_slurm_submission_asks_for_nodes_gpus_and_the_requeue_signal(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # a stand-in for SLURM's commands: sbatch accepts the script, srun exists
    bin_dir.mkdir()
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    job = submit_tool.main(
        [
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--partition",
            "gpu",
            "--time",
            "1-00:00:00",
            "--output-dir",
            str(out),
            "--",
            "--model.init_args.lr",
            "1e-4",
        ]
    )
    assert job.job_id == "4242"
    script = next((out / "submitit" / "4242").glob("*.sh")).read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, line
    submitted = pickle.loads(next((out / "submitit" / "4242").glob("*submitted.pkl")).read_bytes())
    task = submitted.function
    assert isinstance(task, TrainJob) and not task.resume
    args = task.cli_args()
    assert args[:2] == ["fit", "--config"] and args[-2:] == ["--model.init_args.lr", "1e-4"]
    for flag, value in (
        ("--trainer.num_nodes", "2"),
        ("--trainer.devices", "4"),
        ("--trainer.strategy", "ddp"),
        ("--trainer.default_root_dir", str(out)),
    ):
        assert args[args.index(flag) + 1] == value
    assert task.checkpoint().function.resume  # on preemption: the same job, resuming


@pytest.mark.parametrize(
    "text, minutes", [("90", 90), ("45:00", 45), ("1:30:00", 90), ("2-00:00:00", 2880), ("2-12", 3600)]
)
def test_slurm_time_formats(text, minutes):
    assert parse_time(text) == minutes
