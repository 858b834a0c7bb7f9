r"""The Ornstein–Uhlenbeck process with a stationary low-fidelity level (paper 1, Section 5.2, Appendix B.3).

With :math:`\theta = (\gamma, \mu, \sigma) \sim \mathcal{U}([0.1, 1] \times [0.1, 3] \times [0.1, 0.6])`,
:math:`x_0 = 2`, :math:`\Delta t = 0.1` and :math:`N = T/\Delta t = 100` steps driven by one standard normal
each, :math:`u_{0:N-1} \sim \mathcal{N}(0, I)`:

* **high fidelity** — Euler–Maruyama for :math:`dx = \gamma(\mu - x)\,dt + \sigma\,dW`:
  :math:`x_{t+1} = x_t + \gamma(\mu - x_t)\Delta t + \sigma \sqrt{\Delta t}\, u_t`;
* **low fidelity** — the stationary law, with the same noise:
  :math:`x_{t+1} = \mu + \frac{\sigma}{\sqrt{2\gamma}}\, u_t`.

The appendix prints the drift as :math:`\gamma(\mu - x_t)` without :math:`\Delta t`; that is a typo — the
scheme is named Euler–Maruyama and its low level is the SDE's stationary law
:math:`\mathcal{N}(\mu, \sigma^2 / 2\gamma)`, which the discretisation with :math:`\Delta t` in the drift
approaches — so the drift here is multiplied by :math:`\Delta t`.

The 100-step path :math:`x_{1:N}` is summarised by 5 points at log-spaced indices ``(0, 3, 10, 31, 99)``
(``summary=False`` returns the whole path).  Given :math:`\theta` the high-fidelity summary is Gaussian
(the scheme is linear in :math:`u`) with mean :math:`\mu + (x_0 - \mu) a^t`, :math:`a = 1 - \gamma\Delta t`, and
covariance :math:`\sigma^2 \Delta t\, a^{|t - s|} (1 - a^{2\min(t, s)}) / (1 - a^2)` between times ``t``
and ``s``: :meth:`OrnsteinUhlenbeck.log_likelihood` is exact, and the reference posterior is MCMC on it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..priors import BoxUniform
from ..simulation.ladder import FidelityLadder
from ..simulation.simulators import Simulator
from . import register
from ._mcmc_reference import mcmc_reference
from .base import Task

__all__ = ["OrnsteinUhlenbeck", "ou_euler_maruyama", "ou_stationary", "SUMMARY_INDICES"]

#: log-spaced subsample of the 100-step path used as the summary (paper 1, Appendix B.3)
SUMMARY_INDICES = (0, 3, 10, 31, 99)


def ou_euler_maruyama(theta: Tensor, u: Tensor, *, dt: float = 0.1, x0: float = 2.0) -> Tensor:
    """High fidelity: Euler–Maruyama path ``(n, N)`` of the OU process driven by ``u (n, N)``."""
    theta, u = theta.double(), u.double()
    gamma, mu, sigma = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    a = 1.0 - gamma * dt
    drift = gamma * mu * dt
    noise = sigma * math.sqrt(dt) * u
    x = torch.full_like(gamma, float(x0))
    out = torch.empty_like(u)
    for t in range(u.shape[1]):
        x = a * x + drift + noise[:, t:t + 1]
        out[:, t:t + 1] = x
    return out


def ou_stationary(theta: Tensor, u: Tensor) -> Tensor:
    """Low fidelity: iid draws ``(n, N)`` of the stationary law ``N(mu, sigma^2 / (2 gamma))`` from ``u (n, N)``."""
    theta, u = theta.double(), u.double()
    gamma, mu, sigma = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    return mu + sigma / torch.sqrt(2.0 * gamma) * u


class _Level:
    """Picklable generator of one OU level."""

    def __init__(self, fidelity: str, dt: float, x0: float, indices: tuple[int, ...] | None):
        self.fidelity, self.dt, self.x0, self.indices = fidelity, dt, x0, indices

    def __call__(self, theta: Tensor, u: Tensor) -> Tensor:
        x = ou_euler_maruyama(theta, u, dt=self.dt, x0=self.x0) if self.fidelity == "high" else ou_stationary(theta, u)
        if self.indices is not None:
            x = x[:, list(self.indices)]
        return x.float()


class _Noise:
    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.steps, generator=generator, dtype=torch.float64)


@register("ou")
class OrnsteinUhlenbeck(Task):
    """Ornstein–Uhlenbeck process (paper 1, Appendix B.3) with a two-level ladder.

    Arguments:
        T, dt, x0: horizon, step and initial value (``N = round(T / dt)`` steps).
        summary: summarise the path by the points at :data:`SUMMARY_INDICES` (default) or return all ``N``.
        chains, warmup, thin: settings of the reference MCMC.

    Example:
        >>> task = OrnsteinUhlenbeck()
        >>> task.simulator(task.prior.sample((2,)), seed=0).shape
        torch.Size([2, 5])
        >>> [s.name for s in task.ladder().levels]
        ['ou_low', 'ou_high']
    """

    reference_kind = "mcmc"
    dim_theta = 3

    def __init__(self, T: float = 10.0, dt: float = 0.1, x0: float = 2.0, summary: bool = True,
                 chains: int = 200, warmup: int = 100, thin: int = 2, n_proposals: int = 20_000):
        if not (T > 0 and dt > 0 and T >= dt):
            raise ValueError(f"need T >= dt > 0, got T={T!r}, dt={dt!r}")
        self.T, self.dt, self.x0 = float(T), float(dt), float(x0)
        self.steps = int(round(T / dt))
        if summary and self.steps <= max(SUMMARY_INDICES):
            raise ValueError(f"the summary needs at least {max(SUMMARY_INDICES) + 1} steps, got {self.steps}")
        self.indices = SUMMARY_INDICES if summary else None
        self.dim_x = len(SUMMARY_INDICES) if summary else self.steps
        self.prior = BoxUniform([0.1, 0.1, 0.1], [1.0, 3.0, 0.6])
        self.noise = _Noise(self.steps)
        cfg = {"T": self.T, "dt": self.dt, "x0": self.x0, "summary": bool(summary)}
        self.simulator = Simulator(_Level("high", self.dt, self.x0, self.indices), noise=self.noise, name="ou_high",
                                   config={**cfg, "fidelity": "high"})
        self.low_simulator = Simulator(_Level("low", self.dt, self.x0, self.indices), noise=self.noise,
                                       name="ou_low", config={**cfg, "fidelity": "low"})
        self.chains, self.warmup, self.thin, self.n_proposals = int(chains), int(warmup), int(thin), int(n_proposals)
        self.diagnostics: dict = {}

    def ladder(self, costs=None) -> FidelityLadder:
        """``[low, high]`` sharing the step noise ``u (n, N)``; nominal costs ``[1, N]`` unless given."""
        return FidelityLadder([self.low_simulator, self.simulator], noise=self.noise,
                              costs=costs if costs is not None else [1.0, float(self.steps)])

    # -- exact likelihood of the high-fidelity output ------------------------------------------
    def _moments(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        theta = theta.double()
        gamma, mu, sigma = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        idx = torch.tensor(self.indices if self.indices is not None else range(self.steps), dtype=torch.float64)
        t = idx + 1.0  # x at index i is the state after i + 1 steps
        a = (1.0 - gamma * self.dt).clamp(-1 + 1e-12, 1 - 1e-12)  # (m, 1)
        mean = mu + (self.x0 - mu) * a ** t
        tt, ss = t[:, None], t[None, :]
        lag, short = (tt - ss).abs(), torch.minimum(tt, ss)
        a3 = a.unsqueeze(-1)
        cov = (sigma**2 * self.dt).unsqueeze(-1) * a3**lag * (1 - a3 ** (2 * short)) / (1 - a3**2)
        return mean, cov

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """Exact ``log p(x | theta)`` of the high-fidelity output for ``theta (m, 3)`` and one ``x (dim_x,)``."""
        theta = torch.as_tensor(theta).double()
        mean, cov = self._moments(theta)
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        return dist.log_prob(torch.as_tensor(x).double().reshape(1, -1)).float()

    def _log_post64(self, theta: Tensor, x: Tensor) -> Tensor:
        low, high = self.prior.low.double(), self.prior.high.double()
        inside = ((theta >= low) & (theta <= high)).all(-1)
        out = torch.full(theta.shape[:1], -float("inf"), dtype=torch.float64)
        if inside.any():
            mean, cov = self._moments(theta[inside])
            out[inside] = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(
                x.double().reshape(1, -1))
        return out

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        low, high = self.prior.low.double(), self.prior.high.double()
        props = low + (high - low) * torch.rand(self.n_proposals, 3, generator=g, dtype=torch.float64)
        samples, r = mcmc_reference(lambda th: self._log_post64(th, x), props, n, seed=seed + 1,
                                    chains=self.chains, warmup=self.warmup, thin=self.thin, name=self.name)
        self.diagnostics = {"rhat": r}
        return samples

    def cache_key(self) -> str:
        return f"{self.name}_T{self.T:g}_dt{self.dt:g}_x0{self.x0:g}_{'summary' if self.indices else 'path'}"
