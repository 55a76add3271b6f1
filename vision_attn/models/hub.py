"""Weights through ``huggingface_hub`` and our own shareable folders: ``save_pretrained`` / ``from_pretrained`` /
``push_to_hub``.

Hub files come through :func:`huggingface_hub.hf_hub_download`, so the standard cache (``HF_HOME``,
``HF_HUB_CACHE``), ``HF_HUB_OFFLINE``, revisions (``org/repo@rev``) and tokens (``hf auth login``, ``HF_TOKEN``) all
work as with timm and transformers; ``model.safetensors`` is tried before ``pytorch_model.bin``.

A saved folder holds ``model.safetensors`` (the model's own state dict) and ``config.json`` in timm's layout
(``architecture``, ``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg``) plus
``"library_name": "vision_attn"``; :func:`from_pretrained` rebuilds the model through the registry from it, and also
reads timm's own ``config.json`` (its ``architecture`` must be one of ours).
"""
from __future__ import annotations

import json
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union, cast

from torch import Tensor, nn

from .checkpoint import CheckpointError, load_pretrained, read_checkpoint, resolve_checkpoint
from .pretrained_cfgs import IMAGENET_SUBSETS
from .protocols import OfflineRebuildable, conforms
from .registry import UnknownModelError, create_model, is_model

