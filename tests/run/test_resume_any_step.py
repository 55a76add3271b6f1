"""Resume at any step: a fit killed with SIGKILL at a random batch and resumed with ``--ckpt_path last`` ends with the
weights (every tensor, bit for bit) and the logged losses of an uninterrupted one: the classifier and the SA-GAN."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vision_attn.callbacks import RunCheckpoint
from vision_attn.callbacks.checkpoint import remove_stale_temporary_files
from vision_attn.data.resumable import ResumableSampler, SeededSamples
from vision_attn.run.cli import VisionAttnCLI

REPO = Path(__file__).resolve().parents[2]
QUIET = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the killed child (OMP_NUM_THREADS=1): the same kernels, the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def classifier_args(tmp_path):
    return [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        *QUIET,
        "--trainer.max_epochs",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--model.init_args.model_args",
        '{"embed_dim": 16, "depth": 1, "num_heads": 2}',
        "--model.init_args.mixup_alpha",
        "0.8",
        "--model.init_args.ema_decay",
        "0.9",
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "220",
        "--data.init_args.num_test",
        "50",
        "--data.init_args.val_split",
        "100",
        "--data.init_args.batch_size",
        "40",
        "--data.init_args.num_workers",
        "0",
        "--last_every_n_batches",
        "1",
    ]


def gan_args(tmp_path):
    tiny = json.dumps({"ch": 8, "g_mults": [1, 1, 1, 1], "d_mults": [1, 1, 1, 1], "z_dim": 16, "embed_dim": 8})
    return [
        "--config",
        str(REPO / "configs/sagan_shapes.yaml"),
        *QUIET,
        "--trainer.max_epochs",
        "2",
        "--trainer.max_steps",
        "-1",
        "--trainer.max_time",
        "null",
        "--trainer.log_every_n_steps",
        "1",
        "--model.init_args.model_args",
        tiny,
        "--model.init_args.sample_every_n_steps",
        "3",
        "--model.init_args.n_samples",
        "4",
        "--model.init_args.optim.ema_start",
        "2",
        "--model.init_args.optim.ema_decay",
        "0.5",
        "--model.init_args.criterion.diffaug",
        "color,translation",
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "72",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "8",
        "--data.init_args.batch_size",
        "16",
        "--last_every_n_batches",
        "1",
    ]


def kill_at_batch(args, root, batch, tmp_path):
    """Run ``tools/train.py fit`` in a child, SIGKILL it just before training batch ``batch`` (of the whole fit)."""
    marker = tmp_path / f"paused-{root.name}"
    pause = json.dumps(
        [{"class_path": "_pause_once.PauseAtBatch", "init_args": {"marker": str(marker), "batch": batch}}]
    )
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tools/train.py"),
                "fit",
                *args,
                "--trainer.callbacks",
                pause,
                "--trainer.default_root_dir",
                str(root),
            ],
            env=ENV,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 600  # a loaded machine: importing torch and building the run can take minutes
        while not (marker.is_file() and marker.read_text()):
            assert time.time() < deadline and child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL


def last(root):
    return torch.load(Path(root) / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def losses(root, prefix):
    with open(Path(root) / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["step"], k, v) for r in rows for k, v in sorted(r.items()) if k.startswith(prefix) and v]


def killed_and_resumed_equals_uninterrupted(tmp_path, args, n_batches, prefix, seed):
    batch = random.Random(seed).randrange(1, n_batches)  # a kill before a random batch (seeded: a failure reproduces)
    VisionAttnCLI(args=["fit", *args, "--trainer.default_root_dir", str(tmp_path / "A")])
    kill_at_batch(args, tmp_path / "B", batch, tmp_path)
    folder = tmp_path / "B" / "version_0" / "checkpoints"
    stale = folder / f".last.ckpt.{2**22 + 12345}.tmp"  # what a kill mid-write leaves (no such process)
    stale.write_bytes(b"half")
    killed_at = last(tmp_path / "B")["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    VisionAttnCLI(args=["fit", *args, "--trainer.default_root_dir", str(tmp_path / "B"), "--ckpt_path", "last"])
    a, b = last(tmp_path / "A"), last(tmp_path / "B")
    assert killed_at < n_batches and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k, t in a["state_dict"].items() if not torch.equal(t, b["state_dict"][k])]
    assert differ == [], f"killed before batch {batch}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for k, st in opt_a["state"].items():
            assert all(torch.equal(v, opt_b["state"][k][n]) for n, v in st.items() if isinstance(v, torch.Tensor))
    assert losses(tmp_path / "A", prefix) == losses(tmp_path / "B", prefix) != []
    assert not stale.exists()
    return a, b


def test_classifier_killed_at_a_random_batch_resumes_bit_exact(tmp_path):
    killed_and_resumed_equals_uninterrupted(tmp_path, classifier_args(tmp_path), n_batches=6, prefix="train/", seed=24)


def test_gan_killed_at_a_random_batch_resumes_bit_exact(tmp_path):
    a, b = killed_and_resumed_equals_uninterrupted(tmp_path, gan_args(tmp_path), n_batches=8, prefix="train/", seed=23)
    assert a["generator_steps"] == b["generator_steps"] == 8


# ---- the pieces -----------------------------------------------------------------------------------------------------
class Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i, float(torch.rand(()))


def test_sampler_order_and_augmentation_depend_on_seed_epoch_and_image_only():
    data = SeededSamples(Noisy())
    sampler = ResumableSampler(data.dataset, seed=5)
    sampler.set_epoch(1)
    full = [data[k] for k in sampler]
    torch.rand(7)  # other draws in between change nothing
    sampler.set_epoch(1)
    sampler.skip(4)
    assert [data[k] for k in sampler] == full[4:]
    assert [data[k] for k in sampler] == full  # skip applies to one iterator only
    sampler.set_epoch(2)
    assert [data[k] for k in sampler] != full
    state = torch.get_rng_state()
    data[(3, 99)]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert sorted(i for i, _ in full) == list(range(10)) and data[3][0] == 3  # plain keys: as the dataset


def test_stale_temporary_files_of_dead_processes_are_removed_and_others_kept(tmp_path):
    dead = tmp_path / f".last.ckpt.{2**22 + 7}.tmp"
    mine = tmp_path / f".last.ckpt.{os.getpid()}.tmp"
    parent = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # a running process
    other = tmp_path / ".notes.tmp"
    for f in (dead, mine, parent, other):
        f.write_bytes(b"x")
    assert remove_stale_temporary_files(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in (mine, parent, other))
    assert remove_stale_temporary_files(tmp_path / "missing") == []


def test_last_every_n_batches_is_checked():
    with pytest.raises(ValueError, match="last_every_n_batches must be >= 0; got -1"):
        RunCheckpoint(last_every_n_batches=-1)


def test_a_checkpoint_saved_at_a_batch_end_keeps_that_batches_logged_row(tmp_path):
    from vision_attn.run.resume import _logged_steps

    def ckpt(**total):
        path = tmp_path / "c.ckpt"
        torch.save(
            {
                "loops": {
                    "fit_loop": {
                        "epoch_loop.state_dict": {"_batches_that_stepped": 7},
                        "epoch_loop.batch_progress": {"total": total},
                    }
                }
            },
            path,
        )
        return _logged_steps(path)

    assert ckpt(ready=8, started=8, processed=8, completed=7) == 8  # saved in on_train_batch_end: row 7 is kept
    assert ckpt(ready=8, started=8, processed=8, completed=8) == 7  # saved at the epoch's end
