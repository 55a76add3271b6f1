"""Deprecated location of :class:`vision_attn.run.cli.VisionAttnCLI` (moved to the top floor, ``vision_attn.run``)."""
import warnings

from ..run.cli import VisionAttnCLI  # noqa: F401

warnings.warn("vision_attn.tasks.cli moved to vision_attn.run.cli; the old path goes away in the next release",
              DeprecationWarning, stacklevel=2)
