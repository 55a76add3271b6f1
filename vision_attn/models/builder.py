"""``create_model`` in timm's shape: a short pipeline of separate steps.

1. name: :mod:`.registry` resolves ``"<arch>[.<tag>]"`` (``hf-hub:`` / ``local-dir:`` go to :func:`from_pretrained`);
2. config: the tag's ``pretrained_cfg`` (:mod:`.pretrained_cfgs`), with the overlay;
3. options: :func:`validate_model_args` checks the options against the factory's typed signature;
4. weights read: :mod:`.download` + :mod:`.checkpoint` (nothing executed); they decide the class count if not given;
5. construction: the factory; the model gets ``pretrained_cfg`` (timm's fields: ``pool_size``, ``first_conv``,
   ``classifier``, ...) and ``model_args``;
6. weights fitted: :mod:`.loader` (foreign keys, ``in_chans`` first-conv adaptation, headless / other-size heads);
7. features: :mod:`.features` wraps it (``features_only``), carrying the cfg.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, cast

import timm
from torch import nn

from .checkpoint import Checkpoint, read_checkpoint
from .download import CONFIG_NAME, WEIGHTS_NAMES, fetch_pretrained, hub_download, split_repo_id
from .errors import CheckpointError, ModelOptionError
from .features import feature_extractor
from .hub import LIBRARY_NAME, SOURCE_KEYS
from .hub_config import read_config
from .loader import classifier_names, load_pretrained, num_classes_in
from .options import factory_options, matches, type_name
from .pretrained_cfgs import IMAGENET_SUBSETS, PRETRAINED_CFGS, default_pretrained_cfg, tags_of
from .registry import has_weights, model_entrypoint, split_model_name

__all__ = ["create_model", "from_pretrained", "validate_model_args", "resolve_pretrained_cfg"]

_SOURCES = ("hf-hub:", "local-dir:")
_TUPLE_KEYS = ("input_size", "test_input_size", "min_input_size", "mean", "std", "pool_size", "test_pool_size")
PathLike = Union[str, Path]


def validate_model_args(arch: str, kwargs: Dict[str, Any]) -> None:
    """Check ``kwargs`` against the typed signature of ``arch``'s factory (its ``**kwargs``: the options of the class
    it returns); raises ``TypeError``, one line naming the model, the option and the expected type:
    ``model 'vit_tiny_patch16_224': option embed_dim expects int, got str 'wide'``."""
    if arch.startswith(_SOURCES):  # a Hub repo or a folder: its config.json is checked by from_pretrained
        return
    arch = split_model_name(arch)[0]
    options, open_ = factory_options(model_entrypoint(arch))
    for key, value in kwargs.items():
        if key not in options:
            if open_:
                continue
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ModelOptionError(
                f"model {arch!r} takes no option {key!r}{hint}; its options: {', '.join(sorted(options))}"
            )
        expected = options[key].annotation
        if not matches(value, expected):
            raise ModelOptionError(
                f"model {arch!r}: option {key} expects {type_name(expected)}, got {type(value).__name__} {value!r}"[
                    :300
                ]
            )


def resolve_pretrained_cfg(
    arch: str, tag: Optional[str], overlay: Optional[Dict[str, Any]] = None
) -> Optional[Dict[str, Any]]:
    """The published cfg of ``arch.tag`` (the default tag for None; None without published weights), overlaid."""
    tags = tags_of(arch)
    cfg = None
    if tags:
        cfg = copy.deepcopy(PRETRAINED_CFGS[arch][tag or tags[0]])
        cfg.update(architecture=arch, tag=tag or tags[0])
    return {**(cfg or {}), **overlay} if overlay else cfg


def _read_weights(
    arch: str, cfg: Optional[Dict[str, Any]], pretrained: Any, cache_dir: Optional[PathLike]
) -> Optional[Checkpoint]:
    if pretrained is True:
        if not has_weights(cfg):
            raise ValueError(
                f"model {arch!r} has no default pretrained weights; pass pretrained=PATH_OR_URL of a "
                "checkpoint (vision_attn.list_models(pretrained=True) lists the names with weights)"
            )
        return read_checkpoint(fetch_pretrained(cast(Dict[str, Any], cfg), cache_dir))
    return read_checkpoint(pretrained) if pretrained else None


def _construct(arch: str, num_classes: Optional[int], kwargs: Dict[str, Any]) -> nn.Module:
    args = dict(kwargs)
    if num_classes is not None:
        args["num_classes"] = num_classes
    validate_model_args(arch, args)
    try:
        model = model_entrypoint(arch)(**args)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise TypeError(f"model {arch!r} takes no argument {str(e).rsplit(' ', 1)[-1]} ({e})") from None
    setattr(model, "model_args", args)  # noqa: B010  (what save_pretrained writes to rebuild it; not a Module attribute to mypy)
    return model


def _build(arch: str, num_classes: Optional[int], ck: Optional[Checkpoint], kwargs: Dict[str, Any]) -> nn.Module:
    """The model; given ``ck`` (a file that declares no class count, none asked for), with its head's class count."""
    model = _construct(arch, num_classes, kwargs)
    if ck is not None:
        found = num_classes_in(model, ck.state_dict)  # a file without num_classes: its head's shape decides
        if found is not None and found != getattr(model, "num_classes", found):
            model = _construct(arch, found, kwargs)
    return model


