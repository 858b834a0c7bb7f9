"""Lotka–Volterra: predator–prey ODE with log-normal observation noise, with an MCMC reference.

The task ``lotka_volterra`` of the SBI benchmark (Lueckmann et al., 2021, task T.10):

.. math::
    \\dot u = \\alpha u - \\beta u v, \\qquad \\dot v = -\\gamma v + \\delta u v, \\qquad (u, v)(0) = (30, 1),

with ``theta = (alpha, beta, gamma, delta)`` and log-normal priors
``alpha, gamma ~ LogNormal(-0.125, 0.5)``, ``beta, delta ~ LogNormal(-3, 0.5)``.  Prey ``u`` and
predators ``v`` are observed at 10 evenly spaced times ``t_k = 2.1 k``, ``k = 0..9`` (the
benchmark's subsampling of a 0.1-spaced grid over 20 time units) with log-normal noise,
``x = (u_obs(t_0..t_9), v_obs(t_0..t_9))``, ``log w_obs ~ N(log clip(w, 1e-10, 1e4), 0.1^2)``
(20-d ``x``).

**Solver.**  The ODE is solved in log coordinates, ``(log u)' = alpha - beta v`` and
``(log v)' = -gamma + delta u``, which keeps both populations positive, in float64 by fixed-step
classical RK4 (:func:`telescope.tasks._benchmark.rk4`; step ``dt = 0.01`` by default) vectorised
over the whole batch of parameters.  The tests compare it with ``scipy.integrate.solve_ivp``
(DOP853, ``rtol = 1e-10``).

**Likelihood** (tractable given the ODE solution): a sum of 20 log-normal log densities.  The
simulator is a generator ``x = w(t) exp(0.1 u)`` with ``u ~ N(0, I_20)``.

**Reference** (``reference_kind = "mcmc"``): whitened random-walk Metropolis in ``log theta``
(one ODE solve per iteration for all chains), initialised by SIR of prior draws, with split-R-hat
< 1.01 and a bulk-ESS check (:func:`telescope.tasks._benchmark.checked_mcmc`); computed lazily per
observation and cached.

**Checked against the benchmark's definition** (repository ``sbi-benchmark/sbibm``, file
``sbibm/tasks/lotka_volterra/task.py``, read through the code search of this project): priors
``LogNormal(-0.125, 0.5)`` / ``LogNormal(-3, 0.5)``, initial state ``(30, 1)``, solution saved every
0.1 over 20 time units and subsampled every 21st point (``t_k = 2.1 k``, ten points, prey block then
predator block), log-normal noise of scale 0.1 around ``log`` of the solution clipped to
``[1e-10, 1e4]`` — the upper clip was missing here and is now applied, in the simulator and the
likelihood alike.

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

from ..priors import LogNormal
from ..simulation.simulators import Simulator
from . import register
from ._benchmark import ODEReferenceTask, rk4
from ._sbibm import SBIBMObservations

__all__ = ["LotkaVolterra", "lv_solution"]

TIMES = tuple(2.1 * k for k in range(10))
INITIAL = (30.0, 1.0)
NOISE = 0.1
CLIP_LOW, CLIP_HIGH = 1e-10, 1e4  # the benchmark clips the ODE solution before the noise


def lv_solution(theta: Tensor, times=TIMES, dt: float = 0.01, initial=INITIAL) -> Tensor:
    """Populations ``(m, len(times), 2)`` (prey, predator; float64) for ``theta (m, 4)``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    a, b, c, d = (theta[:, j : j + 1] for j in range(4))

    def f(y: Tensor) -> Tensor:
        w = torch.exp(y)
        return torch.cat([a - b * w[:, 1:], -c + d * w[:, :1]], 1)

    y0 = torch.log(torch.tensor([initial], dtype=torch.float64)).expand(theta.shape[0], 2)
    return torch.exp(rk4(f, y0, torch.tensor(times, dtype=torch.float64), dt))


@register("lotka_volterra")
class LotkaVolterra(SBIBMObservations, ODEReferenceTask):
    """Lotka–Volterra with log-normal priors and log-normal noise; ``x`` is 10 prey then 10 predator counts.

    Arguments:
        dt: RK4 step.
        chains, warmup, thin, kernel: settings of the reference MCMC.
        n_proposals: prior draws resampled (SIR) into the initial chains.
        strict: a reference failing its convergence checks raises (else warns).
        observations, reference: where the observations, true parameters and reference samples come from
            (:class:`~telescope.tasks._sbibm.SBIBMObservations`; sbibm's stored files by default).
    """

    dim_theta = 4
    dim_x = 2 * len(TIMES)
    sbibm_name = "lotka_volterra"

    def __init__(self, dt: float = 0.01, chains: int = 1000, warmup: int = 300, thin: int = 30,
                 n_proposals: int = 20_000, strict: bool = True, kernel: str = "rwm",
                 observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt!r}")
        self.dt = float(dt)
        self.prior = LogNormal([-0.125, -3.0, -0.125, -3.0], [0.5, 0.5, 0.5, 0.5])
        self.simulator = Simulator(self._generate, noise=self._noise, name="lotka_volterra",
                                   config={"dt": self.dt, "times": list(TIMES), "initial": list(INITIAL),
                                           "noise": NOISE})
        self._init_mcmc(chains, warmup, thin, n_proposals, strict, kernel=kernel)

    def log_means(self, theta: Tensor) -> Tensor:
        """``log clip(w(t_k), 1e-10, 1e4)`` ``(m, 20)`` (float64): the 10 prey values, then the 10 predator values."""
        w = lv_solution(theta, dt=self.dt)
        return torch.log(w.clamp(CLIP_LOW, CLIP_HIGH)).transpose(1, 2).reshape(w.shape[0], -1)

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim_x, generator=generator)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return torch.exp(self.log_means(theta) + NOISE * u.double()).to(theta.dtype)

    def _ll_given(self, m: Tensor, x: Tensor) -> Tensor:
        lx = torch.log(x)
        ll = -0.5 * ((lx - m) / NOISE) ** 2 - lx - math.log(NOISE * math.sqrt(2 * math.pi))
        ll = ll.sum(-1)
        return torch.where(torch.isnan(ll), torch.full_like(ll, -float("inf")), ll)

    def _solve(self, theta: Tensor) -> Tensor:
        return self.log_means(theta)
