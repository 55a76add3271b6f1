"""timm's own model tests, ported to our registry: what a timm user assumes of a timm model holds for ours.

Ported from huggingface/pytorch-image-models ``tests/test_models.py`` (read at aa4b585, 2026-08): the same checks,
input-size rule (``_get_input_size``) and tolerances, run over ``vision_attn.list_models()``. The loading tests
(``test_model_default_cfgs``' cfg fields, ``test_model_load_pretrained``, ``test_model_features_pretrained``) are the
builder's: ``tests/models/test_timm_loading.py``. Here: forward, backward, the head / pooling part of
``test_model_default_cfgs`` (num_features, head_hidden_size, pre_logits, ``reset_classifier``), forward_features,
forward_intermediates (+ the ``getter`` features), TorchScript, torch.fx (+ backward, + TorchScript, + fx features
scripted), and what the issue adds: gradient checkpointing gives the same outputs *and gradients*, ``group_matcher``
groups the blocks for timm's layer decay, and a scripted model still refuses a wrong input.

Every test runs on a small member of each family by default (2 CPU cores): ``FAST``. The whole registry at timm's
sizes (capped as below; DETR and SA-GAN with narrow layers, ``FULL_KWARGS``) is marked ``timm_full`` and runs with
``make test-timm``.

Tests that cannot apply to a family (excluded by ``NOT_APPLICABLE``, each with its reason; nothing is skipped silently):

| tests | family | why |
| --- | --- | --- |
| head, forward_features, forward_intermediates (+ features), group_matcher | detr | a detector, not a classifier or backbone: ``forward`` returns per-query class logits and boxes (``K + 1`` classes, the last "no object"); there is no pooled head to reset and no feature pyramid (its ResNet backbone is timm's, tested in ``test_detr_backbones.py``) |
| torchscript, fx, fx_backward, fx_torchscript, features_fx_torchscript | detr | ``forward`` takes a tensor *or a list* of differently sized images and branches on that structure (padding known from the input's type), returning a dict with a list of auxiliary outputs: neither TorchScript nor symbolic tracing can express it; ``torch.compile`` / ``torch.export`` are tested in ``test_compile.py`` |
| grad_checkpointing | detr, sagan | no ``set_grad_checkpointing``: timm's test accepts that ("throws if not supported") |
| head, forward_features, forward_intermediates (+ features), group_matcher | sagan | a GAN: ``forward(z, labels)`` generates images from noise; no classifier head and no image-to-feature trunk to extract |
| torchscript, fx, fx_backward, fx_torchscript, features_fx_torchscript | sagan | its spectral norm recomputes ``weight`` in a forward pre-hook with a Python power iteration (training) and its labels are checked by value: neither compiles in TorchScript nor traces in fx |
"""

import fnmatch
import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from timm.models._features import FeatureGetterNet  # timm exports no public name for it (its feature_cls="getter")
from timm.models._features_fx import FeatureGraphNet
from timm.optim import param_groups_layer_decay
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import vision_attn as va

# timm's sizes: the smallest side a non-fixed model is run at (TARGET_*) and the largest allowed (MAX_*). timm's
# targets are 96-128 px; ours are 64 (2 CPU cores); the caps are timm's, so the 224-px fixed-size ViTs still run.
TARGET_FWD_SIZE, MAX_FWD_SIZE = 64, 384
TARGET_BWD_SIZE, MAX_BWD_SIZE = 64, 320
TARGET_JIT_SIZE, MAX_JIT_SIZE = 64, 320
TARGET_FFEAT_SIZE, MAX_FFEAT_SIZE = 64, 256
TARGET_FWD_FX_SIZE, MAX_FWD_FX_SIZE = 64, 256
TARGET_BWD_FX_SIZE, MAX_BWD_FX_SIZE = 64, 224

FAMILIES = {  # registry pattern -> family (every registered name must have one: test_every_model_has_a_family)
    "vit_*_patch16_*": "vit",
    "vit_*_patch4_32": "vit_cifar",
    "resnet*": "cnn",
    "sasa_resnet*": "sasa",
    "nonlocal_resnet*": "nonlocal",
    "detr_*": "detr",
    "sagan_*": "sagan",
}
CLASSIFIERS = ("vit", "vit_cifar", "cnn", "sasa", "nonlocal")

