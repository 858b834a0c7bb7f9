"""SIR: an epidemic ODE observed through binomial counts, with an MCMC reference.

The task ``sir`` of the SBI benchmark (Lueckmann et al., 2021, task T.9).  The
susceptible–infected–recovered model in a population of ``N = 10^6`` with one initial infection,

.. math::
    \\dot S = -\\beta \\frac{S I}{N}, \\quad \\dot I = \\beta \\frac{S I}{N} - \\gamma I, \\quad
    \\dot R = \\gamma I, \\qquad (S, I, R)(0) = (N - 1, 1, 0),

with priors ``beta ~ LogNormal(log 0.4, 0.5)`` (contact rate) and ``gamma ~ LogNormal(log 1/8, 0.2)``
(recovery rate), is observed at 10 evenly spaced days ``t_k = 17 k``, ``k = 0..9`` (the benchmark's
subsampling of a daily grid over 160 days), through ``x_k ~ Binomial(1000, I(t_k) / N)``.

**Solver.**  The ODE is solved for the fractions ``(s, i) = (S, I) / N`` (``r`` is not needed) in
float64 by fixed-step classical RK4 (:func:`telescope.tasks._benchmark.rk4`, step ``dt = 0.1`` day
by default), vectorised over the whole batch of parameters.  The tests compare it with
``scipy.integrate.solve_ivp`` (DOP853, ``rtol = 1e-10``).

**Likelihood** (tractable given the ODE solution): ``sum_k log Binomial(x_k; 1000, i(t_k))``.

**Reference** (``reference_kind = "mcmc"``): whitened random-walk Metropolis in ``log theta`` (the prior is
log-normal, the posterior is narrow), initialised by SIR of prior draws, with split-R-hat < 1.01
and a bulk-ESS check (:func:`telescope.tasks._benchmark.checked_mcmc`); computed lazily per
observation and cached.

**Checked against the benchmark's definition** (repository ``sbi-benchmark/sbibm``, file
``sbibm/tasks/sir/task.py``, read through the code search of this project): ``N = 10^6``,
``(S, I, R)(0) = (N - 1, 1, 0)``, priors ``LogNormal(log 0.4, 0.5)`` and ``LogNormal(log 0.125, 0.2)``,
the ODE saved daily over 160 days and subsampled every 17th day (``t_k = 17 k``, ten points, the
infected compartment only), ``x_k ~ Binomial(1000, clip(I(t_k) / N, 0, 1))``: all as here.

**Observations** (``observations="sbibm"``, the default): the benchmark's ten stored observations,
their true parameters and its 10,000 reference posterior samples each, read from the package data
(:mod:`telescope.tasks._sbibm`; copied from the sbibm 1.1.0 wheel, MIT licence), so that comparisons
with published numbers are like for like; ``reference="mcmc"`` samples this library's own reference
on them instead.  ``observations="telescope"`` gives this library's own draws (fixed seeds) with
its own references.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..priors import LogNormal
from ..simulation.simulators import Simulator
from . import register
from ._benchmark import ODEReferenceTask, rk4
from ._sbibm import SBIBMObservations

__all__ = ["SIR", "sir_infected"]

POPULATION = 1_000_000.0
TOTAL_COUNT = 1000
TIMES = tuple(17.0 * k for k in range(10))


def sir_infected(theta: Tensor, times=TIMES, dt: float = 0.1, population: float = POPULATION) -> Tensor:
    """Infected fractions ``I(t) / N`` ``(m, len(times))`` (float64) for ``theta = (beta, gamma) (m, 2)``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    beta, gamma = theta[:, :1], theta[:, 1:2]

    def f(y: Tensor) -> Tensor:
        s, i = y[:, :1], y[:, 1:]
        inf = beta * s * i
        return torch.cat([-inf, inf - gamma * i], 1)

    y0 = torch.tensor([[(population - 1) / population, 1 / population]], dtype=torch.float64)
    y = rk4(f, y0.expand(theta.shape[0], 2), torch.tensor(times, dtype=torch.float64), dt)
    return y[..., 1]


@register("sir")
class SIR(SBIBMObservations, ODEReferenceTask):
    """SIR epidemic with log-normal priors; 10 binomial counts of the infected (``x`` in ``0..1000``).

    Arguments:
        dt: RK4 step in days.
        chains, warmup, thin, kernel: settings of the reference MCMC (random-walk Metropolis by
            default: one ODE solve per iteration for all chains).
        n_proposals: prior draws resampled (SIR) into the initial chains.
        strict: a reference failing its convergence checks raises (else warns).
        observations: ``"sbibm"`` (the benchmark's stored observations and true parameters) or
            ``"telescope"`` (this library's own draws).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's MCMC; the default otherwise).
    """

    dim_theta = 2
    dim_x = len(TIMES)
    sbibm_name = "sir"

    def __init__(self, dt: float = 0.1, chains: int = 500, warmup: int = 500, thin: int = 10,
                 n_proposals: int = 10_000, strict: bool = True, kernel: str = "rwm",
                 observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt!r}")
        self.dt = float(dt)
        self.prior = LogNormal([math.log(0.4), math.log(1 / 8)], [0.5, 0.2])
        self.simulator = Simulator(self._simulate, name="sir",
                                   config={"dt": self.dt, "N": POPULATION, "times": list(TIMES), "count": TOTAL_COUNT})
        self._init_mcmc(chains, warmup, thin, n_proposals, strict, kernel=kernel)

    def infected(self, theta: Tensor) -> Tensor:
        """``I(t_k) / N`` ``(m, 10)`` (float64), clamped to ``[0, 1]``."""
        return sir_infected(theta, dt=self.dt).clamp(0.0, 1.0)

    def _simulate(self, theta: Tensor) -> Tensor:
        p = self.infected(theta)
        p = torch.where(torch.isfinite(p), p, torch.zeros_like(p))
        return torch.binomial(torch.full_like(p, float(TOTAL_COUNT)), p).to(theta.dtype)

    def _ll_given(self, p: Tensor, x: Tensor) -> Tensor:
        n = float(TOTAL_COUNT)
        log_c = math.lgamma(n + 1) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)
        ll = log_c + torch.xlogy(x, p) + torch.xlogy(n - x, 1 - p)
        ll = torch.where(torch.isnan(ll), torch.full_like(ll, -float("inf")), ll)
        return ll.sum(-1)

    def _solve(self, theta: Tensor) -> Tensor:
        return self.infected(theta)
