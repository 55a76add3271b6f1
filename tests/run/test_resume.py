"""Runs that survive: exact resume, best/last checkpoints, atomic writes, non-finite guards, reproducible seeds."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vision_attn.callbacks import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    NonFiniteError,
    NonFiniteGuard,
    RunCheckpoint,
)
from vision_attn.callbacks import checkpoint as checkpoint_module
from vision_attn.losses import HungarianMatcher
from vision_attn.run.cli import VisionAttnCLI, main
from vision_attn.run.resume import (
    NothingToResumeError,
    ResumableCSVLogger,
    Resume,
    _ContinuingWriter,
    _logged_steps,
    find_last_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
QUIET = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
TINY_VIT = '{"embed_dim": 16, "depth": 1, "num_heads": 2}'


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads can make these tiny steps 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shapes(tmp_path, num_train=300, batch=40, workers=0):
    return [
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        str(num_train),
        "--data.init_args.num_test",
        "50",
        "--data.init_args.val_split",
        "100",
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.num_workers",
        str(workers),
    ]


def classifier(tmp_path, *extra, epochs=2, workers=0):
    return [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        *QUIET,
        "--trainer.max_epochs",
        str(epochs),
        *shapes(tmp_path, workers=workers),
        "--model.init_args.model_args",
        TINY_VIT,
        *extra,
    ]


class StopAfterFirstEpoch(pl.Callback):
    """What a kill after epoch 1 leaves behind: that epoch's last.ckpt (the schedule still plans 2 epochs)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def fit(args, root, *callbacks):
    cli = VisionAttnCLI(args=[*args, "--trainer.default_root_dir", str(root)], run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def last(root):
    return torch.load(Path(root) / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def uninterrupted_and_resumed(tmp_path, args):
    """Run A: 2 epochs. Run B: stopped after epoch 1, then ``fit --ckpt_path last`` through the CLI. Their last.ckpt."""
    fit(args, tmp_path / "A")
    fit(args, tmp_path / "B", StopAfterFirstEpoch())
    stopped = last(tmp_path / "B")
    VisionAttnCLI(args=["fit", *args, "--trainer.default_root_dir", str(tmp_path / "B"), "--ckpt_path", "last"])
    a, b = last(tmp_path / "A"), last(tmp_path / "B")
    assert stopped["global_step"] < a["global_step"] == b["global_step"]
    assert sorted(p.name for p in (tmp_path / "B").iterdir()) == ["version_0"]  # continued in the same version folder
    return a, b


def assert_same_weights(a, b):
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, w in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], w, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")


# ---- exact resume ------------------------------------------------------------------------------------------------
def test_resumed_classifier_with_augmentation_mixup_and_ema_ends_with_the_uninterrupted_weights(tmp_path):
    args = classifier(
        tmp_path,
        "--model.init_args.mixup_alpha",
        "0.8",
        "--model.init_args.cutmix_alpha",
        "1.0",
        "--model.init_args.ema_decay",
        "0.9",
    )
    a, b = uninterrupted_and_resumed(tmp_path, args)
    assert_same_weights(a, b)
    assert any(k.startswith("ema.") for k in a["state_dict"])
    rows = list(csv.DictReader(open(tmp_path / "B" / "version_0" / "metrics.csv")))
    epochs = {float(r["epoch"]) for r in rows if r.get("val/top1")}
    assert epochs == {0.0, 1.0}  # the log continues: epoch 0's rows are kept, epoch 1's appended
    assert (tmp_path / "B" / "version_0" / "checkpoints" / "best.ckpt").is_file()


def test_a_fit_killed_with_sigkill_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    args = classifier(tmp_path, "--model.init_args.ema_decay", "0.9")
    fit(args, tmp_path / "A")
    marker = tmp_path / "paused"  # written by the child at the start of epoch 1, after epoch 0's last.ckpt
    pause = json.dumps([{"class_path": "_pause_once.PauseBeforeSecondEpoch", "init_args": {"marker": str(marker)}}])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
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
                str(tmp_path / "B"),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 600  # a loaded machine: importing torch and building the run can take minutes
        while not (marker.is_file() and marker.read_text()):
            assert time.time() < deadline and child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    VisionAttnCLI(args=["fit", *args, "--trainer.default_root_dir", str(tmp_path / "B"), "--ckpt_path", "last"])
    assert_same_weights(last(tmp_path / "A"), last(tmp_path / "B"))


def test_resumed_detr_ends_with_the_uninterrupted_weights(tmp_path):
    tiny = (
        '{"backbone": "test_resnet", "dilation": true, "pre_norm": true, "hidden_dim": 32, "nheads": 2, '
        '"enc_layers": 1, "dec_layers": 2, "dim_feedforward": 64, "num_queries": 8}'
    )
    args = [
        "--config",
        str(REPO / "configs/detr_shapes.yaml"),
        *QUIET,
        "--trainer.max_epochs",
        "2",
        "--model.init_args.model",
        "detr_tiny_prenorm",
        "--model.init_args.model_args",
        tiny,
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "16",
        "--data.init_args.num_val",
        "4",
        "--data.init_args.img_size",
        "48",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.scales",
        "[32, 40, 48]",
        "--data.init_args.val_size",
        "48",
        "--data.init_args.max_size",
        "64",
    ]
    a, b = uninterrupted_and_resumed(tmp_path, args)
    assert_same_weights(a, b)


def test_resumed_gan_with_both_optimizers_and_ema_ends_with_the_uninterrupted_weights(tmp_path):
    tiny = json.dumps({"ch": 8, "g_mults": [1, 1, 1, 1], "d_mults": [1, 1, 1, 1], "z_dim": 16, "embed_dim": 8})
    args = [
        "--config",
        str(REPO / "configs/sagan_shapes.yaml"),
        *QUIET,
        "--trainer.max_epochs",
        "2",
        "--trainer.max_steps",
        "-1",
        "--trainer.max_time",
        "null",
        "--model.init_args.model_args",
        tiny,
        "--model.init_args.sample_every_n_steps",
        "0",
        "--model.init_args.optim.ema_start",
        "2",
        "--model.init_args.optim.ema_decay",
        "0.5",
        "--model.init_args.criterion.diffaug",
        "color,translation",
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "120",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "8",
        "--data.init_args.batch_size",
        "16",
    ]
    a, b = uninterrupted_and_resumed(tmp_path, args)
    assert_same_weights(a, b)
    assert a["generator_steps"] == b["generator_steps"] > 0
    assert a["optimizer_states"][0]["state"] and a["optimizer_states"][1]["state"]  # G's and D's Adam both restored
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for k, st in opt_a["state"].items():
            torch.testing.assert_close(opt_b["state"][k]["exp_avg"], st["exp_avg"], rtol=0, atol=1e-6)


def test_ckpt_path_last_with_nothing_to_resume_names_the_folder(tmp_path):
    with pytest.raises(SystemExit) as exit_info:  # one line, no traceback
        main(
            ["fit", *classifier(tmp_path), "--trainer.default_root_dir", str(tmp_path / "empty"), "--ckpt_path", "last"]
        )
    line = str(exit_info.value.code)
    assert line.startswith("error: --ckpt_path last: nothing to resume") and str(tmp_path / "empty") in line
    assert "\n" not in line and not (tmp_path / "empty" / "version_0" / "checkpoints").exists()  # nothing trained anew


def test_a_user_model_checkpoint_is_kept_and_short_fits_still_leave_best_ckpt(tmp_path):
    mine = json.dumps(
        [
            {
                "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(tmp_path / "mine"), "filename": "mine"},
            }
        ]
    )
    cli = fit([*classifier(tmp_path, epochs=1), "--trainer.callbacks", mine], tmp_path / "u")
    ckpts = [c for c in cli.trainer.callbacks if isinstance(c, pl.callbacks.ModelCheckpoint)]
    assert len(ckpts) == 1 and not isinstance(ckpts[0], RunCheckpoint) and (tmp_path / "mine" / "mine.ckpt").is_file()
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # installed by the CLI
    # no validation at all: best.ckpt holds the final weights (and last.ckpt too)
    cli = fit([*classifier(tmp_path, epochs=1), "--trainer.limit_val_batches", "0"], tmp_path / "short")
    folder = tmp_path / "short" / "version_0" / "checkpoints"
    best = torch.load(folder / "best.ckpt", weights_only=True)
    assert best["global_step"] == cli.trainer.global_step > 0 and (folder / "last.ckpt").is_file()


# ---- reproducible seeds --------------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights_with_augmentation_and_two_workers(tmp_path):
    args = classifier(tmp_path, "--trainer.limit_val_batches", "0", epochs=1, workers=2)
    runs = [fit(args, tmp_path / name).model.state_dict() for name in ("one", "two")]
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


# ---- atomic checkpoints ------------------------------------------------------------------------------------------
def test_a_failed_checkpoint_write_leaves_the_previous_file_and_names_it(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "_write", disk_full)
    with pytest.raises(CheckpointWriteError) as err:
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    assert (
        str(err.value)
        == f"could not write checkpoint {path}: No space left on device; the previous last.ckpt is unchanged"
    )
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


# ---- non-finite guard ----------------------------------------------------------------------------------------------
def test_a_diverging_classifier_stops_naming_step_and_loss_and_saves_nothing_non_finite(tmp_path):
    args = [*classifier(tmp_path), "--model.init_args.lr", "1e6", "--model.init_args.warmup_epochs", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "run")])
    line = str(exit_info.value.code)
    assert line.startswith("error: step ") and ("train/loss is " in line or "gradient norm is " in line), line
    for ckpt in (tmp_path / "run").rglob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), ckpt


