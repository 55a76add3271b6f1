"""Run folders: what ``tools/train.py fit`` leaves in ``<default_root_dir>/version_N/`` and how the tools read it.

A run folder holds ``config.yaml`` (the fit's full config, as LightningCLI saved it), ``checkpoints/best.ckpt`` and
``checkpoints/last.ckpt``, ``metrics.csv`` and TensorBoard events. ``tools/eval.py``, ``predict.py`` and
``export.py`` take ``--run DIR`` for "that config and its best checkpoint" (:func:`resolve_run`) and write into
``DIR`` (:func:`run_output_dir`); :func:`vision_attn.pipeline` takes a run folder as its model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Tuple, Union

__all__ = ["resolve_run", "is_run_dir", "run_output_dir", "RUN_CONFIG", "CHECKPOINT_ORDER"]

RUN_CONFIG = "config.yaml"
CHECKPOINT_ORDER = ("best.ckpt", "last.ckpt")  # the best by the task's monitor, else the newest state


def is_run_dir(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a run folder (``config.yaml`` + ``checkpoints/``) or a folder of them (``version_N``)."""
    path = Path(path).expanduser()
    return (path / RUN_CONFIG).is_file() and (path / "checkpoints").is_dir() or bool(_versions(path))


def _versions(path: Path) -> list:
    found = [p for p in path.glob("version_*") if re.fullmatch(r"version_\d+", p.name) and (p / RUN_CONFIG).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve_run(run_dir: Union[str, Path]) -> Tuple[Path, Path]:
    """``(config.yaml, checkpoint)`` of a run folder: ``best.ckpt``, else ``last.ckpt``, else its newest ``.ckpt``.

    ``run_dir`` is ``runs/NAME/version_N``, or ``runs/NAME`` (then its newest ``version_N`` with a config).
    Raises ``FileNotFoundError`` naming the folder and what it lacks.
    """
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not (path / RUN_CONFIG).is_file():
        versions = _versions(path)
        if not versions:
            raise FileNotFoundError(
                f"run folder {run_dir} has no {RUN_CONFIG} and no version_N/{RUN_CONFIG} "
                "(expected a folder written by tools/train.py fit, e.g. runs/NAME/version_0)"
            )
        path = versions[-1]
    ckpts = path / "checkpoints"
    for name in CHECKPOINT_ORDER:
        if (ckpts / name).is_file():
            return path / RUN_CONFIG, ckpts / name
    others = sorted(ckpts.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not others:
        raise FileNotFoundError(
            f"run folder {path} has no checkpoint in {ckpts} (expected best.ckpt or last.ckpt: "
            "did its fit finish a step?)"
        )
    return path / RUN_CONFIG, others[-1]


def run_output_dir(run_dir: Union[str, Path], what: str) -> Path:
    """Where a tool writes what it made from a run: ``<run folder>/<what>`` (e.g. ``eval_test``, ``predict``)."""
    config, _ = resolve_run(run_dir)
    return config.parent / what
