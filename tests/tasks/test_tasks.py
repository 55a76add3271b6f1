"""Lightning training, the CLI tools and DDP, on small synthetic data the project generates."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vision_attn as va
from vision_attn.tasks import ClassificationTask
from vision_attn.tasks.classification import param_groups_weight_decay, warmup_cosine

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import demo as demo_tool  # noqa: E402
import eval as eval_tool  # noqa: E402
import train as train_tool  # noqa: E402

TINY_VIT = '{"embed_dim": 32, "depth": 2, "num_heads": 2}'


def tiny_overrides(tmp_path, *, epochs=2, num_train=400, root_dir=True, trainer=True):
    """Flags shrinking a quickstart config to seconds: tiny data, few epochs, CPU."""
    args = []
    if trainer:
        args += [
            "--trainer.max_epochs",
            str(epochs),
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
        ]
    if root_dir:
        args += ["--trainer.default_root_dir", str(tmp_path / "run")]
    return args + [
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        str(num_train),
        "--data.init_args.num_test",
        "100",
        "--data.init_args.val_split",
        "100",
        "--data.init_args.batch_size",
        "50",
        "--data.init_args.num_workers",
        "0",
    ]


def test_no_weight_decay_on_norms_biases_positions_and_class_token():
    m = va.create_model("vit_tiny_patch4_32", depth=1)
    decay, no_decay = param_groups_weight_decay(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.in_proj_bias", "head.bias"} <= skipped
    assert {
        "blocks.0.attn.in_proj_weight",
        "blocks.0.mlp.fc1.weight",
        "patch_embed.proj.weight",
        "head.weight",
    } <= decayed
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05


def test_warmup_then_cosine_schedule():
    lrs = [warmup_cosine(s, 10, 100, 0.01) for s in range(100)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] == 1.0
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert warmup_cosine(100, 10, 100, 0.01) == pytest.approx(0.01)


def test_fit_writes_checkpoints_and_logs_and_eval_reproduces_the_test_metrics(tmp_path):
    cli = train_tool.VisionAttnCLI(
        args=[
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            *tiny_overrides(tmp_path),
            "--model.init_args.model_args",
            TINY_VIT,
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    version = tmp_path / "run" / "version_0"
    ckpts = version / "checkpoints"
    assert (ckpts / "best.ckpt").is_file() and (ckpts / "last.ckpt").is_file()
    with open(version / "metrics.csv") as f:
        cols = next(csv.reader(f))
    assert {"val/top1", "val/top5", "train/loss"} <= set(cols)
    assert any(p.name.startswith("events.out.tfevents") for p in version.iterdir())
    (ref,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpts / "best.ckpt"), verbose=False)

    report = eval_tool.main(
        [
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--ckpt",
            str(ckpts / "best.ckpt"),
            "--output-dir",
            str(tmp_path / "eval"),
            *tiny_overrides(tmp_path, root_dir=False),
            "--model.init_args.model_args",
            TINY_VIT,
        ]
    )
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["top1"] == pytest.approx(ref["test/top1"]) == pytest.approx(report["top1"])
    assert saved["split"] == "test" and saved["params"] > 0

    # the checkpoint loads into a plain model (no Lightning) and gives the task's logits
    plain = va.create_model(
        "vit_nano_patch4_32",
        pretrained=str(ckpts / "best.ckpt"),
        num_classes=cli.model.num_classes,
        **json.loads(TINY_VIT),
    ).eval()
    task = ClassificationTask.load_from_checkpoint(ckpts / "best.ckpt").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), task(x))


def test_ema_weights_are_evaluated_and_saved(tmp_path):
    cli = train_tool.VisionAttnCLI(
        args=[
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            *tiny_overrides(tmp_path, epochs=1),
            "--model.init_args.model_args",
            TINY_VIT,
            "--model.init_args.ema_decay",
            "0.9",
            "--model.init_args.mixup_alpha",
            "0.8",
            "--model.init_args.cutmix_alpha",
            "1.0",
        ],
        run=False,
    )
    task = cli.model
    cli.trainer.fit(task, datamodule=cli.datamodule)
    assert task.eval_model is task.ema.module
    assert not torch.equal(task.ema.module.pos_embed, task.model.pos_embed)
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    loaded = va.create_model(
        "vit_nano_patch4_32", pretrained=str(ckpt), num_classes=task.num_classes, **json.loads(TINY_VIT)
    )
    assert torch.equal(loaded.pos_embed, task.ema.module.pos_embed)


def test_demo_writes_results_for_each_model(tmp_path):
    out = tmp_path / "demo"
    results = demo_tool.main(["--output-dir", str(out), *tiny_overrides(tmp_path, epochs=1, root_dir=False)])
    saved = json.loads((out / "results.json").read_text())
    assert saved == results and len(saved) == 3  # ViT, CNN, pixel attention
    for row in saved.values():
        assert set(row) == {"top1", "train_seconds", "params"}
        assert 0.0 <= row["top1"] <= 1.0 and row["train_seconds"] > 0 and row["params"] > 0


@pytest.mark.slow
def test_ddp_with_two_processes_reaches_the_weights_of_one_process_with_the_global_batch(tmp_path):
    """2 DDP processes x batch B/2 == 1 process x batch B, step for step: each process takes every other image of the
    (unshuffled, unaugmented) order and the gradients are averaged, so after the same optimizer steps the weights agree."""
    num_train, val_split, global_batch = 400, 100, 100
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def fit(name, devices):
        run = tmp_path / name
        run.mkdir()
        cmd = [
            sys.executable,
            str(REPO / "tools/train.py"),
            "fit",
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            *tiny_overrides(run, epochs=1, num_train=num_train),
            "--data.init_args.batch_size",
            str(global_batch // devices),
            "--data.init_args.shuffle",
            "false",
            "--data.init_args.augment",
            "false",
            "--model.init_args.model_args",
            TINY_VIT,
            "--trainer.devices",
            str(devices),
            *(["--trainer.strategy", "ddp"] if devices > 1 else []),
        ]
        return run, subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    runs = [fit("ddp2", 2), fit("single", 1)]
    ckpts = []
    for run, proc in runs:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-4000:]
        ckpts.append(
            torch.load(run / "run" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        )
    ddp, single = ckpts
    steps = (num_train - val_split) // global_batch
    assert ddp["global_step"] == single["global_step"] == steps  # each DDP process saw half the images per step
    init = va.create_model("vit_nano_patch4_32", num_classes=10, **json.loads(TINY_VIT))
    moved = 0
    for name, w in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][name], w, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
        key = name.removeprefix("model.")
        moved += key in init.state_dict() and not torch.allclose(init.state_dict()[key], w)
    assert moved > 10  # training changed the weights, so the agreement is not that of two untouched models
