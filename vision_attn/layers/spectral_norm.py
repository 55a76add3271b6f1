"""Spectral norm (Miyato et al. 2018) that trains under ``torch.compile``, inductor included.

``torch.nn.utils.parametrizations.spectral_norm`` updates its power-iteration vectors ``_u`` / ``_v`` in place and
then clones them for ``sigma = u . W v``. Under inductor the clone is optimised away: the backward saves the buffer
itself, so a second call of the same layer before ``backward()`` (a discriminator on real, then on generated images)
bumps the buffer's version and the backward fails with "modified by an inplace operation".

Here the power iteration is an operator of its own (``vision_attn::spectral_norm_power_iteration``): it writes the
new vectors into the buffers and returns copies, which ``sigma`` uses. A compiler can neither fold those copies into
the buffers nor re-compute them from the buffers in the backward. (Making the saved tensor a matrix product instead
is not enough: inductor turns a rank-1 ``mm`` into a pointwise product and re-computes it from the buffers.) Same
buffers, same ``state_dict`` keys (``parametrizations.weight.original`` / ``.0._u`` / ``.0._v``), same power iteration
(``u`` first, then ``v``) and the same ``sigma = u . W v`` as PyTorch's, so checkpoints move freely between the two.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

__all__ = ["SpectralNorm", "spectral_norm"]


@torch.library.custom_op("vision_attn::spectral_norm_power_iteration", mutates_args=("u", "v"))
def power_iteration(
    weight_mat: Tensor, u: Tensor, v: Tensor, n_power_iterations: int, eps: float
) -> Tuple[Tensor, Tensor]:
    """``n_power_iterations`` of ``u = normalize(W v)``, ``v = normalize(W^H u)`` (PyTorch's order); writes them into
    ``u`` and ``v`` and returns copies. An operator of its own, so a compiler can neither fold the copies into the
    buffers nor re-compute them from the buffers in the backward. Computed in the buffers' dtype with autocast off
    (under CUDA autocast ``mv`` would run in bf16 and the copies would not have the dtype the compiler was told)."""
    with torch.no_grad(), torch.autocast(weight_mat.device.type, enabled=False):
        weight_mat = weight_mat.to(u.dtype)
        new_u, new_v = u, v
        for _ in range(n_power_iterations):
            new_u = F.normalize(torch.mv(weight_mat, new_v), dim=0, eps=eps)
            new_v = F.normalize(torch.mv(weight_mat.H, new_u), dim=0, eps=eps)
        u.copy_(new_u)
        v.copy_(new_v)
        return new_u.clone(), new_v.clone()


@power_iteration.register_fake
def _(weight_mat: Tensor, u: Tensor, v: Tensor, n_power_iterations: int, eps: float) -> Tuple[Tensor, Tensor]:
    return torch.empty_like(u), torch.empty_like(v)


class SpectralNorm(_SpectralNorm):
    """``weight / sigma(weight)``; ``n_power_iterations`` power iterations per call in training mode."""

    def forward(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            u, v = power_iteration(weight_mat.detach(), self._u, self._v, self.n_power_iterations, self.eps)
        else:
            u, v = self._u.clone(), self._v.clone()  # as PyTorch: a later training call must not change them
        sigma = torch.vdot(u, torch.mv(weight_mat, v))
        return weight / sigma


def spectral_norm(
    module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12, dim: Optional[int] = None
) -> nn.Module:
    """``torch.nn.utils.parametrizations.spectral_norm`` with :class:`SpectralNorm` (same arguments and defaults)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter or buffer named {name!r}")
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, name, SpectralNorm(weight, n_power_iterations, dim, eps))
    return module
