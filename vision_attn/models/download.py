"""Where weights come from: a local path, an http(s) URL (torch.hub's cache) or a Hugging Face Hub repo.

Hub files come through :func:`huggingface_hub.hf_hub_download`, so the standard cache (``HF_HOME``,
``HF_HUB_CACHE``), ``HF_HUB_OFFLINE``, revisions (``org/repo@rev``) and tokens (``hf auth login``, ``HF_TOKEN``) all
work as with timm and transformers; ``model.safetensors`` is tried before ``pytorch_model.bin``. Nothing here reads a
file's contents (:mod:`.checkpoint` does).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch

from .errors import CheckpointError, HubFileNotCachedError

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAMES",
    "split_repo_id",
    "hub_host_resolves",
    "hub_download",
    "resolve_checkpoint",
    "fetch_pretrained",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")  # safetensors first, as timm and transformers


def split_repo_id(repo: str) -> Tuple[str, Optional[str]]:
    """``"org/repo@revision"`` -> ``("org/repo", "revision")`` (timm's ``hf-hub:`` syntax)."""
    repo = repo[len("hf-hub:") :] if repo.startswith("hf-hub:") else repo
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def hub_host_resolves() -> bool:
    """Whether the Hub's host name resolves (DNS). Without a network it fails at once, where ``hf_hub_download``
    would retry each file for ~25 s before giving up."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return True
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def hub_download(
    repo_id: str,
    filenames: Sequence[str],
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    token: Optional[str] = None,
) -> Path:
    """The local path of the first of ``filenames`` that ``repo_id`` has, downloaded once into the Hub cache.

    Raises :class:`HubFileNotCachedError` (one line: the repo id and how to pre-download it) when offline or
    unreachable with none of them cached, and :class:`CheckpointError` for a missing repo, revision or file.
    """
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
            return Path(
                hf_hub_download(
                    repo_id, name, revision=revision, cache_dir=cache_dir, token=token, local_files_only=cache_only
                )
            )
        except LocalEntryNotFoundError:
            not_cached = True
            cache_only = True  # the Hub did not answer for this file: the next names from the cache alone
        except EntryNotFoundError:  # the repo exists but has no such file: try the next name
            continue
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"{repo_id}: no such model repository on the Hugging Face Hub (or it is private or "
                "gated: log in with `hf auth login` or set HF_TOKEN)"
            ) from None
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


def resolve_checkpoint(source: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """A local path for ``source``: the path itself, a URL downloaded once into the cache, or ``hf-hub:org/repo[@rev]``
    (its ``model.safetensors`` or ``pytorch_model.bin``, through the Hugging Face cache).

    The cache is ``$TORCH_HOME/hub/checkpoints`` (torch.hub's, shared with timm and torchvision) unless
    ``cache_dir`` is given.
    """
    s = str(source)
    if s.startswith("hf-hub:"):  # a Hub repo's weights, through the Hugging Face cache (HF_HUB_OFFLINE respected)
        repo_id, revision = split_repo_id(s)
        return hub_download(repo_id, WEIGHTS_NAMES, revision=revision, cache_dir=cache_dir)
    if urlparse(s).scheme in ("http", "https"):
        cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        # hub URLs often end in the same file name (".../resolve/main/model.safetensors"): key by the URL too
        target = cache / f"{hashlib.sha256(s.encode()).hexdigest()[:10]}-{os.path.basename(urlparse(s).path)}"
        if not target.exists():
            log.info("downloading %s to %s", s, target)
            try:
                torch.hub.download_url_to_file(s, str(target), progress=True)  # writes a temp file, then renames
            except OSError as err:  # URLError, timeouts, DNS failures: no network, or the file moved
                raise CheckpointError(
                    f"cannot download {s} ({getattr(err, 'reason', err)}); without network, fetch it on a machine "
                    f"that has one and pass the file's path, or copy it to {target}"
                ) from None
        return target
    path = Path(s).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a file path or an http(s) URL)")
    return path
