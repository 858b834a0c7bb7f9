"""The interface of a diffused prior score (:mod:`telescope.samplers.prior_scores` implements it)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DiffusedPrior"]


class DiffusedPrior:
    """The diffused score of a prior in the standardised working space ``z``, shape ``(*, d)``.

    Subclasses implement :meth:`score`; :attr:`precision0` is the ``(d, d)`` precision of a
    Gaussian approximation of the prior (exact for a Gaussian prior).
    """

    dim: int
    precision0: Tensor  # (d, d) float64

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        r""":math:`\nabla_z \log p^\lambda_t(z)` for ``z (*, d)`` and :math:`\bar\alpha(t)` (scalar or ``(*,)``)."""
        raise NotImplementedError

    def score0(self, z: Tensor) -> Tensor:
        r"""Score of the undiffused prior :math:`\nabla \log \lambda(z)` (where it is defined)."""
        raise NotImplementedError

    def precision(self, alpha_bar: float) -> Tensor:
        r""":math:`\Sigma_{t,\lambda}^{-1} = C^{-1} + (\alpha_t/v_t) I`, ``(d, d)`` float64 (Gaussian approximation)."""
        a = float(alpha_bar)
        r = a / max(1.0 - a, 1e-300)
        return self.precision0 + r * torch.eye(self.dim, dtype=torch.float64, device=self.precision0.device)

    def to(self, device) -> DiffusedPrior:
        raise NotImplementedError
