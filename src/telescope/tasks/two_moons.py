"""Two moons: a bimodal, crescent-shaped posterior with an exact reference.

The task of the SBI benchmark (Lueckmann et al., 2021, "two_moons"):

.. math::
    \\theta \\sim \\mathcal{U}([-1, 1]^2), \\quad a \\sim \\mathcal{U}(-\\tfrac{\\pi}{2}, \\tfrac{\\pi}{2}), \\quad
    r \\sim \\mathcal{N}(0.1, 0.01^2), \\quad p = (r \\cos a + 0.25,\\ r \\sin a),

.. math::
    x = p + f(\\theta), \\qquad
    f(\\theta) = \\Big(-\\frac{|\\theta_1 + \\theta_2|}{\\sqrt 2},\\ \\frac{-\\theta_1 + \\theta_2}{\\sqrt 2}\\Big).

**Likelihood.**  ``p`` has density ``N(r; 0.1, 0.01^2) / (pi r)`` at ``p = (0.25, 0) + r (cos a, sin a)``
(polar coordinates, Jacobian ``1/r``, ``a`` restricted to ``(-pi/2, pi/2)``); the likelihood is
that density at ``x - f(theta)``.  The (astronomically unlikely, ``P ~ 1e-23``) draws ``r < 0``
land in the left half-plane and are accounted for as well.

**Reference.**  ``f`` is two-to-one with unit Jacobian on each branch, so drawing ``p``,
setting ``q = x - p`` and picking one of the two preimages of ``q`` (when ``q_0 <= 0``) with
probability 1/2 gives ``theta`` with density proportional to the likelihood; rejecting draws
outside the prior box makes the samples exact posterior samples.

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

__all__ = ["TwoMoons"]

_R_MEAN, _R_STD, _SHIFT = 0.1, 0.01, 0.25
_SQRT2 = math.sqrt(2.0)


def _mean_map(theta: Tensor) -> Tensor:
    """``f(theta)`` for ``theta (*, 2)``."""
    t1, t2 = theta[..., 0], theta[..., 1]
    return torch.stack([-(t1 + t2).abs() / _SQRT2, (t2 - t1) / _SQRT2], -1)


@register("two_moons")
class TwoMoons(SBIBMObservations, Task):
    """Uniform prior on ``[-1, 1]^2``; crescent-shaped noise rotated by a two-to-one map of ``theta``.

    Arguments:
        observations, reference: where the observations, true parameters and reference samples come from
            (:class:`~telescope.tasks._sbibm.SBIBMObservations`; sbibm's stored files by default).
    """

    reference_kind = "rejection"
    dim_theta = 2
    dim_x = 2
    sbibm_name = "two_moons"

    def __init__(self, observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        self.prior = BoxUniform(-torch.ones(2), torch.ones(2))
        self.simulator = Simulator(self._generate, noise=self._noise, name="two_moons", config={})

    @staticmethod
    def _noise(n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 2)``: a uniform on ``[0, 1)`` (the angle) and a standard normal (the radius)."""
        return torch.stack([torch.rand(n, generator=generator), torch.randn(n, generator=generator)], -1)

    @staticmethod
    def _p(u: Tensor) -> Tensor:
        a = math.pi * (u[..., 0] - 0.5)
        r = _R_MEAN + _R_STD * u[..., 1]
        return torch.stack([r * torch.cos(a) + _SHIFT, r * torch.sin(a)], -1)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return self._p(u.to(theta)) + _mean_map(theta)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, d)`` with one ``x (dim_x,)`` or paired rows ``x (m, dim_x)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 2)
        v = x - _mean_map(theta)
        v0 = v[:, 0] - _SHIFT
        rad = torch.sqrt(v0**2 + v[:, 1] ** 2)
        r = torch.where(v0 >= 0, rad, -rad)  # a in (-pi/2, pi/2) forces the sign of r
        log_n = -0.5 * ((r - _R_MEAN) / _R_STD) ** 2 - math.log(_R_STD * math.sqrt(2 * math.pi))
        ll = log_n - math.log(math.pi) - torch.log(rad)
        return torch.where(rad > 0, ll, torch.full_like(ll, -float("inf"))).float()  # a null set

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        x = x.double().reshape(1, 2)
        out, have = [], 0
        while have < n:
            m = max(2 * (n - have), 1000)
            q = x - self._p(self._noise(m, g).double())
            keep = q[:, 0] <= 0
            q = q[keep]
            sign = torch.where(torch.rand(q.shape[0], generator=g) < 0.5, 1.0, -1.0).double()
            s = sign * (-q[:, 0]) * _SQRT2  # theta1 + theta2
            d = q[:, 1] * _SQRT2  # theta2 - theta1
            theta = torch.stack([(s - d) / 2, (s + d) / 2], -1)
            theta = theta[(theta.abs() <= 1).all(-1)]
            out.append(theta)
            have += theta.shape[0]
            if have == 0 and m > 10_000_000:
                raise RuntimeError(f"two_moons reference: no accepted sample for x={x.tolist()}")
        return torch.cat(out)[:n]
