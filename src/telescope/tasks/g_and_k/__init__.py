"""The g-and-k distribution: a quantile-function model with a numerically exact likelihood.

Paper 1 (multilevel neural SBI), Appendix B.1.  With ``theta = (A, B, g, k_4)`` the quantile
function is

.. math::
    G_\\theta(z) = A + B \\Big(1 + c\\, \\frac{1 - e^{-g z}}{1 + e^{-g z}}\\Big) (1 + z^2)^{\\log k_4}\\, z,
    \\qquad c = 0.8, \\qquad z = \\Phi^{-1}(u), \\quad u \\sim \\mathcal{U}(0, 1),

(the usual kurtosis parameter is ``k = log k_4``; the fraction is ``tanh(g z / 2)``).  The prior
is ``A, B, g ~ U(0, 3)`` and ``k_4 ~ U(0, e^{0.5})``; an observation is ``n_draws`` iid draws.

**Simulator.**  A generator: the noise is ``u ~ U(0, 1)^{n_draws}`` (float64) and
``x = G_theta(Phi^{-1}(u))``.  :func:`gk_quantile` is the high-fidelity quantile function on
``z``; a low-fidelity simulator can reuse the same ``u`` with another ``z(u)``.

**Likelihood.**  For ``k < -1/2`` (and for some skewed settings) ``G_theta`` is not monotone,
so the density is the sum over *all* roots ``z_r`` of ``G_theta(z) = x``:

.. math::
    p(x \\mid \\theta) = \\sum_r \\frac{\\varphi(z_r)}{|G'_\\theta(z_r)|}.

Roots are bracketed on a fixed grid of ``z in [-10, 10]`` (denser near 0, ``z = sinh(s)`` with
uniform ``s``) by sign changes of ``G_theta - x`` — via ``searchsorted`` for the rows whose grid
values are increasing, by a dense comparison for the others — and refined by safeguarded Newton
steps with the analytic derivative.  Roots with ``|z| > 10`` (mass below ``1e-22``) are ignored.

**Reference** (``reference_kind = "mcmc"``).  When ``log k_4 < -1/2`` the support of ``x`` is
bounded and the density is singular (as ``1/sqrt``) at its ends, so the posterior piles up on
thin curved sheets where the support just covers the data; random-walk and slice samplers mix
over hundreds of iterations there.  The reference therefore runs in two steps: SIR-initialised
random-walk Metropolis chains locate the posterior (a short run), then adaptive importance
resampling from a Gaussian mixture fitted to them (population Monte Carlo, with a defensive
prior component) corrects the result with the exact likelihood; see
:func:`telescope.tasks._mcmc_reference.mixture_importance_resampling`.  ``self.diagnostics``
holds the importance-sampling effective sample size (a warning is raised below ``2 n``) and the
R-hat of the short chains (informative only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...priors import BoxUniform
from ...simulation.simulators import Simulator
from .. import register
from .._mcmc_reference import mcmc_reference, mixture_importance_resampling
from ..base import Task
from .distribution import C, gk_log_density, gk_quantile, gk_quantile_derivative, standard_normal_quantile
from .ladder import CONSTANTS, erfinv_taylor, gk_ladder, gk_summaries, low_fidelity_normal_quantile

__all__ = ["GAndK", "gk_quantile", "gk_quantile_derivative", "gk_log_density", "standard_normal_quantile",
           "CONSTANTS", "erfinv_taylor", "low_fidelity_normal_quantile", "gk_summaries", "gk_ladder"]


@register("g_and_k")
class GAndK(Task):
    """The g-and-k distribution with ``n_draws`` iid draws per observation (paper 1, Appendix B.1).

    Arguments:
        n_draws: iid draws per observation (``dim_x``).
        chains, warmup, thin, kernel: settings of the reference MCMC (random-walk Metropolis by
            default: one likelihood evaluation per iteration for all chains).
        population: samples kept per chain, to which the importance proposal is fitted.
        n_proposals: prior draws resampled (SIR) into the initial chains.
        is_proposals: importance-sampling draws per batch (adaptation rounds use half as many).

    Example:
        >>> task = GAndK(n_draws=5)
        >>> task.simulator(task.prior.sample((3,)), seed=0).shape
        torch.Size([3, 5])
    """

    reference_kind = "mcmc"
    dim_theta = 4

    def __init__(self, n_draws: int = 10, chains: int = 500, warmup: int = 100, thin: int = 10,
                 population: int = 8, n_proposals: int = 100_000, is_proposals: int = 100_000,
                 kernel: str = "rwm"):
        if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
            raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
        self.n_draws = self.dim_x = n_draws
        self.prior = BoxUniform([0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, math.exp(0.5)])
        self.simulator = Simulator(self._generate, noise=self._noise, name="g_and_k",
                                   config={"n_draws": n_draws, "c": C, "fidelity": "high"})
        self.chains, self.warmup, self.thin, self.n_proposals = int(chains), int(warmup), int(thin), int(n_proposals)
        self.kernel, self.population, self.is_proposals = kernel, int(population), int(is_proposals)
        self.diagnostics: dict = {}

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        """``u (n, n_draws)`` uniform on ``[0, 1)`` in float64."""
        return torch.rand(n, self.n_draws, generator=generator, dtype=torch.float64)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return gk_quantile(theta.double(), standard_normal_quantile(u)).to(theta.dtype)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, 4)`` with one ``x (n_draws,)`` or paired rows ``x (m, n_draws)``."""
        return self._ll64(theta, x).float()

    def _ll64(self, theta: Tensor, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        return gk_log_density(torch.as_tensor(theta), x.reshape(-1, self.n_draws) if x.dim() > 1 else x).sum(-1)

    def _log_post64(self, theta: Tensor, x: Tensor) -> Tensor:
        inside = ((theta >= self.prior.low.double()) & (theta <= self.prior.high.double())).all(-1)
        out = torch.full(theta.shape[:1], -float("inf"), dtype=torch.float64)
        if inside.any():
            out[inside] = self._ll64(theta[inside], x)
        return out

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        low, high = self.prior.low.double(), self.prior.high.double()
        props = low + (high - low) * torch.rand(self.n_proposals, 4, generator=g, dtype=torch.float64)

        def log_post(th: Tensor) -> Tensor:
            return self._log_post64(th, x.double())

        # 1. locate the posterior: SIR-initialised random-walk Metropolis (mixes slowly on the
        #    thin, singular ridges of non-monotone cases, hence step 2)
        pop, r = mcmc_reference(log_post, props, self.chains * self.population, seed=seed + 1,
                                chains=self.chains, warmup=self.warmup, thin=self.thin, kernel=self.kernel,
                                warn=False, name=self.name)
        # 2. correct it: importance resampling from a mixture fitted to the chains
        samples, diag = mixture_importance_resampling(log_post, pop, n, prior=self.prior, seed=seed + 2,
                                                      n_proposals=self.is_proposals,
                                                      round_size=max(1, self.is_proposals // 2), name=self.name)
        self.diagnostics = {"rhat": r, **diag}
        return samples

    def cache_key(self) -> str:
        return f"{self.name}_n{self.n_draws}"

    def ladder(self, constant: str | float = "pi/2", summary: bool = False, costs=(1.0, 2.0)):
        """Seed-matched ``[low, high]`` fidelity ladder on this task's ``n_draws`` (paper 1, Appendix B.1).

        The low level replaces the exact normal quantile by its third-order Taylor approximation; see
        :func:`telescope.tasks.g_and_k.gk_ladder` for ``constant`` (``"pi/2"`` as printed in the paper,
        default, or the Maclaurin ``"sqrt(pi)/2"``) and ``summary``.
        """
        return gk_ladder(self.n_draws, constant=constant, summary=summary, costs=costs)
