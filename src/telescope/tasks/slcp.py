"""SLCP: simple likelihood, complex posterior.

The task of the SBI benchmark (Lueckmann et al., 2021, "slcp"; Papamakarios et al., 2019):

.. math::
    \\theta \\sim \\mathcal{U}([-3, 3]^5), \\quad m = (\\theta_1, \\theta_2), \\quad
    s_1 = \\theta_3^2, \\ s_2 = \\theta_4^2, \\ \\rho = \\tanh \\theta_5,

.. math::
    x = (x_1, \\dots, x_4), \\quad x_j \\overset{iid}{\\sim}
    \\mathcal{N}\\Big(m, \\begin{pmatrix} s_1^2 & \\rho s_1 s_2 \\\\ \\rho s_1 s_2 & s_2^2 \\end{pmatrix}\\Big),

flattened to 8 numbers.  The likelihood is a product of bivariate Gaussians, but the
posterior has four symmetric modes: it is invariant under ``theta_3 -> -theta_3`` and
``theta_4 -> -theta_4``.

**Reference** (``reference_kind = "mcmc"``): slice sampling against the exact likelihood with
many SIR-initialised chains, on one of the four modes (``theta_3, theta_4 > 0``) and in a
non-centred parametrisation: given ``(theta_3, theta_4, theta_5)`` the likelihood is Gaussian in
``m``, ``N(m; xbar, C / 4)``, so the sampler moves ``w = A^{-1} (m - xbar)`` with
``A = chol(C / 4)`` (Jacobian ``|A|``) instead of ``m``, which removes the funnel between the
location and the scales.  Every sample then gets independent random signs on ``theta_3`` and
``theta_4``: exact, by the symmetry, and all four modes are covered equally.  Split-R-hat of the
one-mode chains is stored in ``self.diagnostics["rhat"]``; at 1.01 or above the chains are rerun
with twice the warm-up and thinning (twice), and a warning is raised if they still fail.

**Tall data** (paper 3 Section 4.2): ``n_obs`` observations pool ``4 n_obs`` bivariate draws, so
the same non-centred sampler runs with ``xbar`` over all of them and ``A = chol(C / (4 n_obs))``.

**Observations** (``observations="sbibm"``, the default): the benchmark's ten stored observations, their
true parameters and its 10,000 reference posterior samples each, read from the package data
(:mod:`telescope.tasks._sbibm`; copied from the sbibm 1.1.0 wheel, MIT licence), so that comparisons with
published numbers are like for like; ``reference="mcmc"`` gives this library's own reference on them
instead.  ``observations="telescope"`` gives this library's own draws (fixed seeds) with its own references.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ..priors import BoxUniform
from ..simulation.simulators import Simulator
from . import register
from ._benchmark import TallData
from ._mcmc_reference import mcmc_reference
from ._sbibm import SBIBMObservations
from .base import Task

__all__ = ["SLCP"]

_N_DRAWS = 4
RHAT_MAX = 1.01  # the reference's split-R-hat must stay below this (else it is rerun, then warned about)


def _params(theta: Tensor):
    s1, s2 = theta[..., 2] ** 2, theta[..., 3] ** 2
    return theta[..., 0], theta[..., 1], s1, s2, torch.tanh(theta[..., 4])


@register("slcp")
class SLCP(SBIBMObservations, TallData, Task):
    """Uniform prior on ``[-3, 3]^5``; four iid bivariate Gaussian draws (8-d ``x``).

    Arguments:
        chains, warmup, thin: settings of the reference MCMC.
        n_proposals: uniform draws on the folded box resampled (SIR) into the initial chains.
        observations, reference: where the observations, true parameters and reference samples come from
            (:class:`~telescope.tasks._sbibm.SBIBMObservations`; sbibm's stored files by default).
    """

    reference_kind = "mcmc"
    dim_theta = 5
    dim_x = 2 * _N_DRAWS
    sbibm_name = "slcp"

    def __init__(self, chains: int = 1000, warmup: int = 300, thin: int = 6, n_proposals: int = 100_000,
                 observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        self.prior = BoxUniform(torch.full((5,), -3.0), torch.full((5,), 3.0))
        self.simulator = Simulator(self._generate, noise=self._noise, name="slcp", config={})
        self.chains, self.warmup, self.thin, self.n_proposals = int(chains), int(warmup), int(thin), int(n_proposals)
        self.diagnostics: dict = {}

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 8)``: standard normals, two per draw."""
        return torch.randn(n, self.dim_x, generator=generator)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        m1, m2, s1, s2, rho = (p.unsqueeze(-1) for p in _params(theta))
        z = u.to(theta).reshape(theta.shape[0], _N_DRAWS, 2)
        x1 = m1 + s1 * z[..., 0]
        x2 = m2 + s2 * (rho * z[..., 0] + torch.sqrt(1 - rho**2) * z[..., 1])
        return torch.stack([x1, x2], -1).reshape(theta.shape[0], self.dim_x)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, 5)`` with one ``x (8,)`` or paired rows ``x (m, 8)``."""
        return self._ll64(theta, x).float()

    def _ll64(self, theta: Tensor, x: Tensor, draws: int = _N_DRAWS) -> Tensor:
        """Summed over ``draws`` bivariate rows per ``x`` (``4 n_obs`` for a tall set passed flat)."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, draws, 2)
        m1, m2, s1, s2, rho = (p.unsqueeze(-1) for p in _params(theta))
        d1 = (x[..., 0] - m1) / s1
        d2 = (x[..., 1] - m2) / s2
        one_m = 1 - rho**2
        q = (d1**2 - 2 * rho * d1 * d2 + d2**2) / one_m
        ll = (-math.log(2 * math.pi) - torch.log(s1 * s2) - 0.5 * torch.log(one_m) - 0.5 * q).sum(-1)
        return torch.where(torch.isnan(ll), torch.full_like(ll, -float("inf")), ll)

    # -- reference: non-centred, folded parametrisation ------------------------------------
    # Given (theta_3, theta_4, theta_5), the likelihood of k bivariate draws is Gaussian in
    # m = (theta_1, theta_2): N(m; xbar, C / k) times a function of C alone (k = 4 for one x,
    # 4 n_obs for a tall set).  Sampling w = A^{-1} (m - xbar), with A = chol(C / k), instead of
    # m removes the funnel between the location and the scales (e.g. theta_4 near 0 pins
    # theta_2); the Jacobian |A| is part of the target.  The target is also folded onto
    # theta_3, theta_4 >= 0, one of the four symmetric modes.
    @staticmethod
    def _chol_scaled(phi: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        s1, s2, rho = phi[:, 0] ** 2, phi[:, 1] ** 2, torch.tanh(phi[:, 2])
        c = 1 / math.sqrt(k)
        return c * s1, c * rho * s2, c * s2 * torch.sqrt(1 - rho**2)  # a11, a21, a22

    def _from_w(self, v: Tensor, xbar: Tensor, k: int) -> Tensor:
        a11, a21, a22 = self._chol_scaled(v[:, 2:], k)
        m1 = xbar[0] + a11 * v[:, 0]
        m2 = xbar[1] + a21 * v[:, 0] + a22 * v[:, 1]
        return torch.cat([torch.stack([m1, m2], -1), v[:, 2:]], -1)

    def _to_w(self, theta: Tensor, xbar: Tensor, k: int) -> tuple[Tensor, Tensor]:
        a11, a21, a22 = self._chol_scaled(theta[:, 2:], k)
        w1 = (theta[:, 0] - xbar[0]) / a11
        w2 = (theta[:, 1] - xbar[1] - a21 * w1) / a22
        return torch.cat([torch.stack([w1, w2], -1), theta[:, 2:]], -1), torch.log(a11 * a22)

    def _log_target_w(self, v: Tensor, x: Tensor, xbar: Tensor) -> Tensor:
        k = x.numel() // 2
        theta = self._from_w(v, xbar, k)
        a11, _, a22 = self._chol_scaled(v[:, 2:], k)
        inside = (theta.abs() <= 3).all(-1) & (v[:, 2:4] > 0).all(-1)
        lp = self._ll64(theta, x, draws=k) + torch.log(a11 * a22)
        lp = torch.where(torch.isnan(lp), torch.full_like(lp, -float("inf")), lp)
        return torch.where(inside, lp, torch.full_like(lp, -float("inf")))

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        return self._reference_set(x.reshape(1, -1), n, seed)

    def _reference_set(self, x_set: Tensor, n: int, seed: int) -> Tensor:
        """Reference for ``n_obs`` iid observations ``x_set (n_obs, 8)``: their ``4 n_obs`` draws pooled."""
        g = torch.Generator().manual_seed(int(seed))
        x = x_set.double().reshape(-1)
        k = x.numel() // 2
        xbar = x.reshape(k, 2).mean(0)
        low, high = self.prior.low.double(), self.prior.high.double()
        props = low + (high - low) * torch.rand(self.n_proposals, 5, generator=g, dtype=torch.float64)
        props[:, 2:4] = props[:, 2:4].abs().clamp_min(1e-6)  # uniform on the folded box
        v, log_det = self._to_w(props, xbar, k)  # proposal density in w-coordinates: |A| (uniform in theta)
        for attempt in range(3):  # split-R-hat < 1.01, else again with twice the warm-up and thinning
            w, r = mcmc_reference(lambda u: self._log_target_w(u, x, xbar), v, n, seed=seed + 1 + attempt,
                                  proposal_log_prob=log_det, chains=self.chains, warmup=self.warmup * 2**attempt,
                                  thin=self.thin * 2**attempt, name=self.name, warn=False)
            if torch.isfinite(r).all() and r.max() < RHAT_MAX:
                break
            if not torch.isfinite(r).all():  # a diagnostic that cannot be computed is not a failed run
                warnings.warn(f"{self.name} reference MCMC: split-R-hat could not be computed ({r.tolist()}); "
                              f"the samples are returned unchecked", RuntimeWarning, stacklevel=2)
                break
        else:
            warnings.warn(f"{self.name} reference MCMC: split-R-hat {[round(v, 4) for v in r.tolist()]} >= {RHAT_MAX} "
                          f"after 3 runs (the last with warm-up {self.warmup * 4}, thinning {self.thin * 4})",
                          RuntimeWarning, stacklevel=2)
        self.diagnostics = {"rhat": r, "attempts": attempt + 1}
        samples = self._from_w(w, xbar, k)
        signs = torch.randint(0, 2, (samples.shape[0], 2), generator=g).double() * 2 - 1
        samples[:, 2:4] = samples[:, 2:4] * signs
        return samples