def _input_size(model: nn.Module, arch: str, cfg: Optional[Dict[str, Any]]) -> Tuple[int, int, int]:
    """The model's own input size when it has one (a ViT's ``img_size``, a GAN's), else the cfg's or a default."""
    chans = int(getattr(model, "in_chans", 3) or 3)
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None) if pe is not None else getattr(model, "img_size", None)
    if isinstance(size, int):
        size = (size, size)
    if size is None:
        size = tuple(cfg["input_size"][1:]) if cfg else ((32, 32) if "cifar" in arch else (224, 224))
    return (chans, int(size[0]), int(size[1]))


def _cfg_of(model: nn.Module) -> Dict[str, Any]:
    """``model.pretrained_cfg``, typed (``nn.Module.__getattr__`` says Tensor | Module)."""
    return cast(Dict[str, Any], model.pretrained_cfg)


def _first_conv(model: nn.Module) -> Optional[str]:
    """The first 2-D convolution that reads the image (timm's ``first_conv``)."""
    chans = getattr(model, "in_chans", 3)
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == chans), None)


def _head_fields(model: nn.Module, size: Tuple[int, int, int]) -> Dict[str, Any]:
    """timm's model-shaped cfg fields: ``pool_size`` (the unpooled feature grid of a CNN; None for token models),
    ``first_conv``, ``classifier``."""
    names: List[Optional[str]] = [*classifier_names(model)] or [None]
    out: Dict[str, Any] = {"first_conv": _first_conv(model), "classifier": names[0]}
    out["pool_size"] = None
    if isinstance(model, timm.models.resnet.ResNet):
        r = int(cast(Dict[str, Any], model.feature_info[-1])["reduction"])
        out["pool_size"] = (math.ceil(size[1] / r), math.ceil(size[2] / r))
    return out