def test_guard_skips_up_to_the_limit_then_stops_and_refuses_non_finite_checkpoints():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    class Trainer:
        global_step = 7
        precision_plugin = None

    guard = NonFiniteGuard(skip_nonfinite=1)
    model.weight.grad, model.bias.grad = torch.tensor([[float("inf"), 1.0]]), torch.zeros(1)
    guard.on_before_optimizer_step(Trainer, None, opt)  # skipped: the gradients are dropped
    assert model.weight.grad is None and guard.skipped == 1
    model.weight.grad = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(NonFiniteError, match=r"^step 7: gradient norm is nan \(after skipping 1 steps"):
        guard.on_before_optimizer_step(Trainer, None, opt)
    with pytest.raises(
        NonFiniteError, match=r"refusing to save a checkpoint: 1 of 2 weight tensors are non-finite \(first: w\)"
    ):
        NonFiniteGuard().on_save_checkpoint(
            Trainer, None, {"state_dict": {"w": torch.tensor([float("nan")]), "b": torch.ones(1)}}
        )


def test_matcher_never_hands_non_finite_costs_to_scipy():
    out = {"pred_logits": torch.randn(1, 3, 3), "pred_boxes": torch.full((1, 3, 4), float("nan"))}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    with pytest.raises(FloatingPointError, match="pred_boxes has 12 non-finite values"):
        HungarianMatcher()(out, targets)