_NOT_A_CLASSIFIER = (
    "head",
    "forward_features",
    "forward_intermediates",
    "forward_intermediates_features",
    "group_matcher",
)
_NOT_SCRIPTABLE = ("torchscript", "fx", "fx_backward", "fx_torchscript", "features_fx_torchscript")
NOT_APPLICABLE = {  # (test, family) -> why; the table in the module docstring says the same
    **{(t, "detr"): "a detector: no pooled classifier head or feature pyramid" for t in _NOT_A_CLASSIFIER},
    **{
        (t, "sagan"): "a GAN: generates images from noise, no classifier head or feature trunk"
        for t in _NOT_A_CLASSIFIER
    },
    **{
        (t, "detr"): "forward branches on its input's structure (tensor or list) and returns a dict with a list"
        for t in _NOT_SCRIPTABLE
    },
    **{
        (t, "sagan"): "spectral norm recomputes weights in a Python pre-hook; labels are checked by value"
        for t in _NOT_SCRIPTABLE
    },
    ("grad_checkpointing", "detr"): "no set_grad_checkpointing (timm's test accepts that)",
    ("grad_checkpointing", "sagan"): "no set_grad_checkpointing (timm's test accepts that)",
}

_SMALL_RESNET = dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1))
FAST = {  # one small member per family: the default `make test` run
    "vit_tiny_patch16_224": dict(depth=3, img_size=64),  # 3 blocks: timm's tests want >= 3 feature levels
    "vit_nano_patch4_32": dict(depth=3),
    "resnet10_narrow_cifar": {},  # timm's ResNet class, as resnet18/34/50 (those run in the full set)
    "sasa_resnet26_cifar": dict(kernel_size=5, num_heads=4, **_SMALL_RESNET),
    "nonlocal_resnet18_cifar": dict(num_heads=2, **_SMALL_RESNET),
    "detr_tiny_prenorm": dict(enc_layers=1, dec_layers=2),
    "sagan_32": dict(g_ch=8, d_ch=8),
}


# The full set runs every registered classifier as registered; the detectors and GANs (a subset of the tests only)
# with narrow layers: sagan_64 at its default width takes minutes on 2 cores (its orthogonal init alone).
FULL_KWARGS = {"detr": dict(enc_layers=1, dec_layers=2), "sagan": dict(g_ch=8, d_ch=8)}


def family(name: str) -> str:
    for pattern, fam in FAMILIES.items():
        if fnmatch.fnmatchcase(name, pattern):
            return fam
    raise KeyError(f"{name}: no family in FAMILIES")


def _cases(test: str, families=None):
    """``(name, kwargs)`` params for ``test``: the FAST members, then (marked timm_full) every registered model."""
    out = []
    for full in (False, True):
        for name in va.list_models() if full else FAST:
            fam = family(name)
            if (test, fam) in NOT_APPLICABLE or (families is not None and fam not in families):
                continue
            marks = [pytest.mark.timm_full] if full else []
            kwargs = FULL_KWARGS.get(fam, {}) if full else FAST[name]
            out.append(pytest.param(name, kwargs, marks=marks, id=f"{'full' if full else 'fast'}-{name}"))
    return out


def _create(name: str, kwargs: dict, **extra):
    torch.manual_seed(0)
    return va.create_model(name, **{**kwargs, **extra})


def _get_input_size(model, target=None):
    """timm's ``_get_input_size``: the model's cfg input size, its sides capped at ``target`` unless fixed."""
    cfg = getattr(model, "default_cfg", None) or model.pretrained_cfg
    input_size = tuple(cfg["input_size"])
    if cfg.get("fixed_input_size", None):
        return input_size
    min_input_size = cfg.get("min_input_size", None)
    if target and max(input_size) > target:
        input_size = tuple(min_input_size) if min_input_size else tuple(min(x, target) for x in input_size)
    return input_size


def _inputs(model, name: str, batch_size: int, target: int, limit: int):
    """The arguments of ``model``'s forward: images of timm's size rule, or a GAN's noise."""
    if family(name) == "sagan":  # noise, and class labels for a class-conditional GAN
        z = torch.randn(batch_size, model.z_dim)
        return (z, torch.randint(model.num_classes, (batch_size,))) if model.num_classes else (z,)
    input_size = _get_input_size(model, target)
    if max(input_size) > limit:
        pytest.fail(f"{name}: input {input_size} over the {limit}-px cap (timm skips these; none of ours should be)")
    return (torch.randn((batch_size, *input_size)),)


