r"""Geometric Brownian motion with a coarse Euler–Maruyama level and an exact fine level.

A two-level stochastic model for multilevel SBI that is not one of paper 1's three problems.  With
:math:`\theta = (\mu, \sigma) \sim \mathcal{U}([-0.5, 0.5] \times [0.2, 1.5])` the asset follows

.. math::
    dX_t = \mu X_t\,dt + \sigma X_t\,dW_t, \qquad X_0 = 1,

observed as :math:`x_k = \log X_{t_k}` at :math:`t_k = k\Delta`, :math:`k = 1..8`, :math:`\Delta = 0.25`.
Both levels are driven by the same Brownian path, given as ``F = 16`` standard-normal increments per
observation interval (``u (n, 8 F)``):

* **high fidelity** — the exact solution on that path,
  :math:`\log X_t = (\mu - \sigma^2/2)\,t + \sigma W_t`, standing in for a fine solver (nominal cost ``F``
  steps per interval, so the ladder's costs are ``[1, 16]``);
* **low fidelity** — one Euler–Maruyama step per interval on the same path,
  :math:`X_{k+1} = X_k\,\big(1 + \mu\Delta + \sigma\,\Delta W_k\big)` with :math:`\Delta W_k` the sum of the
  interval's fine increments; a factor below ``0.05`` is held at ``0.05`` (the scheme may leave the
  positive half-line).  The coarse scheme lacks the Itô correction :math:`-\sigma^2/2` of the log-drift
  at first order and is skewed, so its posterior is biased, most for large :math:`\sigma`.

The high-fidelity log-increments are iid :math:`\mathcal{N}((\mu - \sigma^2/2)\Delta, \sigma^2\Delta)`:
:meth:`GBM.log_likelihood` is exact and the reference posterior is computed on a grid over the prior box
(exact up to the grid's resolution), then jittered within cells.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..priors import BoxUniform
from ..simulation.ladder import FidelityLadder
from ..simulation.simulators import Simulator
from . import register
from .base import Task

__all__ = ["GBM", "gbm_exact", "gbm_euler"]


def _increments(u: Tensor, fine: int, dt: float) -> Tensor:
    """Brownian increments over each observation interval, ``(n, K)`` from ``u (n, K * fine)``."""
    n = u.shape[0]
    return u.double().reshape(n, -1, fine).sum(-1) * math.sqrt(dt / fine)


def gbm_exact(theta: Tensor, u: Tensor, *, fine: int = 16, dt: float = 0.25) -> Tensor:
    """High fidelity: ``log X`` at the observation times on the Brownian path ``u``, shape ``(n, K)``."""
    theta = theta.double()
    mu, sigma = theta[:, 0:1], theta[:, 1:2]
    dW = _increments(u, fine, dt)
    return ((mu - 0.5 * sigma**2) * dt + sigma * dW).cumsum(-1)


def gbm_euler(theta: Tensor, u: Tensor, *, fine: int = 16, dt: float = 0.25, floor: float = 0.05) -> Tensor:
    """Low fidelity: one Euler–Maruyama step per interval, ``log X`` of shape ``(n, K)``."""
    theta = theta.double()
    mu, sigma = theta[:, 0:1], theta[:, 1:2]
    dW = _increments(u, fine, dt)
    factor = (1.0 + mu * dt + sigma * dW).clamp_min(floor)
    return factor.log().cumsum(-1)


class _Level:
    """Picklable generator of one level."""

    def __init__(self, fidelity: str, fine: int, dt: float):
        self.fidelity, self.fine, self.dt = fidelity, fine, dt

    def __call__(self, theta: Tensor, u: Tensor) -> Tensor:
        fn = gbm_exact if self.fidelity == "high" else gbm_euler
        return fn(theta, u, fine=self.fine, dt=self.dt).float()


class _Noise:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.size, generator=generator, dtype=torch.float64)


@register("gbm")
class GBM(Task):
    """Geometric Brownian motion, coarse Euler–Maruyama against the exact solution on one Brownian path.

    Arguments:
        observations: number of observation times ``K`` (``dim_x``).
        dt: time between observations.
        fine: Brownian increments per interval (the nominal cost ratio of the two levels).
        grid: points per parameter of the reference grid.

    Example:
        >>> task = GBM()
        >>> task.simulator(task.prior.sample((3,)), seed=0).shape
        torch.Size([3, 8])
        >>> task.ladder().costs
        [1.0, 16.0]
    """

    name = "gbm"
    reference_kind = "grid"
    dim_theta = 2

    def __init__(self, observations: int = 8, dt: float = 0.25, fine: int = 16, grid: int = 400):
        if observations < 1 or fine < 1 or not dt > 0:
            raise ValueError(f"need observations >= 1, fine >= 1 and dt > 0, got {observations}, {fine}, {dt}")
        self.K, self.dt, self.fine, self.grid = int(observations), float(dt), int(fine), int(grid)
        self.dim_x = self.K
        self.prior = BoxUniform([-0.5, 0.2], [0.5, 1.5])
        self.noise = _Noise(self.K * self.fine)
        cfg = {"observations": self.K, "dt": self.dt, "fine": self.fine}
        self.simulator = Simulator(_Level("high", self.fine, self.dt), noise=self.noise, name="gbm_high",
                                   config={**cfg, "fidelity": "high"})
        self.low_simulator = Simulator(_Level("low", self.fine, self.dt), noise=self.noise, name="gbm_low",
                                       config={**cfg, "fidelity": "low"})

    def ladder(self, costs=None) -> FidelityLadder:
        """``[low, high]`` sharing the Brownian path; nominal costs ``[1, fine]`` unless given."""
        return FidelityLadder([self.low_simulator, self.simulator], noise=self.noise,
                              costs=costs if costs is not None else [1.0, float(self.fine)])

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """Exact ``log p(x | theta)`` of the high level, ``theta (m, 2)``, one ``x (K,)`` -> ``(m,)``."""
        theta = torch.as_tensor(theta).double()
        x = torch.as_tensor(x).double().reshape(-1)
        inc = torch.diff(x, prepend=x.new_zeros(1))
        mu, sigma = theta[:, 0:1], theta[:, 1:2]
        d = torch.distributions.Normal((mu - 0.5 * sigma**2) * self.dt, sigma * math.sqrt(self.dt))
        return d.log_prob(inc).sum(-1).float()

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        low, high = self.prior.low.double(), self.prior.high.double()
        axes = [low[j] + (high[j] - low[j]) * (torch.arange(self.grid, dtype=torch.float64) + 0.5) / self.grid
                for j in range(2)]
        pts = torch.cartesian_prod(*axes)
        lp = self.log_likelihood(pts, x).double()
        idx = torch.multinomial(torch.softmax(lp, 0), n, replacement=True, generator=g)
        cell = (high - low) / self.grid
        jitter = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * cell
        return (pts[idx] + jitter).float()

    def cache_key(self) -> str:
        return f"gbm_K{self.K}_dt{self.dt:g}_F{self.fine}_grid{self.grid}"
