"""GenerationTask's option groups (optim, criterion): typed, checked when built, saved as plain values that a
weights-only checkpoint reads back, and an option still given flat is refused in one line naming its new place."""

import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from vision_attn.losses import GanCriterionConfig
from vision_attn.run.cli import main
from vision_attn.tasks.generation import GanOptimConfig, GenerationTask

REPO = Path(__file__).resolve().parents[2]
TINY = {"ch": 8, "g_mults": [1, 1, 1, 1], "d_mults": [1, 1, 1, 1], "z_dim": 8, "embed_dim": 4}


def test_groups_round_trip_through_a_weights_only_checkpoint_and_drive_the_optimizers():
    task = GenerationTask(
        model_args=TINY,
        num_classes=3,
        optim={"lr_g": 2e-4, "lr_d": 8e-4, "betas": [0.5, 0.99], "d_steps": 2},  # a YAML group, as the benchmark's
        criterion=GanCriterionConfig(loss="nonsaturating", diffaug="color"),
    )
    buf = io.BytesIO()
    torch.save({"hyper_parameters": dict(task.hparams)}, buf)
    buf.seek(0)
    hparams = torch.load(buf, weights_only=True)["hyper_parameters"]  # plain values only
    assert hparams["optim"]["betas"] == [0.5, 0.99] and hparams["criterion"]["loss"] == "nonsaturating"
    again = GenerationTask(**hparams)
    assert again.optim == task.optim == GanOptimConfig(lr_g=2e-4, lr_d=8e-4, betas=(0.5, 0.99), d_steps=2)
    assert again.criterion == task.criterion and again.diffaug.ops == ("color",)
    opt_g, opt_d = again.configure_optimizers()
    assert (opt_g.defaults["lr"], opt_d.defaults["lr"], opt_d.defaults["betas"]) == (2e-4, 8e-4, (0.5, 0.99))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optim": {"lr_d": 0.0}}, "GanOptimConfig (model.init_args.optim): lr_d must be > 0; got 0.0"),
        ({"optim": {"betas": (0.9, 1.0)}}, "betas must be two numbers in [0, 1); got (0.9, 1.0)"),
        ({"optim": {"d_steps": 0}}, "d_steps must be >= 1; got 0"),
        ({"optim": {"ema_start": -1}}, "ema_start must be >= 0; got -1"),
        ({"criterion": {"loss": "wgan"}}, "loss must be one of ['hinge', 'nonsaturating']; got 'wgan'"),
        ({"criterion": {"diffaug": "zoom"}}, "diffaug: DiffAugment policy: unknown op(s) ['zoom']"),
        ({"optim": {"lr": 1e-3}}, "GenerationTask: optim has no option 'lr'; expected some of ['lr_g', 'lr_d'"),
        ({"criterion": "hinge"}, "criterion must be a GanCriterionConfig or a dict of its fields; got 'hinge'"),
    ],
)
def test_a_bad_group_value_is_one_line_naming_the_field(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        GenerationTask(model_args=TINY, num_classes=3, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def _old_gan_config(tmp_path) -> Path:
    """configs/sagan_shapes.yaml as it was written before the groups: optim and criterion keys flat in init_args."""
    cfg = yaml.safe_load((REPO / "configs/sagan_shapes.yaml").read_text())
    init = cfg["model"]["init_args"]
    init.update(init.pop("optim"), **init.pop("criterion"))
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--config", "OLD"],
            "error: GenerationTask: option lr_g moved into optim: write model.init_args.optim.lr_g, or in a config "
            "nest it under optim: (optim holds lr_g, lr_d, betas, d_steps, ema_decay, ema_start)",
        ),
        (
            ["--config", str(REPO / "configs/sagan_shapes.yaml"), "--model.init_args.diffaug", "color"],
            "error: GenerationTask: option diffaug moved into criterion: write model.init_args.criterion.diffaug, or "
            "in a config nest it under criterion: (criterion holds loss, diffaug, real_flip)",
        ),
        (
            ["--config", str(REPO / "configs/detr_shapes.yaml"), "--model.init_args.eos_coef", "0.2"],
            "error: DetectionTask: option eos_coef moved into criterion: write model.init_args.criterion.eos_coef",
        ),
    ],
)
def test_an_option_still_given_flat_is_one_line_naming_its_group(tmp_path, capsys, args, line):
    args = [str(_old_gan_config(tmp_path)) if a == "OLD" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert str(exit_info.value.code).startswith(line) and "\n" not in str(exit_info.value.code)
    assert "usage:" not in capsys.readouterr().err  # not jsonargparse's page of options


def test_print_config_shows_the_groups(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/sagan_shapes.yaml"), "--print_config"])
    init = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init["optim"] == {
        "lr_g": 5e-4,
        "lr_d": 1e-3,
        "betas": [0.0, 0.9],
        "d_steps": 1,
        "ema_decay": 0.99,
        "ema_start": 200,
    }
    assert init["criterion"] == {"loss": "hinge", "diffaug": None, "real_flip": True}
    assert "lr_g" not in init and "loss" not in init


def test_a_checkpoint_saved_with_flat_options_still_gives_its_weights_to_the_new_config(tmp_path):
    """What an older GAN run left: hyper-parameters with the flat names; tools/eval.py and sample.py --ckpt load it."""
    from vision_attn.run.cli import load_task

    old = GenerationTask(model_args=TINY, num_classes=10)
    flat = {k: v for k, v in old.hparams.items() if k not in ("optim", "criterion")}
    flat.update(old.optim.to_hparams(), **old.criterion.to_hparams())
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": flat, "generator_steps": 5}, ckpt)
    overrides = ["--model.init_args.model_args", json.dumps(TINY), "--data.init_args.root", str(tmp_path / "data")]
    task, _, _ = load_task(str(REPO / "configs/sagan_shapes.yaml"), str(ckpt), overrides)
    assert task.optim.lr_g == 5e-4  # the config's settings, the checkpoint's weights
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in task.state_dict().items())


def test_load_from_checkpoint_of_a_run_saved_with_flat_options_keeps_its_settings(tmp_path):
    """Lightning drops hyper-parameters ``__init__`` does not take: an older GAN checkpoint's flat lr_d, d_steps,
    real_flip, ... would silently come back as the defaults. They go to their group; arguments given still win."""
    import pytorch_lightning as pl

    old = GenerationTask(model_args=TINY, num_classes=3)
    flat = {k: v for k, v in old.hparams.items() if k not in ("optim", "criterion")}
    flat.update(lr_d=7e-4, d_steps=3, betas=(0.5, 0.99), ema_start=7, loss="nonsaturating", real_flip=False)
    ckpt = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": old.state_dict(), "hyper_parameters": flat, "pytorch-lightning_version": pl.__version__}, ckpt
    )
    task = GenerationTask.load_from_checkpoint(ckpt)
    assert task.optim == GanOptimConfig(lr_d=7e-4, d_steps=3, betas=(0.5, 0.99), ema_start=7)
    assert task.criterion == GanCriterionConfig(loss="nonsaturating", real_flip=False)
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in task.state_dict().items())
    again = GenerationTask.load_from_checkpoint(str(ckpt), optim={"lr_d": 1e-4})
    assert (again.optim.lr_d, again.optim.d_steps) == (1e-4, 3)
    assert GenerationTask.load_from_checkpoint(ckpt, optim=GanOptimConfig()).optim == GanOptimConfig()