def _flat(outputs) -> torch.Tensor:
    """A model's output as one tensor: a classifier's logits, or a detector's dict (with its list of aux outputs)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return torch.cat([_flat(v).flatten() for _, v in sorted(outputs.items())])
    return torch.cat([_flat(v).flatten() for v in outputs])


def _loss(model, name: str, outputs, inputs) -> torch.Tensor:
    if family(name) == "sagan":  # G and D both in the graph: D judges G's images (of the same labels)
        return model.discriminator(outputs, *inputs[1:]).mean()
    return _flat(outputs).mean()


# --- forward / backward (timm: test_model_forward, test_model_backward) ------------------------------------------------
@pytest.mark.parametrize("name,kwargs", _cases("forward"))
def test_model_forward(name, kwargs):
    model = _create(name, kwargs).eval()
    inputs = _inputs(model, name, 1, TARGET_FWD_SIZE, MAX_FWD_SIZE)
    with torch.no_grad():
        outputs = _flat(model(*inputs))
    assert outputs.shape[0] >= 1 and not torch.isnan(outputs).any(), "output included NaNs"
    if family(name) in CLASSIFIERS:
        assert outputs.shape == (1, model.num_classes)
    try:  # timm: grad checkpointing, where supported, must not change the output
        model.set_grad_checkpointing()
    except AttributeError:
        assert ("grad_checkpointing", family(name)) in NOT_APPLICABLE, f"{name} has no set_grad_checkpointing"
    else:
        with torch.no_grad():
            torch.testing.assert_close(_flat(model(*inputs)), outputs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", _cases("backward"))
def test_model_backward(name, kwargs):
    num_classes = None if family(name) == "sagan" else 42
    model = _create(name, kwargs, **({} if num_classes is None else dict(num_classes=num_classes))).train()
    inputs = _inputs(model, name, 2, TARGET_BWD_SIZE, MAX_BWD_SIZE)
    outputs = model(*inputs)
    _loss(model, name, outputs, inputs).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert not torch.isnan(_flat(outputs)).any(), "output included NaNs"
    if family(name) in CLASSIFIERS:
        assert outputs.shape == (2, 42)
    if family(name) == "detr":
        assert outputs["pred_logits"].shape[-1] == 42 + 1


# --- head and pooling (the model-object part of timm's test_model_default_cfgs / _non_std) ------------------------------
@pytest.mark.parametrize("name,kwargs", _cases("head"))
def test_model_head_and_pooling(name, kwargs):
    model = _create(name, kwargs).eval()
    assert model.num_classes > 0 and model.num_features > 0 and model.head_hidden_size > 0
    (x,) = _inputs(model, name, 1, TARGET_FWD_SIZE, MAX_FWD_SIZE)
    vit = family(name).startswith("vit")
    with torch.no_grad():
        features = model.forward_features(x)  # always unpooled: (B, C, h, w) maps, or a ViT's (B, N, D) tokens
        pre = model.forward_head(features, pre_logits=True)
        assert features.shape[-1 if vit else 1] == model.num_features
        assert pre.shape == (1, model.head_hidden_size)
        logits = model(x)
        torch.testing.assert_close(model.forward_head(features), logits)

        model.reset_classifier(0)  # timm: no classifier, forward returns the pooled features (= pre_logits)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre)

        model.reset_classifier(0, "")  # and without pooling: the unpooled features (a ViT's through fc_norm, as timm)
        torch.testing.assert_close(model(x), model.fc_norm(features) if vit else features)

        model.reset_classifier(7, "avg")  # timm's spelling of "a new head over averaged features"
        assert model.num_classes == 7 and model(x).shape == (1, 7)
        if vit:  # average of the patch tokens (prefix tokens excluded), through fc_norm when the model has one
            model.reset_classifier(0, "avg")
            torch.testing.assert_close(model(x), model.fc_norm(features[:, model.num_prefix_tokens :].mean(1)))
    if vit:
        with pytest.raises(ValueError, match="global_pool must be one of"):
            model.reset_classifier(3, "mean")


# --- features (timm: test_model_forward_features, test_model_forward_intermediates(_features)) -------------------------
def _check_feature_maps(outputs, channels, reductions, input_size, batch_size=1):
    assert len(outputs) == len(channels)
    fmt = "NCHW"
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[get_channel_dim(fmt)] == c
        assert o.shape[get_spatial_dim(fmt)[0]] <= math.ceil(input_size[-2] / r) + 1
        assert o.shape[get_spatial_dim(fmt)[1]] <= math.ceil(input_size[-1] / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("name,kwargs", _cases("forward_features"))
def test_model_forward_features(name, kwargs):
    model = _create(name, kwargs, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    (x,) = _inputs(
        model if hasattr(model, "pretrained_cfg") else _create(name, kwargs), name, 1, TARGET_FFEAT_SIZE, MAX_FFEAT_SIZE
    )
    with torch.no_grad():
        _check_feature_maps(model(x), channels, reductions, x.shape)


@pytest.mark.parametrize("name,kwargs", _cases("forward_intermediates_features"))
def test_model_forward_intermediates_features(name, kwargs):
    """timm's ``feature_cls='getter'``: its ``FeatureGetterNet`` over our ``forward_intermediates``."""
    model = _create(name, kwargs).eval()
    (x,) = _inputs(model, name, 1, TARGET_FFEAT_SIZE, MAX_FFEAT_SIZE)
    net = FeatureGetterNet(model, out_indices=len(model.feature_info)).eval()
    with torch.no_grad():
        _check_feature_maps(net(x), net.feature_info.channels(), net.feature_info.reduction(), x.shape)


