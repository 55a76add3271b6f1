"""tools/export.py: a training checkpoint becomes a from_pretrained folder; the CLI refuses a contradicting num_classes."""

import json
import sys
from pathlib import Path

import pytest
import torch

import vision_attn as va
from vision_attn.data.synthetic import SHAPE_CLASSES, SHAPES_MEAN
from vision_attn.models import class_names
from vision_attn.run.cli import NumClassesMismatchError, VisionAttnCLI

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import export as export_tool  # noqa: E402
import train as train_tool  # noqa: E402

TINY_VIT = '{"embed_dim": 32, "depth": 1, "num_heads": 2}'


def _data_flags(tmp_path):
    # 180 training images in batches of 50: 3 steps an epoch, so the EMA (from the 2nd step on) differs from the model
    return [
        "--data.init_args.root",
        str(tmp_path / "data"),
        "--data.init_args.num_train",
        "200",
        "--data.init_args.num_test",
        "20",
        "--data.init_args.val_split",
        "20",
        "--data.init_args.batch_size",
        "50",
        "--data.init_args.num_workers",
        "0",
    ]


def test_export_writes_the_runs_ema_weights_class_names_and_preprocessing(tmp_path):
    flags = [*_data_flags(tmp_path), "--model.init_args.model_args", TINY_VIT, "--model.init_args.ema_decay", "0.5"]
    cli = VisionAttnCLI(
        args=[
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            *flags,
            "--trainer.max_epochs",
            "1",
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["num_classes"] == 10 and saved["class_names"] == list(SHAPE_CLASSES)

    out = export_tool.main(
        [
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--ckpt",
            str(ckpt),
            "--output",
            str(tmp_path / "model"),
            *flags,
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_nano_patch4_32" and config["label_names"] == list(SHAPE_CLASSES)
    model = va.from_pretrained(out).eval()
    assert class_names(model) == list(SHAPE_CLASSES) and model.pretrained_cfg["mean"] == SHAPES_MEAN
    assert va.resolve_data_config(model)["input_size"] == (3, 32, 32)
    ema = cli.model.ema.module.eval()
    assert not torch.equal(ema.pos_embed, cli.model.model.pos_embed)  # the EMA differs from the trained weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ema(x))


def test_an_explicit_num_classes_that_disagrees_with_the_data_is_one_error_line(tmp_path):
    args = [
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        *_data_flags(tmp_path),
        "--model.init_args.num_classes",
        "3",
    ]
    with pytest.raises(
        NumClassesMismatchError, match="num_classes 3 disagrees with SyntheticShapesDataModule's num_classes 10"
    ):
        VisionAttnCLI(args=[*args, "--trainer.logger", "false"], run=False)
    with pytest.raises(SystemExit) as e:  # the command line: one line, no traceback
        train_tool.main(["fit", *args])
    assert str(e.value.code).startswith("error: --model.init_args.num_classes 3") and "\n" not in str(e.value.code)
