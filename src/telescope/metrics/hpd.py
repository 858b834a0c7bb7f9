r"""Calibration over pairs :math:`(\theta^*_j, x_j) \sim p(\theta, x)`: NLPD and expected HPD coverage.

For each pair the level at which :math:`\theta^*` enters the highest-posterior-density (HPD) region is
the posterior mass with higher density,
:math:`\ell_j = P_{\theta \sim q(\cdot \mid x_j)}[q(\theta \mid x_j) > q(\theta^*_j \mid x_j)]`,
estimated with posterior samples; the empirical coverage at nominal level ``alpha`` is the fraction of
pairs with :math:`\ell_j \le \alpha`.

References:
    Hermans et al. (2022), "A trust crisis in simulation-based inference? Your posterior approximations
    can be unfaithful", arXiv:2110.06581.
    Hikida et al. (2025), "Multilevel neural simulation-based inference" (NLPD).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from ..calibration import batched_draws, check_pairs
from ..utils import check_count
from ._checks import _as_tensor

__all__ = ["BatchedEstimator", "nlpd", "hpd_levels", "expected_coverage", "coverage"]


class BatchedEstimator(Protocol):
    """What :func:`coverage` needs from an estimator (any object with these two methods)."""

    def sample_batched(self, x: Tensor, n: int) -> Tensor:
        """``x (m, *event)`` -> ``(n, m, d)`` posterior samples, ``n`` per observation."""

    def log_prob_batched(self, theta: Tensor, x: Tensor) -> Tensor:
        """``theta (n, m, d)``, ``x (m, *event)`` -> ``(n, m)`` (possibly unnormalised) log densities."""


def nlpd(log_prob_true: Any) -> float:
    r"""Negative log posterior density of the true parameters, averaged over pairs.

    ``log_prob_true[j]`` is :math:`\log q(\theta^*_j \mid x_j)` of the true parameter under the
    (normalised) approximate posterior for its own observation.  Lower is better; the value is
    only comparable between estimators whose densities are normalised.

    Arguments:
        log_prob_true: ``(m,)`` log densities (``-inf`` allowed, giving ``inf``).

    Returns:
        :math:`-\frac{1}{m}\sum_j \log q(\theta^*_j \mid x_j)`.

    Example:
        >>> nlpd(torch.tensor([-1.0, -3.0]))
        2.0
    """
    lp = _as_tensor("log_prob_true", log_prob_true)
    if lp.dim() == 2 and lp.shape[0] == 1:
        lp = lp[0]
    if lp.dim() != 1:
        raise ValueError(f"log_prob_true must have shape (m,), got shape {tuple(lp.shape)}")
    if lp.numel() == 0:
        raise ValueError("log_prob_true must hold at least one value, got shape (0,)")
    if torch.isnan(lp).any() or (lp == float("inf")).any():
        raise ValueError(f"log_prob_true contains NaN or +inf in {int((torch.isnan(lp) | (lp == float('inf'))).sum())}"
                         f" of {lp.numel()} entries; expected log densities in [-inf, inf)")
    return float(-lp.mean())


def hpd_levels(log_prob_samples: Any, log_prob_true: Any) -> Tensor:
    r"""Credibility level at which each true parameter enters its HPD region.

    Arguments:
        log_prob_samples: ``(n, m)`` log densities of ``n`` posterior samples for each of ``m``
            observations, evaluated under the same posterior (may be unnormalised, but with one
            normalising constant per observation).
        log_prob_true: ``(m,)`` log density of the true parameter of each observation.

    Returns:
        ``(m,)`` float64 tensor :math:`\ell_j \in [0, 1]`: the fraction of samples whose density
        exceeds that of :math:`\theta^*_j`.  For an exact posterior :math:`\ell_j` is uniform
        (on ``{0, 1/n, ..., 1}``).

    Example:
        >>> hpd_levels(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([1.5]))
        tensor([0.5000], dtype=torch.float64)
    """
    lps = _as_tensor("log_prob_samples", log_prob_samples)
    lpt = _as_tensor("log_prob_true", log_prob_true)
    if lps.dim() == 1:
        lps = lps.unsqueeze(-1)
    if lps.dim() != 2:
        raise ValueError(f"log_prob_samples must have shape (n, m), got shape {tuple(lps.shape)}")
    if lpt.dim() == 0:
        lpt = lpt.reshape(1)
    if lpt.dim() == 2 and lpt.shape[0] == 1:
        lpt = lpt[0]
    if lpt.dim() != 1:
        raise ValueError(f"log_prob_true must have shape (m,), got shape {tuple(lpt.shape)}")
    if lps.shape[0] == 0 or lps.shape[1] == 0:
        raise ValueError(f"log_prob_samples must hold at least one sample for one observation, "
                         f"got shape {tuple(lps.shape)}")
    if lps.shape[1] != lpt.shape[0]:
        raise ValueError(f"log_prob_samples has {lps.shape[1]} observations (shape {tuple(lps.shape)}) but "
                         f"log_prob_true has {lpt.shape[0]} (shape {tuple(lpt.shape)}); expected (n, m) and (m,)")
    for name, t in (("log_prob_samples", lps), ("log_prob_true", lpt)):
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains {int(torch.isnan(t).sum())} NaN values; expected log densities")
    return (lps > lpt).double().mean(0)


def expected_coverage(levels: Any, alphas: Any = None) -> tuple[Tensor, Tensor]:
    r"""Empirical expected coverage of HPD regions.

    Arguments:
        levels: ``(m,)`` HPD levels from :func:`hpd_levels`.
        alphas: nominal credibility levels in ``[0, 1]``; default 101 points from 0 to 1.

    Returns:
        ``(alphas, coverage)``, both float64 tensors of shape ``(k,)``, with
        ``coverage[i]`` the fraction of pairs whose level is ``<= alphas[i]``.  A calibrated
        estimator gives ``coverage ~ alphas``; below the diagonal means overconfident.

    Example:
        >>> a, c = expected_coverage(torch.tensor([0.1, 0.4, 0.6, 0.9]), [0.0, 0.5, 1.0])
        >>> c
        tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    """
    lv = _as_tensor("levels", levels)
    if lv.dim() != 1:
        raise ValueError(f"levels must have shape (m,), got shape {tuple(lv.shape)}")
    if lv.numel() == 0:
        raise ValueError("levels must hold at least one value, got shape (0,)")
    if torch.isnan(lv).any() or (lv < 0).any() or (lv > 1).any():
        raise ValueError(f"levels must lie in [0, 1], got values in [{float(lv.min())}, {float(lv.max())}]")
    if alphas is None:
        al = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    else:
        al = _as_tensor("alphas", alphas).reshape(-1)
        if al.numel() == 0:
            raise ValueError("alphas must hold at least one level, got an empty array")
        if torch.isnan(al).any() or (al < 0).any() or (al > 1).any():
            raise ValueError(f"alphas must lie in [0, 1], got values in [{float(al.min())}, {float(al.max())}]")
    # small tolerance so that a level of exactly k/n counts at alpha = k/n despite rounding
    cov = (lv[None, :] <= al[:, None] + 1e-12).double().mean(1)
    return al, cov


def coverage(estimator: BatchedEstimator, theta: Any, x: Any, n_samples: int = 1000, alphas: Any = None, *,
             batch_size: int = 256, seed: int | None = 0,
             return_levels: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    r"""Expected HPD coverage of an amortised estimator over ``m`` pairs :math:`(\theta^*_j, x_j)`.

    Arguments:
        estimator: an object with ``sample_batched(x, n) -> (n, m, d)`` and
            ``log_prob_batched(theta (n, m, d), x (m, *event)) -> (n, m)``; the density may be
            unnormalised but must be consistent within one observation.  An ``sbi`` posterior is accepted
            too (wrapped by :func:`telescope.interop.sbi.from_sbi`).
        theta: ``(m, d)`` true parameters, drawn from the prior.
        x: ``(m, *event)`` observations simulated from ``theta``.
        n_samples: posterior samples per observation.
        alphas: nominal levels, default 101 points in ``[0, 1]``.
        batch_size: observations handled per call to the estimator.
        seed: if not None, the torch random state is seeded for the sampling and restored after.
        return_levels: also return the ``(m,)`` HPD levels.

    Returns:
        ``(alphas, coverage)`` as in :func:`expected_coverage` (and ``levels`` if asked).
    """
    from ..interop.sbi import as_telescope_posterior

    estimator = as_telescope_posterior(estimator)
    for attr in ("sample_batched", "log_prob_batched"):
        if not callable(getattr(estimator, attr, None)):
            raise TypeError(f"estimator must provide {attr}(...) (see telescope.metrics.BatchedEstimator), "
                            f"got {type(estimator).__name__} without it")
    n_samples = check_count("n_samples", n_samples)
    batch_size = check_count("batch_size", batch_size)
    theta_t, x_t = check_pairs(theta, x, need_d=True)

    def levels(samples: Tensor, th: Tensor, xb: Tensor) -> Tensor:
        mb = th.shape[0]
        lps = estimator.log_prob_batched(samples, xb)
        lpt = estimator.log_prob_batched(th.to(samples.dtype).to(samples.device).unsqueeze(0), xb)
        if tuple(lps.shape) != (n_samples, mb) or tuple(lpt.shape) != (1, mb):
            raise ValueError(f"estimator.log_prob_batched returned shapes {tuple(lps.shape)} and "
                             f"{tuple(lpt.shape)}, expected {(n_samples, mb)} and {(1, mb)}")
        return hpd_levels(lps.cpu(), lpt[0].cpu())

    lv = torch.cat(batched_draws(estimator, theta_t, x_t, n_samples, batch_size, seed, levels))
    al, cov = expected_coverage(lv, alphas)
    return (al, cov, lv) if return_levels else (al, cov)