@pytest.mark.parametrize("name,kwargs", _cases("forward_intermediates"))
def test_model_forward_intermediates(name, kwargs):
    model = _create(name, kwargs).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= 3
    (x,) = _inputs(model, name, 1, TARGET_FFEAT_SIZE, MAX_FFEAT_SIZE)
    with torch.no_grad():
        output, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        _check_feature_maps(intermediates, info.channels(), info.reduction(), x.shape)
        torch.testing.assert_close(output, model.forward_features(x))
        model.set_grad_checkpointing()
        output3, _ = model.forward_intermediates(x, output_fmt="NCHW")
    torch.testing.assert_close(output3, output, rtol=1e-4, atol=1e-5)


# --- TorchScript and torch.fx (timm: test_model_forward_torchscript, _fx, _backward_fx, _fx_torchscript, ...) -----------
@pytest.mark.parametrize("name,kwargs", _cases("torchscript"))
def test_model_forward_torchscript(name, kwargs):
    with timm.set_scriptable(True):
        model = _create(name, kwargs).eval()
    (x,) = _inputs(model, name, 1, TARGET_JIT_SIZE, MAX_JIT_SIZE)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        outputs = scripted(x)
        expected = model(x)
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any(), "output included NaNs"
    torch.testing.assert_close(outputs, expected)  # beyond timm: the scripted model computes the same
    # the input checks script too: a wrong channel count is still refused, naming the model
    with pytest.raises(torch.jit.Error, match=r"expects \d+ input channels"):
        scripted(torch.randn(1, x.shape[1] + 1, *x.shape[2:]))


def _create_fx_model(model, train: bool = False):
    """timm's helper: torchvision's feature extractor with timm's no-trace modules and functions, returning the
    node(s) that lead into the output (several in train mode when the model has several outputs)."""
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(
        model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs
    )


@pytest.mark.parametrize("name,kwargs", _cases("fx"))
def test_model_forward_fx(name, kwargs):
    model = _create(name, kwargs).eval()
    (x,) = _inputs(model, name, 1, TARGET_FWD_FX_SIZE, MAX_FWD_FX_SIZE)
    with torch.inference_mode():
        outputs = model(x)
        fx_outputs = torch.cat(tuple(_create_fx_model(model)(x).values()))
    assert torch.all(fx_outputs == outputs)  # timm: bit-identical
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name,kwargs", _cases("fx_backward"))
def test_model_backward_fx(name, kwargs):
    model = _create(name, kwargs, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    (x,) = _inputs(model, name, 2, TARGET_BWD_FX_SIZE, MAX_BWD_FX_SIZE)
    fx_model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(x).values()))
    outputs.mean().backward()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params, "some parameters are missing gradients"
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name,kwargs", _cases("fx_torchscript"))
def test_model_forward_fx_torchscript(name, kwargs):
    with timm.set_scriptable(True):
        model = _create(name, kwargs).eval()
    (x,) = _inputs(model, name, 1, TARGET_JIT_SIZE, MAX_JIT_SIZE)
    scripted = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        outputs = torch.cat(tuple(scripted(x).values()))
        expected = model(x)
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()
    torch.testing.assert_close(outputs, expected)


