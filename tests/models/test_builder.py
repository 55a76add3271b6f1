"""The builder in timm's shape: an acyclic models/ package, timm's list_models and filter signatures, typed model
options, and config.json files that cannot make from_pretrained reach out."""

import ast
import json
from pathlib import Path

import pytest
import timm
import torch

import vision_attn as va
from vision_attn.models import CheckpointError, UnknownModelError, list_models, validate_model_args

MODELS = Path(va.__file__).parent / "models"


def _module_name(path: Path) -> str:
    parts = path.relative_to(MODELS.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _internal_imports(path: Path) -> set:
    """The vision_attn.models modules ``path`` imports, at any depth of its code (function-level imports too)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] if node.module else []
            for alias in node.names:  # "from . import weights": a submodule
                sub = f"{base}.{alias.name}"
                if (MODELS.parent.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    MODELS.parent.parent / Path(*sub.split(".")) / "__init__.py"
                ).is_file():
                    targets.append(sub)
                elif not node.module:
                    targets.append(base)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.startswith("vision_attn.models") and t != me)
    return out


def test_models_imports_form_a_dag_with_the_registry_at_the_bottom():
    files = sorted(MODELS.rglob("*.py"))
    graph = {_module_name(f): _internal_imports(f) for f in files}
    assert len(graph) >= 20 and all(t in graph for deps in graph.values() for t in deps), graph
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                pytest.fail("import cycle in models/: " + " -> ".join(stack[stack.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert graph["vision_attn.models.registry"] == {"vision_attn.models.pretrained_cfgs"}
    assert graph["vision_attn.models.pretrained_cfgs"] == set()


def test_builder_functions_are_short():
    """No function of the builder's modules over 60 lines of code (docstrings excluded)."""
    for name in ("registry", "builder", "loader", "download", "checkpoint", "hub", "hub_config", "options", "features"):
        tree = ast.parse((MODELS / f"{name}.py").read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            body = fn.body[1:] if ast.get_docstring(fn) else fn.body
            lines = {
                ln
                for stmt in body
                for n in ast.walk(stmt)
                if hasattr(n, "lineno")
                for ln in range(n.lineno, getattr(n, "end_lineno", n.lineno) + 1)
            }
            assert len(lines) <= 60, f"{name}.{fn.name}: {len(lines)} lines"


def test_list_models_takes_timms_arguments_with_timms_meaning():
    assert list_models() == list_models("") and "vit_nano_patch4_32" in list_models()
    assert list_models(["vit_tiny*", "resnet18"]) == ["resnet18", "vit_tiny_patch4_32", "vit_tiny_patch16_224"]
    assert list_models("vit_*", exclude_filters=["*patch16*", "*small*"]) == [
        "vit_nano_patch4_32",
        "vit_tiny_patch4_32",
    ]
    assert list_models(module="cnn") == ["resnet10_narrow_cifar", "resnet18", "resnet18_cifar", "resnet34", "resnet50"]
    tagged = list_models("resnet18", pretrained=True)
    assert tagged[0] == "resnet18.a1_in1k" and set(tagged) == set(timm.list_models("resnet18", pretrained=True)) & set(
        tagged
    )
    assert len(tagged) == 7 and all(n.startswith("resnet18.") for n in tagged)
    assert list_models("resnet18*", pretrained=True, include_tags=False) == ["resnet18"]  # resnet18_cifar: no weights
    with_tags = list_models("resnet18*", include_tags=True)
    assert with_tags[:7] == tagged and with_tags[-1] == "resnet18_cifar"  # no tags: the bare name stays
    assert list_models("resnet18.tv*", pretrained=True) == ["resnet18.tv_in1k"]
    assert list_models("vit_*", name_matches_cfg=True) == [
        "vit_base_patch16_224",
        "vit_large_patch16_224",
        "vit_small_patch16_224",
        "vit_tiny_patch16_224",
    ]


def test_checkpoint_filter_fn_takes_timms_state_dict_and_model(tmp_path):
    """timm's load_checkpoint calls filter_fn(state_dict, model) without a one-argument fallback."""
    ref = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=3)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    ours = va.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=3).eval()
    timm.models.load_checkpoint(ours, str(tmp_path / "w.pth"), filter_fn=ours.checkpoint_filter_fn)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref.eval()(x), atol=1e-5)
    assert set(ours.checkpoint_filter_fn(ref.state_dict())) == set(ours.state_dict())  # the one-argument call


@pytest.mark.parametrize(
    "arch, args, match",
    [
        (
            "vit_tiny_patch16_224",
            {"embed_dim": "wide"},
            r"^model 'vit_tiny_patch16_224': option embed_dim expects int, got str 'wide'$",
        ),
        ("vit_tiny_patch16_224", {"class_token": 1}, r"option class_token expects bool, got int 1$"),
        ("vit_tiny_patch16_224", {"img_size": (32, "x")}, r"option img_size expects int or tuple\[int, int\]"),
        (
            "vit_tiny_patch16_224",
            {"init_value": 0.1},
            r"^model 'vit_tiny_patch16_224' takes no option 'init_value' \(did you mean init_values\?\); its options: ",
        ),
        ("resnet18", {"layers": "2222"}, r"option layers expects tuple\[int, \.\.\.\], got str"),
        ("detr_tiny_prenorm", {"num_queries": 2.5}, r"option num_queries expects int, got float 2.5"),
        ("nonlocal_resnet18_cifar", {"nonlocal_stages": ["2"]}, r"option nonlocal_stages expects Sequence\[int\]"),
        ("sagan_32", {"ch": "8"}, r"option ch expects int, got str '8'"),
    ],
)
def test_validate_model_args_names_the_model_the_option_and_the_type(arch, args, match):
    with pytest.raises(TypeError, match=match) as err:
        validate_model_args(arch, args)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match=match):  # create_model refuses it before building anything
        va.create_model(arch, **args)


