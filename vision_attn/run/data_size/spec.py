"""The sweep YAML: its checks (every error names the file and the entry) and the grid of cells it describes.

::

    fractions: [0.01, 0.1, 1.0]     # of the (non-validation) training images; stratified, nested per seed
    seeds: [0, 1, 2]                # seed_everything and fraction_seed of a cell
    budget:                         # one of:
      steps: 2000                   #   equal steps: every cell this many optimizer steps, whatever its fraction
      # epochs: 20                  #   equal epochs: steps = max(min_steps, ceil(epochs x batches per epoch)),
      # min_steps: 100              #   batches per epoch = floor(n_train / (batch_size x devices))
    baseline: resnet18_cifar        # the model every other one is compared to in data_size.md (a label below)
    args: [--data.init_args.root=data]          # passed to every cell
    models:
      resnet18_cifar:                           # the label in results.csv
        config: configs/resnet18_cifar10.yaml
        args: [--model.init_args.lr=0.1]        # passed to this model's cells
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

__all__ = ["SweepCell", "SweepConfigError", "SweepSpec", "epoch_budget_steps", "fraction_key", "load_sweep"]


class SweepConfigError(ValueError):
    """A sweep YAML that cannot be run; the message names the file and the offending entry."""


def fraction_key(fraction: float) -> str:
    """The canonical text of a fraction in results.csv and folder names (``0.01``, ``0.5``, ``1``)."""
    return f"{float(fraction):g}"


def epoch_budget_steps(n_train: int, batch_size: int, epochs: float, min_steps: int = 1, devices: int = 1) -> int:
    """Optimizer steps of the equal-epochs rule: ``max(min_steps, ceil(epochs x batches per epoch))``.

    A batch per epoch is ``batch_size`` images on each of ``devices`` processes; the training loader drops a last
    partial batch (:func:`vision_attn.data.cifar.make_loader`), unless the set is smaller than one batch (one batch).
    """
    per_device = math.ceil(n_train / max(1, devices))
    batches = per_device // batch_size if per_device >= batch_size else 1
    return max(int(min_steps), math.ceil(epochs * batches))


@dataclass(frozen=True)
class SweepCell:
    """One fit of the grid: a model label, a training fraction and a seed."""

    model: str
    fraction: float
    seed: int

    @property
    def key(self) -> Tuple[str, str, int]:
        return (self.model, fraction_key(self.fraction), int(self.seed))

    @property
    def dirname(self) -> str:
        return f"{self.model}/f{fraction_key(self.fraction)}-s{self.seed}"


@dataclass
class SweepSpec:
    """A parsed sweep YAML (see the module docstring); ``path`` is the file it came from. The budget is ``steps``
    (equal steps) or ``epochs`` with ``min_steps`` (equal epochs); the other is None."""

    path: Path
    models: Dict[str, Dict[str, Any]]
    fractions: List[float]
    seeds: List[int]
    steps: Optional[int]
    args: List[str] = field(default_factory=list)
    epochs: Optional[float] = None
    min_steps: int = 1
    baseline: Optional[str] = None

    @property
    def budget_rule(self) -> str:
        """The budget rule in words, for the report."""
        if self.epochs is None:
            return f"equal steps: every cell trains {self.steps} optimizer steps, whatever its training fraction"
        return (
            f"equal epochs: every cell trains max({self.min_steps}, ceil({self.epochs:g} x floor(n_train / batch))) "
            f"optimizer steps, i.e. {self.epochs:g} passes over its training images, at least {self.min_steps} steps"
        )

    def cells(self) -> List[SweepCell]:
        """Every cell, smallest fraction first (the cheap end of the curve arrives first), then seed, then model."""
        return [SweepCell(m, f, s) for f in sorted(self.fractions) for s in self.seeds for m in self.models]


def _as_args(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, dict):  # {"--trainer.max_epochs": 3} or {"trainer.max_epochs": 3}
        return [
            f"{k if k.startswith('--') else '--' + k}={json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v}"
            for k, v in value.items()
        ]
    if isinstance(value, list) and all(isinstance(a, (str, int, float)) for a in value):
        return [str(a) for a in value]
    raise SweepConfigError(f"{where}: expected a list of CLI arguments or a mapping of them; got {value!r}")


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep YAML. Config paths are resolved against the current directory, then the YAML's folder
    and its parents (so ``configs/...`` works from the repository root and from anywhere else)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SweepConfigError(
            f"{path}: expected a mapping with models, fractions, seeds and budget; got {type(raw).__name__}"
        )
    unknown = set(raw) - {"models", "fractions", "seeds", "budget", "baseline", "args", "description"}
    if unknown:
        raise SweepConfigError(
            f"{path}: unknown keys {sorted(unknown)}; expected models, fractions, seeds, budget, baseline, args"
        )
    for key in ("models", "fractions", "budget"):
        if key not in raw:
            raise SweepConfigError(f"{path}: missing '{key}'")
    fractions = raw["fractions"]
    if (
        not isinstance(fractions, list)
        or not fractions
        or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions)
    ):
        raise SweepConfigError(f"{path}: 'fractions' must be a non-empty list of numbers in (0, 1]; got {fractions!r}")
    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SweepConfigError(f"{path}: 'seeds' must be a non-empty list of integers; got {seeds!r}")
    steps, epochs, min_steps = _parse_budget(raw["budget"], path)
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise SweepConfigError(f"{path}: 'models' must map labels to {{config: ..., args: [...]}}; got {models!r}")
    parsed: Dict[str, Dict[str, Any]] = {}
    for label, entry in models.items():
        where = f"{path}: models.{label}"
        if not isinstance(label, str) or not label or any(c in label for c in "/\\, \n"):
            raise SweepConfigError(f"{where}: a label must be a non-empty name without '/', ',', spaces")
        if not isinstance(entry, dict) or "config" not in entry:
            raise SweepConfigError(
                f"{where}: expected a mapping with 'config' (a LightningCLI YAML) and optional 'args'"
            )
        extra = set(entry) - {"config", "args"}
        if extra:
            raise SweepConfigError(f"{where}: unknown keys {sorted(extra)}")
        parsed[label] = {
            "config": str(_find_config(entry["config"], path, where)),
            "args": _as_args(entry.get("args"), where),
        }
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in parsed:
        raise SweepConfigError(f"{path}: baseline {baseline!r} is not one of the models {sorted(parsed)}")
    return SweepSpec(
        path=path,
        models=parsed,
        fractions=[float(f) for f in fractions],
        seeds=[int(s) for s in seeds],
        steps=steps,
        args=_as_args(raw.get("args"), f"{path}: args"),
        epochs=epochs,
        min_steps=min_steps,
        baseline=baseline,
    )


def _parse_budget(budget: Any, path: Path) -> Tuple[Optional[int], Optional[float], int]:
    """``(steps, epochs, min_steps)`` of a ``budget`` entry: ``{steps: N}`` or ``{epochs: E, min_steps: S}``."""

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if isinstance(budget, dict) and set(budget) == {"steps"} and count(budget["steps"]):
        return int(budget["steps"]), None, 1
    if (
        isinstance(budget, dict)
        and "epochs" in budget
        and set(budget) <= {"epochs", "min_steps"}
        and isinstance(budget["epochs"], (int, float))
        and not isinstance(budget["epochs"], bool)
        and budget["epochs"] > 0
        and count(budget.get("min_steps", 1))
    ):
        return None, float(budget["epochs"]), int(budget.get("min_steps", 1))
    raise SweepConfigError(
        f"{path}: 'budget' must be {{steps: N}} (equal steps, N >= 1) or {{epochs: E, min_steps: S}} (equal epochs, "
        f"E > 0, optional S >= 1); got {budget!r}"
    )


def _find_config(name: str, sweep_path: Path, where: str) -> Path:
    candidates = [Path(name)] + [p / name for p in [sweep_path.parent, *sweep_path.resolve().parents]]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise SweepConfigError(
        f"{where}: config {name} not found (looked in the current directory and above {sweep_path.parent})"
    )
