r"""Building blocks of the tall-data samplers: the set-valued noise prediction, batched DDIM and the GAUSS pilot.

Linhart et al. (2024), arXiv 2404.07593, Section 3.2: GAUSS estimates every single-observation
posterior covariance :math:`\hat\Sigma_j` from "a DDIM with a small number of iterations" per
observation (:func:`pilot_covariances`, all observations in one batched run).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy.stats import chi2
from torch import Tensor

from ...diffusion import VPSchedule, ddim_step

__all__ = ["METHODS", "PRIOR_KERNELS", "SetEps", "paper_eta", "rowwise", "clip_eps", "ddim_sample",
           "pilot_covariances", "trimmed_covariance"]

#: The tall-data methods.
METHODS = ("gauss", "jac", "fnpse")

#: Treatments of the prior's backward kernel in GAUSS/JAC (see :class:`TallSampler`).
PRIOR_KERNELS = ("gaussian", "exact")

SetEps = Callable[[Tensor, float], Tensor]
"""``eps_set(z, t) -> (N, m, d)``: the noise prediction for ``z (N, m, d)`` (or ``(N, 1, d)``,
broadcast) against ``m`` fixed observations at time ``t``; observation ``j`` conditions ``z[:, j]``."""


def paper_eta(steps: int) -> float:
    """The DDIM ``eta`` of Linhart et al. (Section 4) for a number of steps: 0.2, 0.5, 0.8, 1.

    Example:
        >>> [paper_eta(s) for s in (50, 150, 400, 1000)]
        [0.2, 0.5, 0.8, 1.0]
    """
    return 0.2 if steps <= 50 else 0.5 if steps <= 150 else 0.8 if steps <= 400 else 1.0


def rowwise(eps: Callable[[Tensor, Tensor, Tensor], Tensor], x_set: Tensor) -> SetEps:
    """A :data:`SetEps` from a row-wise ``eps(z (R, d), t (R,), x (R, *event))`` and ``x_set (m, *event)``."""
    m = x_set.shape[0]

    def eps_set(z: Tensor, t: float) -> Tensor:
        n, d = z.shape[0], z.shape[-1]
        zz = z.expand(n, m, d).reshape(n * m, d)
        xx = x_set.unsqueeze(0).expand(n, *x_set.shape).reshape(n * m, *x_set.shape[1:])
        tt = torch.full((n * m,), float(t), dtype=z.dtype, device=z.device)
        return eps(zz, tt, xx).reshape(n, m, d)

    return eps_set


def _grid(schedule: VPSchedule, steps: int, spacing: str = "uniform") -> tuple[list[float], list[float]]:
    grid = schedule.timesteps(steps, spacing=spacing)
    return grid.tolist(), schedule.alpha_bar(grid).tolist()


def clip_eps(z: Tensor, eps: Tensor, alpha_bar: float, clip: tuple[Tensor, Tensor]) -> Tensor:
    r"""The noise prediction whose denoised estimate is clamped to ``clip = (lo, hi)``.

    The denoised estimate is :math:`\hat z_0 = (z - \sqrt{v}\epsilon)/\sqrt{\alpha}`.

    A DDIM step with the returned noise equals the step with :math:`\hat z_0` clamped to the
    data range (as ``clip_x0`` in :func:`telescope.diffusion.deterministic_part`), here with
    per-coordinate bounds ``lo, hi (d,)``.
    """
    sa, sv = math.sqrt(alpha_bar), math.sqrt(max(1.0 - alpha_bar, 1e-300))
    z0 = (z - sv * eps) / sa
    z0 = torch.maximum(torch.minimum(z0, clip[1]), clip[0])
    return (z - sa * z0) / sv


@torch.no_grad()
def ddim_sample(eps_set: SetEps, z: Tensor, *, schedule: VPSchedule, steps: int, eta: float,
                spacing: str = "uniform", clip: tuple[Tensor, Tensor] | None = None,
                generator: torch.Generator | None = None, bar=None) -> Tensor:
    """Run DDIM(``eta``) from ``z (N, m, d)`` at ``t = 1`` to ``t = 0``: ``(N, m, d)``.

    Observation ``j`` of ``eps_set`` conditions the column ``z[:, j]``: this is ordinary
    (single-observation) posterior sampling, vectorised over samples and observations.
    ``spacing`` is the time grid of :meth:`~telescope.diffusion.VPSchedule.timesteps`; ``clip``
    optional per-coordinate bounds ``(lo, hi)`` for the denoised estimate (:func:`clip_eps`).
    """
    ts, ab = _grid(schedule, steps, spacing)
    for k in range(steps):
        e = eps_set(z, ts[k])
        if clip is not None:
            e = clip_eps(z, e, ab[k], clip)
        z = ddim_step(z, e, ab[k], ab[k + 1], eta, generator=generator)
        if bar is not None:
            bar.update(1)
    return z


@torch.no_grad()
def pilot_covariances(eps_set: SetEps, n_obs: int, dim: int, *, samples: int = 256, steps: int = 50,
                      eta: float = 0.5, schedule: VPSchedule | None = None, spacing: str = "uniform",
                      clip: tuple[Tensor, Tensor] | None = None, generator: torch.Generator | None = None,
                      device=None, chunk_rows: int = 2**16, trim: float = 1e-3) -> Tensor:
    r"""Posterior covariances :math:`\hat\Sigma_j` ``(n_obs, d, d)`` (float64) from one batched DDIM run.

    ``samples`` draws per observation, ``steps`` DDIM steps; all observations run together
    (chunked over samples when ``samples * n_obs`` exceeds ``chunk_rows``).  The covariance is
    trimmed: draws whose Mahalanobis distance exceeds the ``1 - trim`` quantile of the
    chi-square law with ``d`` degrees of freedom are dropped (twice), so a few stray draws of
    an imperfect network do not inflate it (``trim=0`` keeps all).
    """
    schedule = schedule or VPSchedule()
    per = max(1, chunk_rows // max(n_obs, 1))
    out = []
    for lo in range(0, samples, per):
        k = min(per, samples - lo)
        z = torch.randn(k, n_obs, dim, generator=generator, device=device)
        out.append(ddim_sample(eps_set, z, schedule=schedule, steps=steps, eta=eta, spacing=spacing, clip=clip,
                               generator=generator))
    return trimmed_covariance(torch.cat(out).double().transpose(0, 1), trim)


def trimmed_covariance(s: Tensor, trim: float = 1e-3, rounds: int = 2) -> Tensor:
    """Covariances ``(m, d, d)`` of samples ``s (m, k, d)``, less draws beyond the chi-square ``1 - trim`` quantile."""
    m, k, d = s.shape
    keep = torch.isfinite(s).all(-1)  # (m, k)
    cut = float(chi2.ppf(1.0 - trim, d)) if trim > 0 else math.inf
    for _ in range(rounds + 1):
        w = keep.double()
        cnt = w.sum(1).clamp_min(2.0)
        s0 = torch.where(keep.unsqueeze(-1), s, torch.zeros_like(s))
        mean = (s0 * w.unsqueeze(-1)).sum(1) / cnt.unsqueeze(-1)
        c = (s0 - mean.unsqueeze(1)) * w.unsqueeze(-1)
        cov = torch.einsum("mka,mkb->mab", c, c) / (cnt - 1)[:, None, None]
        if not math.isfinite(cut):
            break
        prec = torch.linalg.pinv(_sym(cov))
        dev = s0 - mean.unsqueeze(1)
        d2 = torch.einsum("mka,mab,mkb->mk", dev, prec, dev)
        new = keep & (d2 <= cut)
        if bool((new == keep).all()):
            break
        keep = new
    return _sym(cov)


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))