@pytest.mark.parametrize("name,kwargs", _cases("features_fx_torchscript"))
def test_model_forward_torchscript_with_features_fx(name, kwargs):
    """timm's ``feature_cls='fx'``: its ``FeatureGraphNet`` (fx-traced at the ``feature_info`` modules), scripted."""
    model = _create(name, kwargs).eval()
    (x,) = _inputs(model, name, 1, TARGET_JIT_SIZE, MAX_JIT_SIZE)
    n = len(model.feature_info)
    net = FeatureGraphNet(model, out_indices=tuple(range(n - 3, n))).eval()
    scripted = torch.jit.script(net)
    with torch.inference_mode():
        outputs = scripted(x)
        expected = net(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    channel_dim = -1 if family(name).startswith("vit") else 1  # a ViT block's output: tokens (B, N, D)
    for out, ref, c in zip(outputs, expected, net.feature_info.channels()):
        assert out.shape[0] == 1 and out.shape[channel_dim] == c and not torch.isnan(out).any()
        torch.testing.assert_close(out, ref)


# --- what the issue adds: checkpointing gradients, layer-decay groups ------------------------------------------------
@pytest.mark.parametrize("name,kwargs", _cases("grad_checkpointing", CLASSIFIERS))
def test_grad_checkpointing_same_outputs_and_gradients(name, kwargs):
    model = _create(name, kwargs, drop_path_rate=0.1).train()  # stochastic depth on: the RNG must replay too
    (x,) = _inputs(model, name, 2, TARGET_BWD_SIZE, MAX_BWD_SIZE)

    def run():
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    state = {k: v.clone() for k, v in model.state_dict().items()}
    out, grads = run()
    model.load_state_dict(state)  # batch-norm running statistics moved: start again from the same ones
    model.set_grad_checkpointing(True)
    out_ck, grads_ck = run()
    torch.testing.assert_close(out_ck, out, rtol=1e-4, atol=1e-5)
    for n, g in grads.items():
        torch.testing.assert_close(grads_ck[n], g, rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name,kwargs", _cases("group_matcher", CLASSIFIERS))
def test_group_matcher_layer_decay_groups_blocks_in_depth_order(name, kwargs):
    """timm's ``param_groups_layer_decay``: embeddings / stem first, each block (ViT) or residual block (ResNet) its own
    layer in forward order, the classifier last with scale 1; every parameter in exactly one group."""
    model = _create(name, kwargs)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    layer_of = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in layer_of, "a parameter is in two groups"
            layer_of[id(p)] = g["lr_scale"]
    params = dict(model.named_parameters())
    assert len(layer_of) == len(params)
    scale = {n: layer_of[id(p)] for n, p in params.items()}
    head = "head" if family(name).startswith("vit") else "fc"
    assert scale[f"{head}.weight"] == 1.0
    if family(name).startswith("vit"):
        stem, blocks = (
            ["patch_embed.proj.weight", "pos_embed"],
            [f"blocks.{i}.attn.in_proj_weight" for i in range(len(model.blocks))],
        )
    else:
        stem = ["conv1.weight"]
        blocks = [
            f"layer{s}.{i}.conv1.weight"
            for s in range(1, 5)
            for i in range(len(getattr(model, f"layer{s}")))
            if f"layer{s}.{i}.conv1.weight" in params
        ]
    for s in stem:
        assert scale[s] < scale[blocks[0]]
    assert all(a < b for a, b in zip([scale[b] for b in blocks], [scale[b] for b in blocks[1:]])), (
        "blocks are not in increasing layer order"
    )
    if family(name) == "nonlocal":  # an attention block appended to a stage sits after that stage's blocks
        for s in (2, 3):
            last = len(getattr(model, f"layer{s}")) - 2
            assert (
                scale[f"layer{s}.{last}.conv1.weight"]
                < scale[f"layer{s}.attn.query.weight"]
                < scale[f"layer{s + 1}.0.conv1.weight"]
            )
    if family(name).startswith("vit"):
        assert (
            scale["norm.weight" if "norm.weight" in params else f"blocks.{len(model.blocks) - 1}.mlp.fc2.weight"] < 1.0
        )


def test_every_model_has_a_family():
    assert {family(n) for n in va.list_models()} == set(FAMILIES.values())
    assert {family(n) for n in FAST} == set(FAMILIES.values())