def _model_cfg(model: nn.Module, arch: str, cfg: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    n = getattr(model, "num_classes", None)
    size = _input_size(model, arch, cfg)
    out = dict(cfg) if cfg else default_pretrained_cfg(arch, n if n is not None else 0, size)
    fields = _head_fields(model, size)
    out.update({k: v for k, v in fields.items() if k == "pool_size" or out.get(k) is None})
    out["architecture"] = arch
    out["input_size"] = size
    if n is not None and n != out.get("num_classes"):  # another head than the weights': their class names do not apply
        out.pop("label_names", None)
        out["label_names_source"] = None
        out["num_classes"] = n
    return out


def _record_source(model: nn.Module, ck: Checkpoint, from_tag: bool) -> None:
    if not from_tag:  # the weights are that file's, not the tag's
        for k in ("hf_hub_id", "url"):
            _cfg_of(model).pop(k, None)
        _cfg_of(model).update(file=str(ck.path), source="file")
    if ck.class_names and len(ck.class_names) == getattr(model, "num_classes", None):
        _cfg_of(model)["label_names"] = list(ck.class_names)


def _from_source(
    name: str,
    pretrained: Any,
    num_classes: Optional[int],
    checkpoint_path: Any,
    cache_dir: Optional[PathLike],
    kwargs: Dict[str, Any],
) -> nn.Module:
    if pretrained not in (None, True, False) or checkpoint_path is not None:
        raise ValueError(
            f"{name}: an {name.split(':')[0]}: name takes pretrained=True/False; its weights are the repo's"
        )
    source = name[len("local-dir:") :] if name.startswith("local-dir:") else name
    return from_pretrained(source, pretrained=bool(pretrained), num_classes=num_classes, cache_dir=cache_dir, **kwargs)


def create_model(
    name: str,
    pretrained: Optional[Union[PathLike, bool, Checkpoint]] = None,
    num_classes: Optional[int] = None,
    *,
    checkpoint_path: Optional[PathLike] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[PathLike] = None,
    features_only: bool = False,
    out_indices=None,
    feature_cls: Optional[str] = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, optionally loading weights (timm's ``create_model``).

    Args:
        name: ``"<arch>"``, ``"<arch>.<tag>"`` (:func:`list_models` with ``pretrained=True``),
            ``"hf-hub:<org>/<repo>[@revision]"`` or ``"local-dir:<path>"`` (our ``save_pretrained`` folder or timm's).
        pretrained: ``True``: the tag's published weights (the default tag for a bare ``<arch>``), through the
            Hugging Face cache (``HF_HUB_OFFLINE`` respected) or, for DETR, the official URL; or a path / URL of a
            checkpoint: ours (state dict, Lightning ``.ckpt``: its EMA weights when present), timm / torchvision
            (``.pth``, ``.bin``, ``.safetensors``), official or Hugging Face DETR.
        num_classes: classifier outputs (0: no head, the weights' classifier is dropped, as timm). Default: the
            checkpoint's, else the tag's, else the factory's. Another explicit value re-initialises the head (warned).
        checkpoint_path: a checkpoint to start from, as timm's argument (like a path in ``pretrained``; with
            ``pretrained=True`` it is loaded after the published weights).
        pretrained_cfg_overlay: entries that replace the tag's ``pretrained_cfg`` (e.g. ``{"file": PATH}``).
        cache_dir: another Hugging Face / torch.hub cache folder for the downloads.
        features_only: return timm's feature extractor: ``forward`` gives a list of ``(B, C_i, H_i, W_i)`` maps.
        out_indices: with ``features_only``: which maps (ViT blocks, or ResNet ``[stem, layer1..4]``; timm's meaning).
        feature_cls: with ``features_only``: ``"getter"`` (timm's ``FeatureGetterNet`` over ``forward_intermediates``)
            or ``"list"``; default timm's choice per family.
        **kwargs: architecture options of the factory (``img_size``, ``in_chans``, ``drop_path_rate``, ...), checked
            by :func:`validate_model_args`. ``in_chans`` other than the weights' adapts their first conv (timm's rule).
    """
    if name.startswith(_SOURCES):
        return _from_source(name, pretrained, num_classes, checkpoint_path, cache_dir, kwargs)
    if checkpoint_path is not None and not pretrained:  # timm's spelling of a file to start from
        pretrained, checkpoint_path = checkpoint_path, None
    arch, tag = split_model_name(name)
    model_entrypoint(name)  # an unknown name or tag: one line, before anything is read
    if (out_indices is not None or feature_cls is not None) and not features_only:
        raise ValueError(
            f"create_model({name!r}): out_indices={out_indices!r} / feature_cls={feature_cls!r} needs features_only=True"
        )
    validate_model_args(arch, kwargs)
    cfg = resolve_pretrained_cfg(arch, tag, pretrained_cfg_overlay)
    ck = _read_weights(arch, cfg, pretrained, cache_dir)
    explicit = num_classes is not None
    if not explicit and ck is not None and ck.num_classes is not None:
        num_classes = ck.num_classes
    elif not explicit and has_weights(cfg) and (tag is not None or pretrained is True):
        num_classes = cast(Dict[str, Any], cfg)["num_classes"]
    model = _build(
        arch, num_classes, ck if ck is not None and not explicit and ck.num_classes is None else None, kwargs
    )
    setattr(model, "pretrained_cfg", _model_cfg(model, arch, cfg))  # noqa: B010
    if ck is not None:
        load_pretrained(model, ck)
        _record_source(model, ck, from_tag=pretrained is True)
    if checkpoint_path is not None:
        load_pretrained(model, checkpoint_path)
    return feature_extractor(model, arch, out_indices, feature_cls=feature_cls) if features_only else model


def _locate(
    source: str, pretrained: bool, revision: Optional[str], cache_dir: Optional[PathLike], token: Optional[str]
) -> Tuple[Path, Optional[Path], Dict[str, Any]]:
    """``(config.json, weights file or None, the cfg's source entries)`` of a folder or a Hub repo id (a repo's
    weights are fetched later, by :func:`from_pretrained`, once its config has passed the checks)."""
    local = Path(source[len("hf-hub:") :] if source.startswith("hf-hub:") else source).expanduser()
    if local.is_dir():
        config_path = local / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{local}: has no {CONFIG_NAME} (expected a folder written by save_pretrained)")
        found = [local / n for n in WEIGHTS_NAMES if (local / n).is_file()]
        if pretrained and not found:
            raise CheckpointError(f"{local}: has none of {list(WEIGHTS_NAMES)}")
        weights = found[0] if found else None
        return config_path, weights, {"file": str(weights or local), "source": "local-dir"}
    repo_id, rev = split_repo_id(source)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise CheckpointError(f"{source}: neither a folder nor a Hugging Face repo id ('org/name')")
    rev = revision or rev
    config_path = hub_download(repo_id, [CONFIG_NAME], revision=rev, cache_dir=cache_dir, token=token)
    return config_path, None, {"hf_hub_id": repo_id + (f"@{rev}" if rev else ""), "source": "hf-hub"}


def _saved_cfg(model: nn.Module, config: Dict[str, Any], origin: Dict[str, Any]) -> Dict[str, Any]:
    """The rebuilt model's cfg: its own, the file's timm fields and ours, the file's class names, the new source."""
    saved_n = config.get("num_classes", (config.get("model_args") or {}).get("num_classes"))
    cfg = dict(_cfg_of(model))
    for part in (config.get("pretrained_cfg") or {}, (config.get(LIBRARY_NAME) or {}).get("pretrained_cfg") or {}):
        cfg.update({k: tuple(v) if k in _TUPLE_KEYS and isinstance(v, list) else v for k, v in part.items()})
    if config.get("label_names"):
        cfg["label_names"] = list(config["label_names"])
    for k in SOURCE_KEYS:
        cfg.pop(k, None)
    cfg.update(origin, architecture=config["architecture"], num_classes=getattr(model, "num_classes", saved_n))
    if config.get("library_name") != LIBRARY_NAME:  # timm's config: ImageNet names by head size, as timm infers them
        cfg["label_names_source"] = IMAGENET_SUBSETS.get(saved_n) if saved_n is not None else None
    if saved_n is not None and cfg["num_classes"] != saved_n:  # a new head: the saved class names no longer apply
        cfg.pop("label_names", None)
        cfg["label_names_source"] = None
    return cfg


def from_pretrained(
    source: PathLike,
    pretrained: bool = True,
    num_classes: Optional[int] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    token: Optional[str] = None,
    **kwargs,
) -> nn.Module:
    """Rebuild a model from a folder written by :func:`save_pretrained` or a Hub repo id (``org/repo[@revision]``,
    ``hf-hub:`` optional) holding ours or timm's ``config.json`` (checked first: :mod:`.hub_config`).

    Args:
        pretrained: load the weights (False: only the architecture).
        num_classes: another head size than the saved one (the head is then re-initialised, with a warning).
        **kwargs: architecture options that replace the saved ones.
    """
    config_path, weights, origin = _locate(str(source), pretrained, revision, cache_dir, token)
    config = read_config(config_path)
    if pretrained and origin["source"] == "hf-hub":
        repo_id, rev = split_repo_id(origin["hf_hub_id"])
        weights = hub_download(repo_id, WEIGHTS_NAMES, revision=rev, cache_dir=cache_dir, token=token)
    args = dict(config.get("model_args") or {})
    saved_n = config.get("num_classes", args.get("num_classes"))
    if saved_n is not None:
        args["num_classes"] = int(saved_n)
    if num_classes is not None:
        args["num_classes"] = num_classes
    args.update(kwargs)
    model = create_model(config["architecture"], **args)
    setattr(model, "pretrained_cfg", _saved_cfg(model, config, origin))  # noqa: B010
    if weights is not None:
        load_pretrained(model, read_checkpoint(weights))
    return model
