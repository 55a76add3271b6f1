"""Collect every attention core's weights during a forward, without changing the outputs."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

from torch import Tensor, nn

from .core import MultiHeadAttention

__all__ = ["capture_attention"]


@contextmanager
def capture_attention(model: nn.Module, detach: bool = True) -> Iterator[Dict[str, Tensor]]:
    """Record the attention probabilities of every :class:`MultiHeadAttention` in ``model``.

    Inside the block each core still computes its output with the fused kernel and, beside it, its
    weights; outside it nothing is recorded and no weights are computed.

    Yields:
        a dict filled during the forward: module name -> ``(B, H, Nq, Nk)`` (the last call of that
        module wins). Detached unless ``detach=False``.

    Example:
        >>> with capture_attention(model) as maps:
        ...     logits = model(images)
        >>> maps["blocks.11.attn"].shape  # (B, H, 197, 197)
    """
    cores = [(name or "self", m) for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)]
    if not cores:
        raise ValueError(f"{type(model).__name__} has no vision_attn MultiHeadAttention module to capture")
    maps: Dict[str, Tensor] = {}
    previous = [m._capture for _, m in cores]

    def recorder(name: str):
        def record(weights: Tensor) -> None:
            maps[name] = weights.detach() if detach else weights

        return record

    for name, m in cores:
        m._capture = recorder(name)
    try:
        yield maps
    finally:
        for (_, m), prev in zip(cores, previous):
            m._capture = prev