__all__ = [
    "PretrainedMixin",
    "HubFileNotCachedError",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "hub_download",
    "fetch_pretrained",
    "CONFIG_NAME",
    "WEIGHTS_NAMES",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")  # safetensors first, as timm and transformers
LIBRARY_NAME = "vision_attn"
_SOURCE_KEYS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict")
_TUPLE_KEYS = ("input_size", "test_input_size", "min_input_size", "mean", "std", "pool_size")


class HubFileNotCachedError(CheckpointError):
    """A Hub file is not in the local cache and cannot be downloaded (offline, or the Hub is unreachable)."""


def split_repo_id(repo: str) -> Tuple[str, Optional[str]]:
    """``"org/repo@revision"`` -> ``("org/repo", "revision")`` (timm's ``hf-hub:`` syntax)."""
    repo = repo[len("hf-hub:"):] if repo.startswith("hf-hub:") else repo
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def hub_host_resolves() -> bool:
    """Whether the Hub's host name resolves (DNS). Without a network it fails at once, where ``hf_hub_download``
    would retry each file for ~25 s before giving up."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return True
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def hub_download(repo_id: str, filenames: Sequence[str], revision: Optional[str] = None,
                 cache_dir: Optional[Union[str, Path]] = None, token: Optional[str] = None) -> Path:
    """The local path of the first of ``filenames`` that ``repo_id`` has, downloaded once into the Hub cache.

    Raises :class:`HubFileNotCachedError` (one line: the repo id and how to pre-download it) when offline or
    unreachable with none of them cached, and :class:`CheckpointError` for a missing repo, revision or file.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    not_cached = False
    cache_only = not constants.is_offline_mode() and not hub_host_resolves()  # no network: the cache alone, at once
    for name in filenames:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, token=token,
                                        local_files_only=cache_only))
        except LocalEntryNotFoundError:
            not_cached = True
            cache_only = True  # the Hub did not answer for this file: the next names from the cache alone
        except EntryNotFoundError:  # the repo exists but has no such file: try the next name
            continue
        except RepositoryNotFoundError:
            raise CheckpointError(f"{repo_id}: no such model repository on the Hugging Face Hub (or it is private or "
                                  "gated: log in with `hf auth login` or set HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise CheckpointError(f"{repo_id}: has no revision {revision!r}") from None
        except HfHubHTTPError as e:
            raise CheckpointError(f"{repo_id}: the Hub refused the download ({str(e).splitlines()[0]})") from None
    if not_cached:
        host = urlparse(constants.ENDPOINT).hostname
        offline = constants.is_offline_mode()
        why = "HF_HUB_OFFLINE=1" if offline else f"the Hub ({host}) could not be reached"
        unset = " (or set HF_HUB_OFFLINE=0 when online)" if offline else ""
        rev = f" --revision {revision}" if revision else ""
        raise HubFileNotCachedError(
            f"{repo_id}: {' / '.join(filenames)} not in the Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE}) "
            f"and {why}; pre-download it online with `hf download {repo_id}{rev}`{unset}"
        )
    raise CheckpointError(f"{repo_id}: the repository has none of {list(filenames)}")


def fetch_pretrained(cfg: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The local weights file of a ``pretrained_cfg``: its ``file``, its Hub repo (``hf_hub_id``), or its ``url``."""
    if cfg.get("file"):
        return resolve_checkpoint(cfg["file"])
    if cfg.get("hf_hub_id"):
        repo_id, revision = split_repo_id(cfg["hf_hub_id"])
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else WEIGHTS_NAMES
        return hub_download(repo_id, names, revision=revision, cache_dir=cache_dir)
    if cfg.get("url"):
        return resolve_checkpoint(cfg["url"], cache_dir=cache_dir)
    raise CheckpointError(f"pretrained_cfg of {cfg.get('architecture')!r} names no weights (hf_hub_id, url or file)")


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"save_pretrained: {where} = {value!r} cannot be written to config.json (expected numbers, "
                     "strings, lists or dicts)")


def _tuples(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """JSON's lists back to timm's tuples for the size and statistics fields."""
    return {k: tuple(v) if k in _TUPLE_KEYS and isinstance(v, list) else v for k, v in cfg.items()}


def model_config(model: nn.Module) -> Dict[str, Any]:
    """The ``config.json`` of ``model`` (made by :func:`~vision_attn.models.create_model`)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    arch, args = cfg.get("architecture"), getattr(model, "model_args", None)
    if not arch or args is None or not is_model(arch):
        raise ValueError(f"save_pretrained: this {type(model).__name__} was not made by vision_attn.create_model, so its "
                         "registry name and arguments are unknown; build it with create_model(name, ...)")
    args = dict(args)
    if getattr(model, "num_classes", None) is not None:
        args["num_classes"] = int(model.num_classes)  # reset_classifier may have changed it since creation
    args = cast(OfflineRebuildable, model).offline_model_args(args) if conforms(model, OfflineRebuildable) else args
    for k in _SOURCE_KEYS + ("architecture",):
        cfg.pop(k, None)
    labels = cfg.pop("label_names", None)
    config = {"architecture": arch, "num_classes": args.get("num_classes", cfg.get("num_classes"))}
    if getattr(model, "num_features", None) is not None:
        config["num_features"] = int(model.num_features)
    if isinstance(getattr(model, "global_pool", None), str):
        config["global_pool"] = model.global_pool
    if labels:
        config["label_names"] = list(labels)
    config.update(model_args=args, pretrained_cfg=cfg, library_name=LIBRARY_NAME)
    return _jsonable(config, "config")


def save_pretrained(model: nn.Module, save_directory: Union[str, Path]) -> Path:
    """Write ``model.safetensors`` (the state dict) and ``config.json`` into ``save_directory``; returns it."""
    from safetensors.torch import save_file

    config = model_config(model)
    out = Path(save_directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, Tensor] = {}
    storages = set()
    for k, v in model.state_dict().items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        tensors[k] = v.clone() if ptr in storages else v  # safetensors refuses tensors that share memory
        storages.add(ptr)
    save_file(tensors, str(out / WEIGHTS_NAMES[0]), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


def _read_config(path: Path) -> Dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict) or not config.get("architecture"):
        raise CheckpointError(f"{path}: expected a JSON object with an 'architecture' (a model name); found {str(config)[:80]}")
    return config


def from_pretrained(source: Union[str, Path], pretrained: bool = True, num_classes: Optional[int] = None,
                    revision: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None,
                    token: Optional[str] = None, **kwargs) -> nn.Module:
    """Rebuild a model from a folder written by :func:`save_pretrained` or a Hub repo id (``org/repo[@revision]``,
    ``hf-hub:`` optional) holding ours or timm's ``config.json``.

    Args:
        pretrained: load the weights (False: only the architecture).
        num_classes: another head size than the saved one (the head is then re-initialised, with a warning).
        **kwargs: architecture options that replace the saved ones.
    """
    s = str(source)
    local = Path(s[len("hf-hub:"):] if s.startswith("hf-hub:") else s).expanduser()
    origin: Dict[str, Any]
    if local.is_dir():
        config_path = local / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{local}: has no {CONFIG_NAME} (expected a folder written by save_pretrained)")
        found = [local / n for n in WEIGHTS_NAMES if (local / n).is_file()]
        if pretrained and not found:
            raise CheckpointError(f"{local}: has none of {list(WEIGHTS_NAMES)}")
        weights = found[0] if found else None
        origin = {"file": str(weights or local), "source": "local-dir"}
    else:
        repo_id, rev = split_repo_id(s)
        if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
            raise CheckpointError(f"{s}: neither a folder nor a Hugging Face repo id ('org/name')")
        rev = revision or rev
        config_path = hub_download(repo_id, [CONFIG_NAME], revision=rev, cache_dir=cache_dir, token=token)
        weights = hub_download(repo_id, WEIGHTS_NAMES, revision=rev, cache_dir=cache_dir, token=token) if pretrained else None
        origin = {"hf_hub_id": repo_id + (f"@{rev}" if rev else ""), "source": "hf-hub"}
    config = _read_config(config_path)
    arch = config["architecture"]
    if not is_model(arch):
        raise UnknownModelError(f"{s}: its config.json names architecture {arch!r}, which is not a vision_attn model "
                                "(see vision_attn.list_models())")
    args = dict(config.get("model_args") or {})
    saved_n = config.get("num_classes", args.get("num_classes"))
    if saved_n is not None:
        args["num_classes"] = int(saved_n)
    if num_classes is not None:
        args["num_classes"] = num_classes
    args.update(kwargs)
    model = create_model(arch, **args)
    cfg = dict(model.pretrained_cfg)
    cfg.update(_tuples(dict(config.get("pretrained_cfg") or {})))
    if config.get("label_names"):
        cfg["label_names"] = list(config["label_names"])
    for k in _SOURCE_KEYS:
        cfg.pop(k, None)
    cfg.update(origin, architecture=arch, num_classes=getattr(model, "num_classes", args.get("num_classes")))
    if config.get("library_name") != LIBRARY_NAME:  # timm's config: ImageNet names by head size, as timm infers them
        cfg["label_names_source"] = IMAGENET_SUBSETS.get(saved_n)
    if saved_n is not None and cfg["num_classes"] != saved_n:  # a new head: the saved class names no longer apply
        cfg.pop("label_names", None)
        cfg["label_names_source"] = None
    model.pretrained_cfg = cfg
    if weights is not None:
        load_pretrained(model, read_checkpoint(weights))
    return model


def _model_card(config: Dict[str, Any], repo_id: str) -> str:
    lic = config["pretrained_cfg"].get("license")
    head = f"---\nlibrary_name: {LIBRARY_NAME}\ntags:\n- vision_attn\n- image-classification\n" + (f"license: {lic}\n" if lic else "")
    return (f"{head}---\n\n# {repo_id}\n\nA `{config['architecture']}` ({config['num_classes']} classes) saved by "
            f"vision_attn.\n\n```python\nimport vision_attn as va\nmodel = va.create_model(\"hf-hub:{repo_id}\", "
            "pretrained=True).eval()\n```\n")


def _hub_api(token: Optional[str]):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def push_to_hub(model: nn.Module, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None,
                revision: Optional[str] = None, commit_message: str = "Upload vision_attn model") -> str:
    """Save ``model`` (as :func:`save_pretrained`, plus a model card) and upload the folder to ``repo_id`` on the
    Hugging Face Hub (created if absent); returns the commit URL. Needs a token with write access."""
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
        (Path(tmp) / "README.md").write_text(_model_card(config, repo_id))
        api = _hub_api(token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


class PretrainedMixin:
    """``save_pretrained`` and ``push_to_hub`` for the models of this package (``from_pretrained`` is
    :func:`vision_attn.from_pretrained`). ``create_model`` sets ``pretrained_cfg`` and ``model_args``."""

    def save_pretrained(self, save_directory: Union[str, Path]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``save_directory``
        (:func:`vision_attn.from_pretrained` rebuilds the model from it)."""
        return save_pretrained(self, save_directory)

    def push_to_hub(self, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None,
                    revision: Optional[str] = None, commit_message: str = "Upload vision_attn model") -> str:
        """Upload the saved folder to the Hugging Face Hub (``repo_id`` = ``"org/name"``); returns the commit URL."""
        return push_to_hub(self, repo_id, private=private, token=token, revision=revision, commit_message=commit_message)
