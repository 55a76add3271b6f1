"""Model options are typed end to end: a wrong option name or type in ``model_args`` is refused when the config
is parsed, in one line naming the model, the option and the expected type; ``--print_config`` shows the model's
options at the values it would be built with."""

import contextlib
import io

import pytest
import yaml

from vision_attn.models import validate_model_args
from vision_attn.models.option_defaults import model_option_defaults
from vision_attn.run.cli import main

QUICKSTART = ["fit", "--config", "configs/quickstart.yaml"]


def test_validate_names_the_model_the_option_and_the_expected_type():
    with pytest.raises(ValueError, match=r"^model 'vit_tiny_patch4_32': option embed_dim expects int, got str 'wide'$"):
        validate_model_args("vit_tiny_patch4_32", {"embed_dim": "wide"})
    with pytest.raises(
        ValueError,
        match=r"^model 'vit_tiny_patch4_32' takes no option 'embed_dm' \(did you mean embed_dim\?\); its options: .*embed_dim",
    ):
        validate_model_args("vit_tiny_patch4_32", {"embed_dm": 8})
    with pytest.raises(ValueError, match=r"option in_chans expects int, got str 'rgb'"):
        validate_model_args("resnet18", {"in_chans": "rgb"})
    # options a factory takes itself (SA-GAN's ch), Optional, sequences from YAML lists, other libraries' extras
    validate_model_args("sagan_32", {"ch": 8})
    validate_model_args("vit_tiny_patch4_32", {"attn_window": None, "img_size": [32, 32], "mlp_ratio": 2})
    validate_model_args("resnet18", {"drop_rate": 0.1})
    validate_model_args("hf-hub:org/repo", {"anything": 1})  # not ours to check here


def test_defaults_are_the_factorys_presets_over_the_class_defaults():
    d = model_option_defaults("vit_tiny_patch4_32")
    assert (d["embed_dim"], d["depth"], d["num_heads"], d["patch_size"], d["qkv_bias"]) == (192, 12, 3, 4, True)
    assert model_option_defaults("detr_tiny_prenorm")["backbone"] == "test_resnet"


def test_a_wrong_option_type_is_one_error_line_from_the_command_line():
    with pytest.raises(SystemExit) as exit_:
        main([*QUICKSTART, "--model.init_args.model_args", '{"embed_dim": "wide"}', "--trainer.max_steps", "1"])
    assert str(exit_.value.code) == "error: model 'vit_nano_patch4_32': option embed_dim expects int, got str 'wide'"


def test_print_config_shows_the_models_options_with_the_given_ones_applied():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*QUICKSTART, "--model.init_args.model_args", '{"depth": 2}', "--print_config"])
    assert exit_.value.code == 0
    args = yaml.safe_load(out.getvalue())["model"]["init_args"]["model_args"]
    assert args["depth"] == 2 and args["embed_dim"] == 128 and args["pos_embed"] == "learned"
    assert "num_classes" not in args  # the task sets it from the data
