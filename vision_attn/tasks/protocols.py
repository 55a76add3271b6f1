"""What the run floor relies on from a task (a LightningModule), declared as a ``typing.Protocol``.

The evaluator is declared elsewhere: :func:`vision_attn.run.evaluate.evaluate_task` dispatches on the task class.
"""

from __future__ import annotations

from typing import Optional, Protocol, Tuple, runtime_checkable

__all__ = ["MonitoredTask"]


@runtime_checkable
class MonitoredTask(Protocol):
    """A task that says what picks its best checkpoint: ``checkpoint_monitor = (metric, "max" | "min")``, or None
    when no validation number does (then ``best.ckpt`` holds the latest weights). Set in ``__init__``."""

    checkpoint_monitor: Optional[Tuple[str, str]]
