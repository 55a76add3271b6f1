"""One SA-GAN training step of a GAN config's model, exactly as ``GenerationTask`` takes it (its ``gan_step``:
discriminator step, generator step, EMA update), in the default memory layout against channels-last
(``GenerationTask(channels_last=True)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import Tensor

from .harness import Implementation, autocast

REPO = Path(__file__).resolve().parents[3]  # the checkout holding configs/ (the package is installed editable)


def gan_task_args(config: str) -> Dict[str, Any]:
    """``model.init_args`` of a GAN config (a path, or one relative to the repository, e.g.
    ``configs/sagan_shapes.yaml``); a missing file or a config without them is a clear ``SystemExit``."""
    import yaml

    path = Path(config)
    if not path.is_file() and not path.is_absolute():
        path = REPO / config  # the repository's configs/, from any working directory
    if not path.is_file():
        raise SystemExit(f"benchmark.py speed --only gan: no config file {config}")
    try:
        init = (yaml.safe_load(path.read_text()) or {})["model"]["init_args"]
        if not isinstance(init, dict):
            raise TypeError(type(init).__name__)
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise SystemExit(
            f"benchmark.py speed --only gan: {path} is not a GAN config with model.init_args "
            f"(as configs/sagan_shapes.yaml): {type(err).__name__}: {err}"
        ) from None
    return init


def gan_train_step(task, batch: int, device: torch.device, dtype: torch.dtype) -> Tuple[Callable[[], Tensor], int]:
    """``(step, image side)``: one ``task.gan_step`` on fixed ``(batch, 3, S, S)`` real images in [-1, 1] and random
    labels of 10 classes, with the task's own optimizers, under the autocast of ``dtype``."""
    size = task.model.img_size
    real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    labels = torch.randint(0, 10, (batch,), device=device)
    opt_g, opt_d = task.configure_optimizers()

    def step() -> Tensor:
        with autocast(device, dtype):
            return task.gan_step(real, labels, opt_g, opt_d)["g_loss"]

    return step, size


def gan_implementations(
    batch: int, device: torch.device, dtype: torch.dtype, seed: int, config: str = "configs/sagan_shapes.yaml"
) -> List[Implementation]:
    """One ``GenerationTask.gan_step`` on ``(batch, 3, S, S)`` real images in [-1, 1] and random labels of 10
    classes, for the task of ``config`` (the shapes quickstart's widths and recipe), in the default memory layout
    vs channels-last (ours = channels-last); both tasks start from the same seed."""
    from vision_attn.tasks import GenerationTask

    init = gan_task_args(config)
    impls = []
    for channels_last in (False, True):
        torch.manual_seed(seed)
        try:
            task = GenerationTask(**{**init, "num_classes": 10, "channels_last": channels_last}).to(device).train()
        except (TypeError, ValueError) as err:  # an unknown option, or a value the task's groups refuse
            raise SystemExit(
                f"benchmark.py speed --only gan: model.init_args of {config} do not fit GenerationTask: {err}"
            ) from None
        if channels_last:  # GenerationTask.on_fit_start does this under a Trainer (and needs one to check DDP)
            task.model.to(memory_format=torch.channels_last)
        step, size = gan_train_step(task, batch, device, dtype)
        label = "channels-last" if channels_last else "default layout (NCHW)"
        bench = f"{init.get('model', 'sagan_32')} GAN train step, {Path(config).name} widths (B={batch}, {size}px)"
        impls.append(Implementation(bench, label, step, ours=channels_last))
    return impls
