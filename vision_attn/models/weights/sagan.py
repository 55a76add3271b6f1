"""SA-GAN checkpoints from before the generator's class embedding followed BigGAN (plain, not spectral-normalised)."""

from __future__ import annotations

import torch

__all__ = ["unwrap_sn_embedding"]


def unwrap_sn_embedding(state_dict, prefix, *_args) -> None:
    """Load-state-dict pre-hook of ``Generator``: a G saved with a spectral-normalised class embedding has
    ``embed.parametrizations.weight.{original, 0._u, 0._v}``; its effective weight is ``original / (u . W v)``."""
    old = prefix + "embed.parametrizations.weight."
    if old + "original" in state_dict:
        w, u, v = (state_dict.pop(old + key) for key in ("original", "0._u", "0._v"))
        state_dict[prefix + "embed.weight"] = w / torch.vdot(u, w.flatten(1) @ v)