# What ``fit --ckpt_path last`` picks and what the continued metrics.csv holds, on hand-made files (no training).
EXECUTED = []


def _record():
    EXECUTED.append(1)
    return 0


class _Code:
    """An object whose unpickling runs code: a weights-only reader must refuse it, not run it."""

    def __reduce__(self):
        return (_record, ())


def _ckpt(path, step=7, mtime=1000, extra=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": torch.tensor(step)}}}}
    torch.save({**state, **(extra or {})}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_logged_steps_reads_lightnings_counter_and_refuses_code(tmp_path):
    assert _logged_steps(_ckpt(tmp_path / "a.ckpt", step=12)) == 12
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    assert _logged_steps(tmp_path / "foreign.ckpt") is None
    _ckpt(tmp_path / "code.ckpt", extra={"x": _Code()})
    EXECUTED.clear()
    assert _logged_steps(tmp_path / "code.ckpt") is None and EXECUTED == []


def test_resume_is_a_frozen_record():
    r = Resume("p", 1, 2)
    with pytest.raises(AttributeError):
        r.step = 3


def test_newest_version_wins_and_ties_go_to_the_higher_version(tmp_path):
    _ckpt(tmp_path / "version_0/checkpoints/last.ckpt", step=3, mtime=1000)
    _ckpt(tmp_path / "version_1/checkpoints/last.ckpt", step=5, mtime=3000)
    _ckpt(tmp_path / "version_2/checkpoints/last.ckpt", step=9, mtime=2000)
    _ckpt(tmp_path / "version_x/checkpoints/last.ckpt", mtime=9000)  # not a version folder
    _ckpt(tmp_path / "version_3/checkpoints/other.ckpt", mtime=9000)  # no last.ckpt
    (tmp_path / "version_4" / "checkpoints" / "last.ckpt").mkdir(parents=True)  # not a file
    os.utime(tmp_path / "version_4" / "checkpoints" / "last.ckpt", (9000, 9000))
    assert find_last_checkpoint(tmp_path) == Resume(tmp_path / "version_1/checkpoints/last.ckpt", 1, 5)
    _ckpt(tmp_path / "version_10/checkpoints/last.ckpt", step=11, mtime=3000)  # same time: the later version
    assert find_last_checkpoint(str(tmp_path)) == Resume(tmp_path / "version_10/checkpoints/last.ckpt", 10, 11)
    _ckpt(tmp_path / "checkpoints/last.ckpt", step=1, mtime=3000)  # a run without logger, same time: loses
    assert find_last_checkpoint(tmp_path).version == 10
    os.utime(tmp_path / "checkpoints/last.ckpt", (4000, 4000))
    assert find_last_checkpoint(tmp_path) == Resume(tmp_path / "checkpoints/last.ckpt", None, 1)


def test_a_run_without_logger_and_relative_roots(tmp_path, monkeypatch):
    _ckpt(tmp_path / "run/checkpoints/last.ckpt", step=4, mtime=3000)
    _ckpt(tmp_path / "run/version_0/checkpoints/last.ckpt", step=2, mtime=3000)  # same time: the version wins
    monkeypatch.chdir(tmp_path)
    found = find_last_checkpoint("run")
    assert found == Resume(tmp_path / "run/version_0/checkpoints/last.ckpt", 0, 2) and found.ckpt.is_absolute()
    os.remove(tmp_path / "run/version_0/checkpoints/last.ckpt")
    assert find_last_checkpoint("run") == Resume(tmp_path / "run/checkpoints/last.ckpt", None, 4)


def test_nothing_to_resume_names_the_folders(tmp_path):
    with pytest.raises(
        NothingToResumeError,
        match=rf"^--ckpt_path last: nothing to resume, no last.ckpt in "
        rf"{tmp_path}/version_\*/checkpoints/$",
    ):
        find_last_checkpoint(tmp_path)
    assert issubclass(NothingToResumeError, FileNotFoundError)
    with pytest.raises(NothingToResumeError, match=rf"no last.ckpt in {tmp_path / 'a'}, {tmp_path / 'b'}$"):
        find_last_checkpoint(tmp_path, [tmp_path / "a", str(tmp_path / "b")])


def test_user_dirpaths_take_the_newest_last_star(tmp_path):
    _ckpt(tmp_path / "version_0/checkpoints/last.ckpt", mtime=9000)  # ignored when dirpaths are given
    _ckpt(tmp_path / "mine/last.ckpt", step=1, mtime=1000)
    _ckpt(tmp_path / "mine/last-v1.ckpt", step=2, mtime=2000)
    _ckpt(tmp_path / "other/last.ckpt", step=3, mtime=1500)
    _ckpt(tmp_path / "other/best.ckpt", step=4, mtime=5000)
    assert find_last_checkpoint(tmp_path, [tmp_path / "mine", tmp_path / "other"]) == Resume(
        tmp_path / "mine/last-v1.ckpt", None, 2
    )


def _metrics(path, rows, keys=("epoch", "loss", "step")):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(keys))
        w.writeheader()
        w.writerows(rows)


def _read(path):
    with open(path / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


ROWS = [
    {"epoch": 0, "loss": 1.0, "step": 2},
    {"epoch": 0, "loss": "", "step": ""},
    {"epoch": 0, "loss": 0.5, "step": 4.0},
    {"epoch": 1, "loss": 0.25, "step": 5},
    {"epoch": 1, "loss": 0.1, "step": 6},
]


def test_continuing_writer_drops_rows_from_the_checkpoint_step_on(tmp_path):
    log = tmp_path / "version_0"
    _metrics(log, ROWS)
    w = _ContinuingWriter(str(log), keep_before_step=5)
    assert w.metrics_keys == ["epoch", "loss", "step"]
    assert _read(log) == [
        {"epoch": "0", "loss": "1.0", "step": "2"},
        {"epoch": "0", "loss": "", "step": ""},
        {"epoch": "0", "loss": "0.5", "step": "4.0"},
    ]
    w.log_metrics({"loss": 0.3, "acc": 0.9}, step=5)
    w.save()
    assert _read(log)[-1] == {"acc": "0.9", "epoch": "", "loss": "0.3", "step": "5"}
    assert len(_read(log)) == 4


def test_continuing_writer_without_a_step_keeps_every_row(tmp_path):
    log = tmp_path / "version_0"
    _metrics(log, ROWS)
    _ContinuingWriter(str(log), keep_before_step=None)
    assert len(_read(log)) == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("")
    assert _ContinuingWriter(str(empty), keep_before_step=3).metrics_keys == []
    fresh = _ContinuingWriter(str(tmp_path / "new" / "version_0"), keep_before_step=3)
    assert fresh.metrics_keys == [] and (tmp_path / "new" / "version_0").is_dir()
    assert not (tmp_path / "new" / "version_0" / "metrics.csv").exists()


def test_resumable_logger_continues_its_version(tmp_path):
    _metrics(tmp_path / "runs" / "version_3", ROWS)
    logger = ResumableCSVLogger(str(tmp_path), name="runs", version=3, keep_before_step=4)
    assert logger.experiment is logger.experiment  # built once
    assert isinstance(logger.experiment, _ContinuingWriter)
    logger.log_metrics({"loss": 0.7}, step=4)
    logger.save()
    assert [(r["loss"], r["step"]) for r in _read(tmp_path / "runs" / "version_3")] == [
        ("1.0", "2"),
        ("", ""),
        ("0.7", "4"),
    ]
    plain = ResumableCSVLogger(str(tmp_path / "plain"), name="x", version=0)
    plain.log_metrics({"loss": 1.5}, step=0)
    plain.save()
    assert _read(tmp_path / "plain" / "x" / "version_0") == [{"loss": "1.5", "step": "0"}]
