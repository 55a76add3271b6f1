"""What the callbacks (and the run floor) rely on from the LightningModule they serve, declared as
``typing.Protocol``\\ s; check them with :func:`vision_attn.models.protocols.conforms` where the module enters.

The three tasks provide :class:`WrapsModel` and :class:`NamesLossTerms`; ``GenerationTask`` also
:class:`CountsGeneratorSteps`. A module of your own may provide any of them, or none.
"""

from __future__ import annotations

from typing import Dict, Protocol, Sequence, runtime_checkable

from torch import Tensor, nn

__all__ = ["CarriesClassNames", "CountsGeneratorSteps", "NamesLossTerms", "WrapsModel"]


@runtime_checkable
class WrapsModel(Protocol):
    """A task whose network is a plain ``nn.Module`` at ``.model`` (what is exported, predicted and described)."""

    model: nn.Module


@runtime_checkable
class NamesLossTerms(Protocol):
    """A task that names the loss terms of its last training step (``{"train/loss_ce": tensor, ...}``), so a
    non-finite loss is reported by its first non-finite term. Set in ``__init__`` (empty) and in each step."""

    loss_terms: Dict[str, Tensor]


@runtime_checkable
class CountsGeneratorSteps(Protocol):
    """A GAN task that counts its generator steps (Lightning's ``global_step`` also counts the discriminator's)."""

    g_steps: int


@runtime_checkable
class CarriesClassNames(Protocol):
    """A module that carries its class names (e.g. read from a checkpoint): the first source of predicted labels."""

    class_names: Sequence[str]
