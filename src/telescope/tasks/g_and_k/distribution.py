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

from ..priors import BoxUniform
from ..simulators import Simulator
from . import register
from ._mcmc_reference import mcmc_reference, mixture_importance_resampling
from .base import Task

__all__ = ["GAndK", "gk_quantile", "gk_quantile_derivative", "gk_log_density", "standard_normal_quantile"]

C = 0.8  # the conventional value of the g-and-k constant c
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _split(theta: Tensor, z: Tensor):
    """Columns of ``theta (..., 4)`` shaped to broadcast against ``z (..., k)``."""
    a, b, g, t4 = (theta[..., j : j + 1] for j in range(4))
    k = torch.log(t4.clamp_min(torch.finfo(theta.dtype).tiny))
    return a, b, g, k


def standard_normal_quantile(u: Tensor) -> Tensor:
    """``Phi^{-1}(u) = sqrt(2) erfinv(2u - 1)`` in float64, ``u`` clamped into ``(0, 1)``."""
    u = u.double()
    eps = torch.finfo(torch.float64).tiny
    return torch.special.ndtri(u.clamp(eps, 1 - 2**-53))


def gk_quantile(theta: Tensor, z: Tensor, c: float = C) -> Tensor:
    """The g-and-k quantile function ``G_theta(z)``.

    Arguments:
        theta: ``(*, 4)`` parameters ``(A, B, g, k_4)``.
        z: ``(*, k)`` standard-normal quantiles (``theta`` broadcasts along the last axis).
        c: the skewness constant (0.8).

    Returns:
        ``(*, k)`` values ``G_theta(z)``.

    Example:
        >>> theta = torch.tensor([[3.0, 1.0, 2.0, 1.0]])  # k_4 = 1: (1 + z^2)^0 = 1
        >>> gk_quantile(theta, torch.zeros(1, 1))
        tensor([[3.]])
    """
    a, b, g, k = _split(theta, z)
    return a + b * (1 + c * torch.tanh(0.5 * g * z)) * torch.exp(k * torch.log1p(z * z)) * z


def gk_quantile_derivative(theta: Tensor, z: Tensor, c: float = C) -> Tensor:
    """``dG_theta / dz`` with the same shapes as :func:`gk_quantile`."""
    return _value_and_derivative(theta, z, c)[1]


def _value_and_derivative(theta: Tensor, z: Tensor, c: float = C) -> tuple[Tensor, Tensor]:
    a, b, g, k = _split(theta, z)
    th = torch.tanh(0.5 * g * z)
    lz = torch.log1p(z * z)
    pw = torch.exp(k * lz)  # (1 + z^2)^k
    h = pw * z
    dh = pw / (1 + z * z) * (1 + (1 + 2 * k) * z * z)
    return a + b * (1 + c * th) * h, b * (0.5 * c * g * (1 - th * th) * h + (1 + c * th) * dh)


def _grid(points: int, zmax: float) -> Tensor:
    s = torch.linspace(-math.asinh(zmax), math.asinh(zmax), points, dtype=torch.float64)
    return torch.sinh(s)


def _refine_extrema(theta: Tensor, lo: Tensor, hi: Tensor, steps: int = 24) -> Tensor:
    """Zeros of ``G'_theta`` bracketed by ``[lo, hi]`` (rows of ``theta`` paired with brackets), by bisection."""
    s_lo = torch.sign(gk_quantile_derivative(theta, lo))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        same = torch.sign(gk_quantile_derivative(theta, mid)) == s_lo
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return 0.5 * (lo + hi)


def _brackets(theta: Tensor, x: Tensor, grid: Tensor) -> tuple[Tensor, ...]:
    """All cells ``[z_lo, z_hi]`` where ``G_theta - x`` changes sign.

    Returns ``(row, col, z_lo, z_hi, g_lo, g_hi)``: the row of ``theta``, the index of ``x``, the
    cell ends and ``G_theta`` there.  Rows whose grid values increase use a binary search.  In the
    other rows each interior grid point next to a turning point of ``G_theta`` is moved onto the
    turning point (refined by bisection on ``G'``), so that the two roots close to a turning point
    fall in different cells, and every sign change is found by a dense scan.
    """
    m, n, k = theta.shape[0], x.shape[-1], grid.shape[0]
    x = x.expand(m, n)
    a, b, g, kk = _split(theta, grid)
    lz = torch.log1p(grid * grid)
    gv = a + b * (1 + C * torch.tanh(0.5 * g * grid)) * torch.exp(kk * lz) * grid  # (m, K)
    gv = torch.where(torch.isnan(gv), torch.full_like(gv, float("inf")), gv)
    diffs = gv[:, 1:] - gv[:, :-1]
    mono = (diffs > 0).all(-1)
    parts = []
    if mono.any():
        im = mono.nonzero().squeeze(-1)
        gm = gv[im].contiguous()
        pos = torch.searchsorted(gm, x[im].contiguous())  # first index with G >= x
        r, j = ((pos > 0) & (pos < k)).nonzero(as_tuple=True)
        c = pos[r, j] - 1
        parts.append((im[r], j, grid[c], grid[c + 1], gm[r, c], gm[r, c + 1]))
    if (~mono).any():
        iw = (~mono).nonzero().squeeze(-1)
        gw, tw = gv[iw], theta[iw]
        dw = diffs[~mono]
        zw = grid.expand(iw.shape[0], -1).clone()
        r, c = ((torch.sign(dw[:, 1:]) * torch.sign(dw[:, :-1])) < 0).nonzero(as_tuple=True)
        c = c + 1  # grid point at the turn
        if r.numel():
            te = tw[r]
            ze = _refine_extrema(te, grid[c - 1, None], grid[c + 1, None])
            zw[r, c] = ze[:, 0]
            zw = torch.cummax(zw, -1).values  # keep the rows sorted if two turns share a cell
            gw[r, c] = gk_quantile(te, zw[r, c, None])[:, 0]
        above = gw.unsqueeze(1) >= x[iw].unsqueeze(-1)  # (m', n, K)
        r, j, c = (above[..., 1:] != above[..., :-1]).nonzero(as_tuple=True)
        parts.append((iw[r], j, zw[r, c], zw[r, c + 1], gw[r, c], gw[r, c + 1]))
    return tuple(torch.cat(p) for p in zip(*parts))