@pytest.mark.parametrize("arch", ["resnet18_cifar", "nonlocal_resnet18_cifar", "sasa_resnet26_cifar"])
def test_a_cifar_model_refuses_timms_deep_stem_in_one_line(arch):
    """Its stem is replaced by one 3x3 stride-1 conv, so timm's deep stems (a Sequential) cannot be kept."""
    with pytest.raises(TypeError, match=rf"^model '{arch}': option stem_type expects '' .*, got 'deep'$") as err:
        va.create_model(arch, stem_type="deep")
    assert "\n" not in str(err.value)
    assert va.create_model(arch, stem_type="").conv1.stride == (1, 1)


def test_validate_model_args_accepts_what_configs_give():
    validate_model_args("vit_tiny_patch16_224", {"img_size": [32, 32], "mlp_ratio": 2, "init_values": None, "depth": 1})
    validate_model_args("resnet18_cifar", {"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1], "drop_rate": 0.1})
    validate_model_args("sasa_resnet26_cifar", {"kernel_size": 3, "num_heads": 2})
    validate_model_args("detr_tiny_prenorm", {"num_queries": 4, "backbone_kwargs": {"output_stride": 16}})


def _folder(tmp_path, **edits) -> Path:
    """A saved folder of a tiny ViT whose config.json gets ``edits`` (key paths with dots)."""
    out = tmp_path / "m"
    if not out.exists():
        va.create_model("vit_nano_patch4_32", depth=1, num_classes=3).save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            {"model_args__pretrained": "http://example.org/w.pth"},
            r"model_args\.pretrained: not allowed in a config file",
        ),
        ({"model_args__checkpoint_path": "/etc/passwd"}, r"model_args\.checkpoint_path: not allowed"),
        (
            {"model_args__pretrained_cfg_overlay": {"file": "/etc/passwd"}},
            r"model_args\.pretrained_cfg_overlay: not allowed",
        ),
        ({"model_args__cache_dir": "/tmp"}, r"model_args\.cache_dir: not allowed"),
        (
            {"model_args__pos_embed": "../../w.pth"},
            r"model_args\.pos_embed: expected an option value, found a path or URL",
        ),
        ({"model_args__num_classes": 1e12}, r"model_args\.num_classes: expected a number in \[0, 100000\]"),
        ({"num_classes": 10**12}, r"config\.json: num_classes: expected an int in \[0, 100000\]"),
        ({"model_args__img_size": 100000}, r"model_args\.img_size: expected a number in \[1, 8192\]"),
        ({"model_args__embed_dim": "wide"}, r"model_args\.embed_dim: expected int, found str 'wide'"),
        ({"model_args__unknown": 1}, r"model_args\.unknown: not allowed in a config file \(no option of"),
        (
            {"architecture": {"name": "vit_nano_patch4_32"}},
            r"architecture: expected a model name \(a string\), found dict",
        ),
        ({"pretrained_cfg__std": [0.5, 0.0, 0.5]}, r"pretrained_cfg\.std: expected 3 finite numbers > 0"),
        ({"pretrained_cfg__mean": [0.5, float("nan"), 0.5]}, r"pretrained_cfg\.mean: expected 3 finite numbers"),
        ({"pretrained_cfg__input_size": [3, 32]}, r"pretrained_cfg\.input_size: expected 3 positive ints"),
        (
            {"pretrained_cfg__interpolation": "magic"},
            r"pretrained_cfg\.interpolation: expected one of nearest, bilinear",
        ),
        ({"pretrained_cfg__crop_pct": 1.5}, r"pretrained_cfg\.crop_pct: expected a number in \(0, 1\]"),
        ({"vision_attn__pretrained_cfg__short_side": -3}, r"vision_attn: pretrained_cfg\.short_side: expected an int"),
    ],
)
def test_a_config_json_cannot_reach_out_or_allocate_the_machine(tmp_path, monkeypatch, edit, match):
    def no_network(*a, **k):
        raise AssertionError("from_pretrained tried to fetch something")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    folder = _folder(tmp_path, **edit)
    with pytest.raises(CheckpointError, match=match) as err:
        va.from_pretrained(folder)
    assert str(err.value).startswith(str(folder / "config.json")) and "\n" not in str(err.value)


def test_a_config_naming_an_unknown_architecture_is_one_line(tmp_path):
    folder = _folder(tmp_path, architecture="vit_nano_patch4_32.some_tag")
    with pytest.raises(UnknownModelError, match="is not a vision_attn model"):
        va.from_pretrained(folder)


def test_a_checked_config_still_loads_and_timms_switched_off_sources_pass(tmp_path):
    folder = _folder(tmp_path, model_args__pretrained=False, model_args__drop_rate=0.0)
    model = va.from_pretrained(folder)
    assert model.num_classes == 3 and model.pretrained_cfg["source"] == "local-dir"
