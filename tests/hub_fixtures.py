"""An offline Hugging Face Hub cache for tests: repos laid out as ``hf_hub_download`` leaves them, nothing downloaded.

``offline_hub(monkeypatch, hf_home)`` points ``huggingface_hub`` at ``hf_home`` with ``HF_HUB_OFFLINE=1`` (the env
for subprocesses, and the constants it read at import for this process); ``add_repo`` writes
``hub/models--<org>--<name>/snapshots/<sha>/<file>`` and ``refs/main``; ``add_timm_repo`` adds a timm repo
(``timm/<arch>.<tag>``) holding small random weights of the real architecture and timm's ``config.json``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, Union

import timm
import torch
from safetensors.torch import save_file

SHA = "0123456789abcdef0123456789abcdef01234567"  # a commit hash: refs/main points at this snapshot


def offline_hub(monkeypatch, hf_home: Path) -> Path:
    """Use ``hf_home`` as the Hugging Face home, offline; returns its hub cache folder."""
    from huggingface_hub import constants

    cache = Path(hf_home) / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    # huggingface_hub reads these at import: the running process needs its constants patched too
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def add_repo(cache: Path, repo_id: str, files: Dict[str, Union[bytes, str, Path]]) -> Path:
    """Lay out ``repo_id``'s ``files`` (name -> bytes, text or a file to copy) in the hub cache; returns the snapshot."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(SHA)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, snapshot / name)
        elif isinstance(content, bytes):
            (snapshot / name).write_bytes(content)
        else:
            (snapshot / name).write_text(content)
    return snapshot


def random_timm_state_dict(arch: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random weights for timm's ``arch`` at its real shapes (fan-in scaled, norms near 1), without initialising it."""
    with torch.device("meta"):
        shapes = timm.create_model(arch, pretrained=False).state_dict()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in shapes.items():
        if not v.is_floating_point():
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif v.dim() >= 2:
            out[k] = torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel())
        elif k.endswith(("running_var", "weight")) and ("norm" in k or "bn" in k or "downsample.1" in k):
            out[k] = 1 + 0.1 * torch.rand(v.shape, generator=g)
        else:
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


def add_timm_repo(cache: Path, name: str, seed: int = 0) -> Path:
    """``timm/<name>`` (``name`` = ``"<arch>.<tag>"``) with random ``model.safetensors`` and timm's ``config.json``."""
    arch = name.split(".")[0]
    snapshot = add_repo(cache, f"timm/{name}", {})
    save_file(random_timm_state_dict(arch, seed), str(snapshot / "model.safetensors"))
    cfg = timm.models.get_pretrained_cfg(name).to_dict(remove_source=True)
    config = {"architecture": arch, "num_classes": cfg["num_classes"], "pretrained_cfg": cfg}
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot
