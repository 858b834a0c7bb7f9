"""Gaussian mixture: a narrow and a wide Gaussian sharing one location.

The task of the SBI benchmark (Lueckmann et al., 2021, "gaussian_mixture"):

.. math::
    \\theta \\sim \\mathcal{U}([-10, 10]^2), \\qquad
    x \\mid \\theta \\sim \\tfrac12 \\mathcal{N}(\\theta, I) + \\tfrac12 \\mathcal{N}(\\theta, 0.01\\, I).

The likelihood is symmetric in ``x - theta``, so the posterior is the same mixture centred at
``x`` and truncated to the prior box; reference samples are drawn from it exactly by rejection
(``reference_kind = "rejection"``).

**Observations** (``observations="sbibm"``, the default): the benchmark's ten stored observations, their
true parameters and its 10,000 reference posterior samples each, read from the package data
(:mod:`telescope.tasks._sbibm`; copied from the sbibm 1.1.0 wheel, MIT licence), so that comparisons with
published numbers are like for like; ``reference="mcmc"`` gives this library's own reference on them
instead.  ``observations="telescope"`` gives this library's own draws (fixed seeds) with its own references.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..priors import BoxUniform
from ..simulation.simulators import Simulator
from . import register
from ._sbibm import SBIBMObservations
from .base import Task

__all__ = ["GaussianMixture"]

_SCALES = (1.0, 0.1)  # standard deviations of the two components
_WEIGHTS = (0.5, 0.5)


@register("gaussian_mixture")
class GaussianMixture(SBIBMObservations, Task):
    """Uniform prior on ``[-10, 10]^2``; mixture of ``N(theta, I)`` and ``N(theta, 0.01 I)``.

    Arguments:
        observations, reference: where the observations, true parameters and reference samples come from
            (:class:`~telescope.tasks._sbibm.SBIBMObservations`; sbibm's stored files by default).
    """

    reference_kind = "rejection"
    dim_theta = 2
    dim_x = 2
    sbibm_name = "gaussian_mixture"

    def __init__(self, observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        self.prior = BoxUniform(torch.full((2,), -10.0), torch.full((2,), 10.0))
        self.simulator = Simulator(self._generate, noise=self._noise, name="gaussian_mixture", config={})

    @staticmethod
    def _noise(n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 3)``: a uniform choosing the component, then two standard normals."""
        return torch.cat([torch.rand(n, 1, generator=generator), torch.randn(n, 2, generator=generator)], -1)

    @staticmethod
    def _offset(u: Tensor) -> Tensor:
        scale = torch.where(u[..., :1] < _WEIGHTS[0], _SCALES[0], _SCALES[1])
        return scale * u[..., 1:]

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return theta + self._offset(u.to(theta))

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, d)`` with one ``x (dim_x,)`` or paired rows ``x (m, dim_x)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 2)
        r2 = ((x - theta) ** 2).sum(-1)
        comps = [math.log(w) - 0.5 * r2 / s**2 - math.log(2 * math.pi * s**2) for w, s in zip(_WEIGHTS, _SCALES)]
        return torch.logaddexp(*comps).float()

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        x = x.double().reshape(1, 2)
        low, high = self.prior.low.double(), self.prior.high.double()
        out, have, rounds = [], 0, 0
        while have < n:
            m = max(2 * (n - have), 1000)
            theta = x + self._offset(self._noise(m, g).double())
            theta = theta[((theta >= low) & (theta <= high)).all(-1)]
            out.append(theta)
            have += theta.shape[0]
            rounds += 1
            if rounds > 1000:
                raise RuntimeError(f"gaussian_mixture reference: acceptance too low for x={x.tolist()}")
        return torch.cat(out)[:n]