def gk_log_density(theta: Tensor, x: Tensor, *, zmax: float = 10.0, points: int = 201,
                   newton_steps: int = 20, chunk: int = 4096) -> Tensor:
    """Log density ``log p(x_j | theta_i)`` of the g-and-k distribution for every pair.

    Arguments:
        theta: ``(m, 4)`` parameters.
        x: ``(n,)`` points shared by every row of ``theta``, or ``(m, n)`` points, one row per ``theta``.
        zmax: roots are searched for in ``[-zmax, zmax]``.
        points: grid size used to bracket the roots (turning points are refined separately).
        newton_steps: safeguarded Newton iterations in each bracket.

    Returns:
        ``(m, n)`` log densities ``log p(x_j | theta_i)`` (or ``log p(x_ij | theta_i)``), float64,
        ``-inf`` where ``x`` is outside the support.

    Example:
        >>> theta = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # A=0, B=1, g=0, k=0: standard normal
        >>> float(gk_log_density(theta, torch.tensor([0.0]))[0, 0])  # log phi(0)
        -0.9189385332046727
    """
    theta = torch.as_tensor(theta).double()
    x = torch.as_tensor(x).double()
    if theta.dim() != 2 or theta.shape[-1] != 4:
        raise ValueError(f"theta must have shape (m, 4), got {tuple(theta.shape)}")
    if x.dim() not in (1, 2) or x.dim() == 2 and x.shape[0] not in (1, theta.shape[0]):
        raise ValueError(f"x must have shape (n,) or ({theta.shape[0]}, n), got {tuple(x.shape)}")
    x = x.reshape(-1, x.shape[-1])
    if theta.shape[0] > chunk:
        xs = x.split(chunk) if x.shape[0] > 1 else [x] * -(-theta.shape[0] // chunk)
        return torch.cat([gk_log_density(t, xc, zmax=zmax, points=points, newton_steps=newton_steps, chunk=chunk)
                          for t, xc in zip(theta.split(chunk), xs)])
    m, n = theta.shape[0], x.shape[-1]
    out = torch.zeros(m, n, dtype=torch.float64)
    if m == 0 or n == 0:
        return out
    rows, cols, lo, hi, g_lo, g_hi = _brackets(theta, x, _grid(points, zmax))
    if rows.numel():
        th, xv = theta[rows], x.expand(m, n)[rows, cols].unsqueeze(-1)
        lo, hi = lo.unsqueeze(-1), hi.unsqueeze(-1)
        f_lo, f_hi = g_lo.unsqueeze(-1) - xv, g_hi.unsqueeze(-1) - xv
        denom = f_hi - f_lo
        t = torch.where(denom != 0, -f_lo / denom, torch.full_like(denom, 0.5)).clamp(0, 1)
        z = lo + t * (hi - lo)
        lo_sign = torch.sign(f_lo)
        # safeguarded Newton on the still-moving roots only
        act = torch.arange(z.shape[0])
        for _ in range(newton_steps):
            za, la, ha, ta, xa = z[act], lo[act], hi[act], th[act], xv[act]
            f, d = _value_and_derivative(ta, za)
            f = f - xa
            same = torch.sign(f) == lo_sign[act]  # the root lies above z
            la, ha = torch.where(same, za, la), torch.where(same, ha, za)
            step = za - f / d
            inside = (step >= la) & (step <= ha) & torch.isfinite(step)
            zn = torch.where(inside, step, 0.5 * (la + ha))
            zn = torch.where(f == 0, za, zn)
            z[act], lo[act], hi[act] = zn, la, ha
            going = ((zn - za).abs() > 1e-12 * (1 + za.abs())).squeeze(-1) & (f != 0).squeeze(-1)
            act = act[going]
            if act.numel() == 0:
                break
        d = _value_and_derivative(th, z)[1].abs().squeeze(-1)
        z = z.squeeze(-1)
        dens = torch.exp(-0.5 * z * z - _LOG_SQRT_2PI) / d
        dens = torch.where(torch.isfinite(dens), dens, torch.zeros_like(dens))
        out.index_put_((rows, cols), dens, accumulate=True)
    return torch.log(out)


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
        :func:`telescope.tasks.g_and_k_ladder.gk_ladder` for ``constant`` (``"pi/2"`` as printed in the paper,
        default, or the Maclaurin ``"sqrt(pi)/2"``) and ``summary``.
        """
        from .g_and_k_ladder import gk_ladder

        return gk_ladder(self.n_draws, constant=constant, summary=summary, costs=costs)
