"""A 2-d Gaussian problem with a known log ratio, and NRE-C / NRE-B estimators trained on it once per session.

theta ~ N(0, I_2), x = theta + s * eps with s = 0.5, so

    p(x | theta) = N(x; theta, s^2 I),  p(x) = N(x; 0, (1 + s^2) I),
    p(theta | x) = N(x / (1 + s^2), s^2 / (1 + s^2) I),
    I(theta; x) = (d / 2) log(1 + 1 / s^2).
"""

from __future__ import annotations

import functools
import math

import torch

from telescope.estimators.nre import NRE
from telescope.priors import Gaussian
from telescope.simulation.simulators import Simulator

D, S = 2, 0.5
PRIOR = Gaussian(torch.zeros(D), torch.ones(D))
SIMULATOR = Simulator(lambda theta, u: theta + S * u, noise=lambda n, g: torch.randn(n, D, generator=g),
                      name="gauss2d")
TRUE_MI = 0.5 * D * math.log(1 + 1 / S**2)


def true_log_ratio(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | theta) - log p(x), broadcasting over leading dimensions."""
    lik = torch.distributions.Normal(theta, S).log_prob(x).sum(-1)
    evid = torch.distributions.Normal(torch.zeros_like(x), math.sqrt(1 + S**2)).log_prob(x).sum(-1)
    return lik - evid


def posterior(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean and (isotropic) variance of p(theta | x) for one x (d,)."""
    return x / (1 + S**2), S**2 / (1 + S**2)


class ExactRatio:
    """The true ratio (plus an optional x-dependent bias c(x)) behind the estimator interface."""

    def __init__(self, bias=None):
        self.prior = PRIOR
        self.bias = bias

    def log_ratio(self, theta, x, grid: bool = False):
        theta, x = torch.as_tensor(theta).float(), torch.as_tensor(x).float()
        theta = theta.reshape(-1, D)
        x = x.reshape(-1, D)
        if grid:
            out = true_log_ratio(theta[:, None], x[None])
            return out + (self.bias(x)[None] if self.bias else 0.0)
        out = true_log_ratio(theta, x)
        return out + (self.bias(x) if self.bias else 0.0)


def simulate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, D, generator=g)
    return theta, theta + S * torch.randn(n, D, generator=g)


@functools.cache
def trained(gamma: float, K: int = 9) -> NRE:
    """An estimator trained on 4000 simulations (cached for the whole test session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theta, x = simulate(4000, seed=0)
        est = NRE(PRIOR, gamma=gamma, K=K, width=64, blocks=2, seed=0)
        return est.fit(theta, x, batch_size=128, lr=2e-3, max_epochs=40, patience=8, progress_bar=False)
    finally:
        torch.set_num_threads(before)
