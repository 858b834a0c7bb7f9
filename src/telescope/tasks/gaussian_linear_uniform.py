"""Gaussian linear with a uniform prior: a truncated-Gaussian posterior.

The task of the SBI benchmark (Lueckmann et al., 2021, "gaussian_linear_uniform"):

.. math::
    \\theta \\sim \\mathcal{U}([-1, 1]^D), \\qquad x \\mid \\theta \\sim \\mathcal{N}(\\theta, \\sigma^2 I_D),

with ``D = 10`` and ``sigma^2 = 0.1``.  The posterior is ``N(x, sigma^2 I)`` truncated to the
box; it factorises over coordinates, so exact reference samples come from rejection
sampling each coordinate of ``N(x_j, sigma^2)`` on ``[-1, 1]`` (``reference_kind = "rejection"``).

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
from .gaussian_linear import _GaussianLinearCommon

__all__ = ["GaussianLinearUniform", "truncated_normal_rejection"]


def truncated_normal_rejection(mean: Tensor, std: float, low: Tensor, high: Tensor, n: int,
                               generator: torch.Generator, max_draws: int = 10**9) -> Tensor:
    """``n`` exact draws ``(n, D)`` of independent ``N(mean_j, std^2)`` truncated to ``[low_j, high_j]``.

    Each coordinate is rejection-sampled on its own (batches sized from the acceptance rate), so
    the cost does not grow with ``D`` the way joint rejection would.
    """
    mean = mean.double().reshape(-1)
    low, high = low.double(), high.double()
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    cols = []
    for j in range(mean.numel()):
        accept = (normal.cdf((high[j] - mean[j]) / std) - normal.cdf((low[j] - mean[j]) / std)).item()
        if not accept > 0:
            raise RuntimeError(f"coordinate {j}: the box [{low[j].item()}, {high[j].item()}] holds no mass of "
                               f"N({mean[j].item()}, {std}^2) in double precision")
        kept, have, drawn = [], 0, 0
        while have < n:
            m = int(1.2 * (n - have) / accept) + 100
            drawn += m
            if drawn > max_draws:
                raise RuntimeError(f"rejection sampling needs more than {max_draws} draws for coordinate {j}")
            cand = mean[j] + std * torch.randn(m, generator=generator, dtype=torch.float64)
            cand = cand[(cand >= low[j]) & (cand <= high[j])]
            kept.append(cand)
            have += cand.numel()
        cols.append(torch.cat(kept)[:n])
    return torch.stack(cols, -1)


@register("gaussian_linear_uniform")
class GaussianLinearUniform(_GaussianLinearCommon, SBIBMObservations, Task):
    """Uniform prior on ``[-1, 1]^D``, Gaussian likelihood; exact rejection reference.

    Arguments:
        dim: dimension ``D`` of ``theta`` and ``x``.
        noise_var: likelihood variance ``sigma^2``.
        observations: ``"sbibm"`` (the benchmark's stored observations and true parameters), ``"telescope"``
            (this library's own draws) or ``None`` (the default: ``"sbibm"`` in the benchmark's configuration
            ``dim=10`` with noise variance 0.1, for which sbibm's files are made, else ``"telescope"``).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's own exact reference; the default otherwise).
    """

    reference_kind = "rejection"
    sbibm_name = "gaussian_linear_uniform"
    _SBIBM_CONFIG = "dim=10, noise_var=0.1"

    def __init__(self, dim: int = 10, noise_var: float = 0.1, observations: str | None = None,
                 reference: str | None = None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        if not noise_var > 0:
            raise ValueError(f"noise_var must be > 0, got {noise_var!r}")
        self.dim_theta = self.dim_x = dim
        self.noise_var = float(noise_var)
        self._init_observations(self._observation_set(observations, (dim, self.noise_var) == (10, 0.1)), reference)
        self.prior = BoxUniform(-torch.ones(dim), torch.ones(dim))
        self.simulator = Simulator(self._generate, noise=self._noise, name="gaussian_linear_uniform",
                                   config={"dim": dim, "noise_var": self.noise_var})

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim_x, generator=generator)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return theta + math.sqrt(self.noise_var) * u.to(theta)

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        return truncated_normal_rejection(x, math.sqrt(self.noise_var), self.prior.low, self.prior.high, n, g)

    def cache_key(self) -> str:
        if (self.dim_x, self.noise_var) == (10, 0.1):
            return super().cache_key()
        return f"{self.name}_d{self.dim_x}_n{self.noise_var:g}"
