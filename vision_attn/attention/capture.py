"""Collect every attention core's weights during a forward, without changing the outputs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

from torch import Tensor, nn

from .core import MultiHeadAttention

__all__ = ["capture_attention"]


def _records_attention(module: nn.Module) -> bool:
    """The core, or a block that calls the core's function itself and reports its weights through ``_capture``
    (e.g. the pixel attention blocks of ``vision_attn.layers``)."""
    return isinstance(module, MultiHeadAttention) or "_capture" in vars(module)


@contextmanager
def capture_attention(model: nn.Module, detach: bool = True) -> Iterator[Dict[str, Tensor]]:
    """Record the attention probabilities of every :class:`MultiHeadAttention` in ``model``.

    Also of every module that defines a ``_capture`` attribute (a block that calls
    :func:`~vision_attn.attention.scaled_dot_product_attention` itself, such as
    ``vision_attn.layers.NonLocalBlock2d`` and ``LocalSelfAttention2d``): it is set to a callable taking the
    block's weights, in the layout that block documents.

    Inside the block each core still computes its output with the fused kernel and, beside it, its
    weights; outside it nothing is recorded and no weights are computed.

    Yields:
        a dict filled during the forward: module name -> ``(B, H, Nq, Nk)`` (the last call of that
        module wins; ``LocalSelfAttention2d`` gives ``(B, H, N, k*k)``). Detached unless ``detach=False``.

    Example:
        >>> with capture_attention(model) as maps:
        ...     logits = model(images)
        >>> maps["blocks.11.attn"].shape  # (B, H, 197, 197)
    """
    cores = [(name or "self", m) for name, m in model.named_modules() if _records_attention(m)]
    if not cores:
        raise ValueError(
            f"{type(model).__name__} has no vision_attn MultiHeadAttention module (nor any module with a _capture hook) to capture"
        )
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
