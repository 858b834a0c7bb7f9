"""SLCP with distractors: the SLCP posterior hidden in 100-d data.

The task ``slcp_distractors`` of the SBI benchmark (Lueckmann et al., 2021, task T.4).  The
8 informative numbers of :mod:`telescope.tasks.slcp` (four bivariate Gaussian draws whose mean
and covariance depend on ``theta``) are joined by 92 uninformative numbers, 46 bivariate draws
from a fixed mixture of 20 Student-t distributions (2 degrees of freedom) that does not depend on
``theta``, and the 100 coordinates are shuffled by a fixed permutation.

The mixture and the permutation are fixed once for the task from a seed (as in the benchmark,
whose constants are random draws too): component locations ``N(0, 15^2 I_2)``, shape matrices
``0.01 I_2``, equal weights; each distractor draw picks its component uniformly.

**Likelihood.**  ``log p(x | theta) = log p_SLCP(x_inf | theta) + sum_j log q(d_j)`` with ``q`` the
Student-t mixture: the distractors add a constant in ``theta``.

**Reference** (``reference_kind = "mcmc"``): the posterior is exactly the SLCP posterior of the
8 informative coordinates, so the reference is SLCP's (see :mod:`telescope.tasks.slcp`) on them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..simulators import Simulator
from . import register
from .base import Task
from .slcp import SLCP

__all__ = ["SLCPDistractors"]

_INFORMATIVE, _DRAWS, _COMPONENTS, _DF = 8, 46, 20, 2.0
_SEED = 20210113


@register("slcp_distractors")
class SLCPDistractors(Task):
    """SLCP (5-d ``theta``) with 92 distractors: 100-d ``x``.

    Arguments:
        **slcp_kwargs: settings of the SLCP reference MCMC (``chains``, ``warmup``, ``thin``,
            ``n_proposals``).

    Example:
        >>> task = SLCPDistractors()
        >>> task.simulator(task.prior.sample((3,)), seed=0).shape
        torch.Size([3, 100])
    """

    reference_kind = "mcmc"
    dim_theta = 5
    dim_x = _INFORMATIVE + 2 * _DRAWS

    def __init__(self, **slcp_kwargs):
        self.slcp = SLCP(**slcp_kwargs)
        self.prior = self.slcp.prior
        g = torch.Generator().manual_seed(_SEED)
        self.locs = 15.0 * torch.randn(_COMPONENTS, 2, generator=g, dtype=torch.float64)
        self.scale = 0.1  # shape matrix 0.01 I
        self.permutation = torch.randperm(self.dim_x, generator=g)
        self.informative = torch.argsort(self.permutation)[:_INFORMATIVE]  # where the 8 SLCP numbers land
        self.distractors = torch.argsort(self.permutation)[_INFORMATIVE:]
        self.simulator = Simulator(self._generate, noise=self._noise, name="slcp_distractors",
                                   config={"seed": _SEED, "components": _COMPONENTS, "df": _DF})
        self.diagnostics = self.slcp.diagnostics

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 8 + 46 + 92 + 46)``: SLCP normals, component uniforms, t normals, chi-square uniforms."""
        return torch.cat([torch.randn(n, _INFORMATIVE, generator=generator),
                          torch.rand(n, _DRAWS, generator=generator),
                          torch.randn(n, 2 * _DRAWS, generator=generator),
                          torch.rand(n, _DRAWS, generator=generator)], 1)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        u = u.double()
        n = theta.shape[0]
        inf = self.slcp._generate(theta.double(), u[:, :_INFORMATIVE])
        comp = (u[:, _INFORMATIVE : _INFORMATIVE + _DRAWS] * _COMPONENTS).long().clamp_max(_COMPONENTS - 1)
        z = u[:, _INFORMATIVE + _DRAWS : _INFORMATIVE + 3 * _DRAWS].reshape(n, _DRAWS, 2)
        # chi-square with 2 degrees of freedom is Exponential(1/2): w = -2 log(1 - U)
        w = -2.0 * torch.log1p(-u[:, _INFORMATIVE + 3 * _DRAWS :])
        d = self.locs[comp] + self.scale * z / torch.sqrt(w / _DF).unsqueeze(-1)
        x = torch.cat([inf, d.reshape(n, -1)], 1)
        return x[:, self.permutation].to(theta.dtype)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The informative ``(*, 8)`` and distractor ``(*, 46, 2)`` parts of ``x (*, 100)``."""
        x = torch.as_tensor(x)
        return x[..., self.informative], x[..., self.distractors].reshape(*x.shape[:-1], _DRAWS, 2)

    def distractor_log_density(self, d: Tensor) -> Tensor:
        """``sum_j log q(d_j)`` for distractors ``d (*, 46, 2)`` under the Student-t mixture."""
        d = torch.as_tensor(d, dtype=torch.float64)
        diff = (d.unsqueeze(-2) - self.locs) / self.scale  # (*, 46, K, 2)
        delta = (diff**2).sum(-1)
        p = 2.0
        log_t = (math.lgamma((_DF + p) / 2) - math.lgamma(_DF / 2) - p / 2 * math.log(_DF * math.pi)
                 - p * math.log(self.scale) - (_DF + p) / 2 * torch.log1p(delta / _DF))
        return (torch.logsumexp(log_t, -1) - math.log(_COMPONENTS)).sum(-1)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, 5)`` with one ``x (100,)``."""
        inf, d = self.split(torch.as_tensor(x, dtype=torch.float64))
        return (self.slcp._ll64(theta, inf) + self.distractor_log_density(d)).float()

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        inf, _ = self.split(x.double())
        samples = self.slcp._reference(inf, n, seed)
        self.diagnostics.clear()
        self.diagnostics.update(self.slcp.diagnostics)
        return samples
