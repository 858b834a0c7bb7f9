"""SLCP with distractors: the SLCP posterior hidden in 100-d data.

The task ``slcp_distractors`` of the SBI benchmark (Lueckmann et al., 2021, task T.4).  The
8 informative numbers of :mod:`telescope.tasks.slcp` (four bivariate Gaussian draws whose mean
and covariance depend on ``theta``) are joined by 92 uninformative numbers, ONE 92-d draw from a
fixed mixture of 20 multivariate Student-t distributions (2 degrees of freedom, equal weights)
that does not depend on ``theta``, and the 100 coordinates are shuffled by a fixed permutation.

The mixture's constants are random draws fixed once for the task from a seed (as in the
benchmark, whose constants are random draws too): location ``mu_k = 15 z_k`` with
``z_k ~ N(0, I_92)``; scale (Cholesky) factor ``L_k = 3 (tril(Z_k) + diag(exp(z'_k)))`` with
``Z_k`` a 92x92 matrix of standard normals (lower triangle with the diagonal) and
``z'_k ~ N(0, I_92)``.  A diagonal entry of ``L_k`` can come out negative; flipping the sign of that
column leaves ``L_k L_k^T`` and the (elliptically symmetric) distribution unchanged, so the columns
are flipped to a positive diagonal.  A distractor vector is ``d = mu_k + L_k u / sqrt(w / 2)`` with
``k`` uniform on ``0..19``, ``u ~ N(0, I_92)``, ``w ~ chi^2_2``.

**Checked against the benchmark's definition** (repository ``sbi-benchmark/sbibm``, file
``sbibm/tasks/slcp/task.py``, ``_generate_noise_dist_parameters`` and the simulator with
``distractors=True``, read through the code search of this project): 92 noise dimensions,
20 components, ``df = 2``, locations ``15 N(0, 1)``, scale factors ``3 (tril(N) + diag(exp(N)))``,
equal weights, one mixture draw per simulation concatenated after the 8 SLCP numbers and permuted.
An earlier version of this file (written from memory) used 46 independent bivariate draws with a
tiny isotropic scale; that was wrong and is fixed.  The benchmark's text (and paper 2's appendix)
loosely calls the distractors "noise"; the code is the definition.

**Observations** (``observations="sbibm"``, the default): the benchmark's ten stored observations
(``slcp/files/num_observation_<i>/observation_distractors.csv``: SLCP's stored observation, one draw of
the benchmark's mixture, permuted), true parameters and reference samples (SLCP's: the distractors do
not depend on ``theta``), read from the package data (:mod:`telescope.tasks._sbibm`; sbibm 1.1.0, MIT
licence).  The mixture's constants and the permutation are then the benchmark's own: its
``_generate_noise_dist_parameters`` draws them from numpy's legacy generator seeded with 42 (``15 *
normal(92)`` for each of the 20 locations, then ``tril(normal(92, 92)) + diag(exp(normal(92)))`` for each
scale factor, times 3, then ``permutation(100)``), and :func:`sbibm_constants` repeats those draws (the
tests check the permutation against the benchmark's stored ``permutation_idx.torch`` and that the stored
observations hold SLCP's at the permuted places), so the stored observations are draws of this
simulator.  ``observations="telescope"`` keeps this library's own constants (seed ``20210113``) and draws.

**Likelihood.**  ``log p(x | theta) = log p_SLCP(x_inf | theta) + log q(d)`` with ``q`` the
Student-t mixture: the distractors add a constant in ``theta``.

**Reference** (``reference_kind = "mcmc"``): the posterior is exactly the SLCP posterior of the
8 informative coordinates, so the reference is SLCP's (see :mod:`telescope.tasks.slcp`) on them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..simulation.simulators import Simulator
from . import register
from ._sbibm import SBIBMObservations
from .base import Task
from .slcp import SLCP

__all__ = ["SLCPDistractors", "sbibm_constants"]

_INFORMATIVE, _NOISE_DIM, _COMPONENTS, _DF = 8, 92, 20, 2.0
_SEED = 20210113


def sbibm_constants() -> tuple[Tensor, Tensor, Tensor]:
    """The benchmark's mixture locations ``(20, 92)``, scale factors ``(20, 92, 92)`` (float64) and permutation ``(100,)``.

    The draws of sbibm's ``SLCP._generate_noise_dist_parameters`` (numpy's legacy ``RandomState(42)``), in
    its order; the scale factors as drawn (a diagonal entry may be negative)."""
    import numpy as np

    rng = np.random.RandomState(42)
    loc = np.array([15 * rng.normal(size=_NOISE_DIM) for _ in range(_COMPONENTS)])
    chol = np.array([np.tril(rng.normal(size=(_NOISE_DIM, _NOISE_DIM))) + np.diag(np.exp(rng.normal(size=_NOISE_DIM)))
                     for _ in range(_COMPONENTS)])
    perm = rng.permutation(_NOISE_DIM + _INFORMATIVE)
    return torch.from_numpy(loc), torch.from_numpy(3 * chol), torch.from_numpy(perm).long()


@register("slcp_distractors")
class SLCPDistractors(SBIBMObservations, Task):
    """SLCP (5-d ``theta``) with 92 distractors: 100-d ``x``.

    Arguments:
        observations: ``"sbibm"`` (the benchmark's stored observations, true parameters and mixture
            constants; the default) or ``"telescope"`` (this library's own constants and draws).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's own SLCP reference; the default otherwise).
        **slcp_kwargs: settings of the SLCP reference MCMC (``chains``, ``warmup``, ``thin``,
            ``n_proposals``).

    Example:
        >>> task = SLCPDistractors()
        >>> task.simulator(task.prior.sample((3,)), seed=0).shape
        torch.Size([3, 100])
    """

    reference_kind = "mcmc"
    dim_theta = 5
    dim_x = _INFORMATIVE + _NOISE_DIM
    sbibm_name = "slcp"
    sbibm_observation_file = "observation_distractors.csv"

    def __init__(self, observations: str = "sbibm", reference: str | None = None, **slcp_kwargs):
        self._init_observations(observations, reference)
        self.slcp = SLCP(observations="telescope", **slcp_kwargs)
        self.prior = self.slcp.prior
        if self.observation_set == "sbibm":
            self.locs, L, self.permutation = sbibm_constants()
            constants = "sbibm"
        else:
            g = torch.Generator().manual_seed(_SEED)
            p, k = _NOISE_DIM, _COMPONENTS
            self.locs = 15.0 * torch.randn(k, p, generator=g, dtype=torch.float64)
            tril = torch.tril(torch.randn(k, p, p, generator=g, dtype=torch.float64))
            diag = torch.exp(torch.randn(k, p, generator=g, dtype=torch.float64))
            L = 3.0 * (tril + torch.diag_embed(diag))
            self.permutation = torch.randperm(self.dim_x, generator=g)
            constants = _SEED
        sign = torch.sign(torch.diagonal(L, dim1=-2, dim2=-1))
        self.scale_tril = L * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-2)  # columns flipped
        self.informative = torch.argsort(self.permutation)[:_INFORMATIVE]  # where the 8 SLCP numbers land
        self.distractors = torch.argsort(self.permutation)[_INFORMATIVE:]
        self.simulator = Simulator(self._generate, noise=self._noise, name="slcp_distractors",
                                   config={"seed": constants, "noise_dim": _NOISE_DIM, "components": _COMPONENTS,
                                           "df": _DF})
        self.diagnostics = self.slcp.diagnostics

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 8 + 1 + 92 + 1)``: SLCP normals, a component uniform, t normals, a chi-square uniform."""
        return torch.cat([torch.randn(n, _INFORMATIVE, generator=generator),
                          torch.rand(n, 1, generator=generator),
                          torch.randn(n, _NOISE_DIM, generator=generator),
                          torch.rand(n, 1, generator=generator)], 1)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        u = u.double()
        inf = self.slcp._generate(theta.double(), u[:, :_INFORMATIVE])
        comp = (u[:, _INFORMATIVE] * _COMPONENTS).long().clamp_max(_COMPONENTS - 1)
        z = u[:, _INFORMATIVE + 1 : _INFORMATIVE + 1 + _NOISE_DIM]
        # chi-square with 2 degrees of freedom is Exponential(1/2): w = -2 log(1 - U)
        w = -2.0 * torch.log1p(-u[:, -1:])
        y = torch.empty_like(z)
        for k in range(_COMPONENTS):  # one matrix product per component, not a (n, 92, 92) gather
            idx = comp == k
            if idx.any():
                y[idx] = z[idx] @ self.scale_tril[k].T
        d = self.locs[comp] + y / torch.sqrt(w / _DF)
        x = torch.cat([inf, d], 1)
        return x[:, self.permutation].to(theta.dtype)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The informative ``(*, 8)`` and distractor ``(*, 92)`` parts of ``x (*, 100)``."""
        x = torch.as_tensor(x)
        return x[..., self.informative], x[..., self.distractors]

    def distractor_log_density(self, d: Tensor) -> Tensor:
        """``log q(d)`` for distractor vectors ``d (*, 92)`` under the Student-t mixture, shape ``(*)``."""
        d = torch.as_tensor(d, dtype=torch.float64)
        p = float(_NOISE_DIM)
        batch = d.shape[:-1]
        diff = (d.reshape(-1, 1, _NOISE_DIM) - self.locs).transpose(0, 1)  # (K, m, 92)
        sol = torch.linalg.solve_triangular(self.scale_tril, diff.transpose(1, 2), upper=False)  # (K, 92, m)
        delta = (sol**2).sum(1).T.reshape(*batch, _COMPONENTS)  # (*, K)
        log_det = torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_t = (math.lgamma((_DF + p) / 2) - math.lgamma(_DF / 2) - p / 2 * math.log(_DF * math.pi)
                 - log_det - (_DF + p) / 2 * torch.log1p(delta / _DF))
        return torch.logsumexp(log_t, -1) - math.log(_COMPONENTS)

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
