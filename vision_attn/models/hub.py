"""Our shareable folders: ``save_pretrained`` / ``push_to_hub``, and the :class:`PretrainedMixin` every model has.

A saved folder holds ``model.safetensors`` (the weights; a ViT's in timm's key layout when timm's ViT can express it)
and ``config.json`` in timm's layout: ``architecture``, ``num_classes``, ``label_names``, ``model_args`` and a
``pretrained_cfg`` holding only the fields of timm's ``PretrainedCfg``, so ``timm.create_model("local-dir:PATH")``
reads it; our own cfg entries (``label_names_source``, a detector's resize) go under the ``"vision_attn"`` key, which
timm ignores, plus ``"library_name": "vision_attn"``. :func:`vision_attn.from_pretrained` rebuilds the model from it
(:mod:`vision_attn.models.builder`). The Hub download helpers live in :mod:`vision_attn.models.download`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union, cast

from timm.models import PretrainedCfg
from torch import Tensor, nn

from .download import CONFIG_NAME, WEIGHTS_NAMES, fetch_pretrained, hub_download, split_repo_id
from .errors import HubFileNotCachedError
from .options import factory_options
from .protocols import OfflineRebuildable, conforms
from .registry import is_model, model_entrypoint

__all__ = [
    "PretrainedMixin",
    "HubFileNotCachedError",
    "save_pretrained",
    "push_to_hub",
    "model_config",
    "hub_download",
    "fetch_pretrained",
    "split_repo_id",
    "CONFIG_NAME",
    "WEIGHTS_NAMES",
    "LIBRARY_NAME",
    "SOURCE_KEYS",
    "TIMM_CFG_KEYS",
]

LIBRARY_NAME = "vision_attn"
SOURCE_KEYS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict")
TIMM_CFG_KEYS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg))  # what timm's PretrainedCfg(**cfg) takes


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(
        f"save_pretrained: {where} = {value!r} cannot be written to config.json (expected numbers, "
        "strings, lists or dicts)"
    )


def _pool_type(model: nn.Module) -> Optional[str]:
    """The model's pooling as timm names it: ViT's ``global_pool`` string, or a ResNet's ``SelectAdaptivePool2d``'s
    ``pool_type`` (``""`` = none); None for a model without one."""
    pool = getattr(model, "global_pool", None)  # a plain read with a default: not every model pools
    pool = getattr(pool, "pool_type", pool)  # timm's SelectAdaptivePool2d keeps the name here
    return pool if isinstance(pool, str) else None


def _takes(arch: str, option: str) -> bool:
    options, open_ = factory_options(model_entrypoint(arch))
    return open_ or option in options


def model_config(model: nn.Module) -> Dict[str, Any]:
    """The ``config.json`` of ``model`` (made by :func:`~vision_attn.models.create_model`)."""
    # Plain reads with a default: create_model sets both, a model built by hand has neither.
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    arch, args = cfg.get("architecture"), getattr(model, "model_args", None)
    if not arch or args is None or not is_model(arch):
        raise ValueError(
            f"save_pretrained: this {type(model).__name__} was not made by vision_attn.create_model, so its "
            "registry name and arguments are unknown; build it with create_model(name, ...)"
        )
    args = dict(args)
    num_classes = getattr(model, "num_classes", None)  # a plain read with a default: not every model has a head
    if num_classes is not None:
        args["num_classes"] = int(num_classes)  # reset_classifier may have changed it since creation
    global_pool = _pool_type(model)
    if global_pool is not None and _takes(arch, "global_pool"):
        args["global_pool"] = global_pool  # and its pooling (timm's reset_classifier(n, global_pool))
    args = cast(OfflineRebuildable, model).offline_model_args(args) if conforms(model, OfflineRebuildable) else args
    for k in SOURCE_KEYS + ("architecture",):
        cfg.pop(k, None)
    labels = cfg.pop("label_names", None)
    ours = {k: cfg.pop(k) for k in list(cfg) if k not in TIMM_CFG_KEYS}  # timm's PretrainedCfg refuses other keys
    config = {"architecture": arch, "num_classes": args.get("num_classes", cfg.get("num_classes"))}
    # A plain read with a default: timm's optional metadata, copied when the model has it.
    num_features = getattr(model, "num_features", None)
    if num_features is not None:
        config["num_features"] = int(num_features)
    if global_pool is not None:
        config["global_pool"] = global_pool
    if labels:
        config["label_names"] = list(labels)
    config.update(model_args=args, pretrained_cfg=cfg, library_name=LIBRARY_NAME)
    if ours:
        config[LIBRARY_NAME] = {"pretrained_cfg": ours}
    return _jsonable(config, "config")


def save_pretrained(model: nn.Module, save_directory: Union[str, Path]) -> Path:
    """Write ``model.safetensors`` (the state dict) and ``config.json`` into ``save_directory``; returns it."""
    from safetensors.torch import save_file

    config = model_config(model)
    out = Path(save_directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, Tensor] = {}
    storages = set()
    state = model.export_state_dict() if isinstance(model, PretrainedMixin) else model.state_dict()
    for k, v in state.items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        tensors[k] = v.clone() if ptr in storages else v  # safetensors refuses tensors that share memory
        storages.add(ptr)
    save_file(tensors, str(out / WEIGHTS_NAMES[0]), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


def _model_card(config: Dict[str, Any], repo_id: str) -> str:
    lic = config["pretrained_cfg"].get("license")
    head = f"---\nlibrary_name: {LIBRARY_NAME}\ntags:\n- vision_attn\n- image-classification\n" + (
        f"license: {lic}\n" if lic else ""
    )
    return (
        f"{head}---\n\n# {repo_id}\n\nA `{config['architecture']}` ({config['num_classes']} classes) saved by "
        f'vision_attn.\n\n```python\nimport vision_attn as va\nmodel = va.create_model("hf-hub:{repo_id}", '
        "pretrained=True).eval()\n```\n"
    )


def _hub_api(token: Optional[str]):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    revision: Optional[str] = None,
    commit_message: str = "Upload vision_attn model",
) -> str:
    """Save ``model`` (as :func:`save_pretrained`, plus a model card) and upload the folder to ``repo_id`` on the
    Hugging Face Hub (created if absent); returns the commit URL. Needs a token with write access."""
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
        (Path(tmp) / "README.md").write_text(_model_card(config, repo_id))
        api = _hub_api(token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))  # older huggingface_hub returns the URL itself, newer a CommitInfo


class PretrainedMixin:
    """``save_pretrained`` and ``push_to_hub`` for the models of this package (``from_pretrained`` is
    :func:`vision_attn.from_pretrained`). ``create_model`` sets ``pretrained_cfg`` and ``model_args``."""

    __jit_unused_properties__ = ["default_cfg"]  # TorchScript compiles properties; a cfg dict has no TorchScript type

    @property
    def default_cfg(self) -> Dict[str, Any]:
        """timm's older name of ``pretrained_cfg``: the same dict (timm's ``validate.py`` and
        ``apply_test_time_pool`` read this one)."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: Dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def export_state_dict(self) -> Dict[str, Tensor]:
        """The weights :func:`save_pretrained` writes (the state dict; a model may write a layout others read)."""
        return cast(nn.Module, self).state_dict()  # the mixin is only mixed into nn.Module subclasses

    def save_pretrained(self, save_directory: Union[str, Path]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``save_directory``
        (:func:`vision_attn.from_pretrained` rebuilds the model from it)."""
        return save_pretrained(cast(nn.Module, self), save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        revision: Optional[str] = None,
        commit_message: str = "Upload vision_attn model",
    ) -> str:
        """Upload the saved folder to the Hugging Face Hub (``repo_id`` = ``"org/name"``); returns the commit URL."""
        return push_to_hub(
            cast(nn.Module, self),
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
        )
