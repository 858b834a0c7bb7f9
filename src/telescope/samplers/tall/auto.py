r"""What ``method="auto"`` picks, and a reference-free check of tall samples.

:func:`auto_settings` chooses the tall sampler by the prior's family (:func:`prior_family`) and
the number of observations; :func:`split_check` compares the tall posterior of all observations
with the Gaussian combination of those of its two halves (Bernstein-von Mises).

References:
    Linhart, Cardoso, Gramfort, Le Corff & Rodrigues (2024), "Diffusion posterior sampling for simulation-based
    inference in tall data settings", arXiv:2404.07593.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..prior_scores import DiffusedPrior, exact_kernel_prior
from .core import _sym, trimmed_covariance

__all__ = ["prior_family", "auto_settings", "split_check"]


def prior_family(prior: DiffusedPrior) -> str:
    """``"uniform"`` if any part of the diffused prior is a box, ``"gaussian"`` if every part is Gaussian
    in the working space (Gaussian and LogNormal priors), else ``"learned"``."""
    from ..prior_scores import DiffusedGaussian, DiffusedProduct, DiffusedUniform

    parts = prior.parts if isinstance(prior, DiffusedProduct) else [prior]
    if any(isinstance(p, DiffusedUniform) for p in parts):
        return "uniform"
    if all(isinstance(p, DiffusedGaussian) for p in parts):
        return "gaussian"
    return "learned"


def auto_settings(prior: DiffusedPrior, n_obs: int) -> dict:
    r"""The tall sampler ``method="auto"`` uses, by the prior's family (:func:`prior_family`) and ``n_obs``.

    * ``n_obs = 1``: plain single-observation DDIM (there is nothing to compose).
    * ``"gaussian"`` family (Gaussian priors, and LogNormal ones, Gaussian after NPSE's log
      transform): GAUSS with the paper's settings.  Its prior backward kernel is exact there, so
      the remaining errors are the per-observation covariances and the network's.
    * ``"uniform"`` family (a box in some coordinates): GAUSS with the moment-matched prior kernel,
      a 4x larger pilot (``pilot_samples=1024``) and a **Gaussian kernel stop** (``stop_t=0.05``,
      ``stop_cov="pilot"``): the reverse path ends at :math:`t_s = 0.05` with one draw of the
      Gaussian backward kernel :math:`\mathcal{N}(\hat z_0, (C + (\alpha/v)I)^{-1})` of the tall
      posterior (Linhart et al. 2024, eqs. 8 and 10 for the tall posterior itself, :math:`C` GAUSS's
      pilot precision of Algorithm 1), redrawn where it leaves the box.  Why: the composed score
      adds the ``n`` per-observation network errors, and the network's error grows as
      :math:`t \to 0` (noise prediction divided by :math:`\sqrt{v_t}`); by the paper's Appendix C that is
      also where the correction term matters most.  Stopping at :math:`t_s` never evaluates the
      network below it, and by Bernstein-von Mises the tall posterior (a box times a product of
      ``n`` likelihoods) is close to a Gaussian cut by the box, whose backward kernel this is.
      Against exact tall posteriors it lowers GAUSS's C2ST at n = 8 and 32, with Gaussian and
      Student-t noise and where the box binds at the truth (still far off there).  The larger pilot:
      the covariance of a truncated, skewed posterior needs more draws, and the pilot error enters
      :math:`\Lambda` once per observation.
      Why not the other options of :class:`TallSampler`:
      a Langevin refinement at a small time (``refine_steps``) removes GAUSS's composition error
      with EXACT scores but equilibrates to the network's summed errors (worse); predictor-corrector
      steps (``corrector_steps``), the flat prior kernel (``prior_kernel="exact"``), a finer grid,
      a stop at 0.02 or 0.1, and the box-truncated kernel (``stop_kernel="truncated"``) were not
      better; JAC and F-NPSE cost far more and were worse; training in logit space
      (:mod:`telescope.samplers.unconstrained`) was worse at n = 32.
    * ``"learned"`` prior score: GAUSS.

    The measurements behind these choices (C2ST of every option against exact tall posteriors) are in
    ``benchmarks/README_tall.md``.

    Returns keyword arguments for :class:`TallSampler` (``method`` included).
    """
    if n_obs <= 1:
        return {"method": "gauss", "steps": None, "spacing": "uniform"}
    family = prior_family(prior)
    if family == "uniform":
        return {"method": "gauss", "spacing": "uniform", "prior_kernel": "gaussian", "refine_steps": 0,
                "pilot_samples": 1024, "stop_t": 0.05, "stop_cov": "pilot"}
    return {"method": "gauss", "spacing": "uniform", "prior_kernel": "gaussian", "refine_steps": 0}


def split_check(full: Tensor, half_a: Tensor, half_b: Tensor, prior: DiffusedPrior | None = None, *,
                sd_tol: float = 1.15, mean_tol: float = 0.3) -> dict:
    r"""Reference-free consistency check of tall-posterior samples (working space), by splitting the data.

    With Gaussian likelihoods and a Gaussian (or flat) prior term, the posterior of all
    observations follows from those of two disjoint halves :math:`A, B`:
    :math:`P = P_A + P_B - P_0` and :math:`P\mu = P_A\mu_A + P_B\mu_B - P_0\mu_0`, with :math:`P_0, \mu_0` the
    prior's (:func:`~telescope.samplers.prior_scores.exact_kernel_prior`: zero for a box).  By the
    Bernstein-von Mises theorem this holds approximately for any regular model once the halves
    are informative.  A sampler whose error grows with ``n`` breaks it: the samples of ``n`` and of
    ``n / 2`` observations do not fit together.

    Arguments:
        full, half_a, half_b: ``(k, d)`` samples of the tall posteriors of all, and of each half of,
            the observations.
        prior: the diffused prior in the same space (``None``: flat).
        sd_tol: flag when a standard deviation of ``full`` (along an eigendirection) differs from
            the predicted one by more than this factor.
        mean_tol: flag when the mean of ``full`` is further than this many of its standard
            deviations (Mahalanobis) from the predicted mean.

    Returns:
        ``{"sd_ratio_min", "sd_ratio_max", "mean_shift", "ok"}`` (``sd_ratio``: observed over predicted).
    """
    def stats(s: Tensor):
        s = s[torch.isfinite(s).all(-1)].double()
        cov = trimmed_covariance(s.unsqueeze(0))[0]
        return s.mean(0), torch.linalg.inv(cov)

    d = full.shape[-1]
    mf, pf = stats(full)
    ma, pa = stats(half_a)
    mb, pb = stats(half_b)
    if prior is not None:
        flat = exact_kernel_prior(prior)
        p0 = flat.precision0.double().to(mf.device)
        b0 = flat.score0(torch.zeros(1, d, dtype=torch.float64, device=mf.device))[0].double()  # P0 mu0
    else:
        p0 = torch.zeros(d, d, dtype=torch.float64, device=mf.device)
        b0 = torch.zeros(d, dtype=torch.float64, device=mf.device)
    pp = _sym(pa + pb - p0)
    w, u = torch.linalg.eigh(pp)
    pp = _sym((u * w.clamp_min(1e-12 * float(w.abs().max()))) @ u.T)
    mp = torch.linalg.solve(pp, pa @ ma + pb @ mb - b0)
    # observed over predicted standard deviations: eigenvalues of P_f^{-1/2} P_pred P_f^{-1/2} are (sd_f / sd_pred)^2
    lf = torch.linalg.cholesky(_sym(pf))
    li = torch.linalg.inv(lf)
    r = torch.linalg.eigvalsh(_sym(li @ pp @ li.T)).clamp_min(1e-300).sqrt()
    diff = mf - mp
    shift = float(torch.sqrt(diff @ pf @ diff))
    out = {"sd_ratio_min": float(r.min()), "sd_ratio_max": float(r.max()), "mean_shift": shift}
    out["ok"] = bool(out["sd_ratio_min"] >= 1 / sd_tol and out["sd_ratio_max"] <= sd_tol and shift <= mean_tol)
    return out


def check_tail(k) -> int:
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"refine_tail must be an integer >= 1, got {k!r}")
    return int(k)


def _box(prior: DiffusedPrior, device) -> tuple[Tensor, Tensor] | None:
    """Per-coordinate bounds ``(lo, hi)`` of the uniform parts of a diffused prior (``+-inf`` elsewhere), or None."""
    from ..prior_scores import DiffusedProduct, DiffusedUniform

    parts = prior.parts if isinstance(prior, DiffusedProduct) else [prior]
    lo, hi = [], []
    for p in parts:
        if isinstance(p, DiffusedUniform):
            lo.append(p.low.float()), hi.append(p.high.float())
        else:
            lo.append(torch.full((p.dim,), -math.inf)), hi.append(torch.full((p.dim,), math.inf))
    lo_t, hi_t = torch.cat(lo).to(device), torch.cat(hi).to(device)
    return None if bool(torch.isinf(lo_t).all() and torch.isinf(hi_t).all()) else (lo_t, hi_t)


def _reflect(z: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Reflect ``z (N, d)`` into ``[lo, hi]`` per coordinate (infinite bounds leave it alone)."""
    width = hi - lo
    finite = torch.isfinite(width)
    w = torch.where(finite, width, torch.ones_like(width))
    y = torch.remainder(z - lo, 2 * w)
    y = torch.where(y > w, 2 * w - y, y) + lo
    return torch.where(finite, y, z)

