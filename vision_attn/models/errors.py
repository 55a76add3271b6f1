"""The errors of weight files and Hub downloads, at the bottom of ``models/`` so every step can raise them."""

from __future__ import annotations

__all__ = ["CheckpointError", "UnsafeCheckpointError", "HubFileNotCachedError", "ModelOptionError"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint carries pickled code or objects other than tensors; it was not executed."""


class HubFileNotCachedError(CheckpointError):
    """A Hub file is not in the local cache and cannot be downloaded (offline, or the Hub is unreachable)."""


class ModelOptionError(TypeError, ValueError):
    """A model option of the wrong name or type (a ``TypeError`` as Python's own; a ``ValueError`` for the CLI's
    one-line rule on bad settings)."""
