r"""Control-variate coefficients for the multilevel loss and its standard error.

Paper 1's loss (eq. 2) spends each level's pairs on the difference :math:`f^l - f^{l-1}`.  The
weighted form

.. math::
    \ell_a(\phi) = a_0\,\bar f^0_{(0)} + \sum_{l=1}^{L}\big(a_l\,\bar f^l_{(l)} - a_{l-1}\,\bar f^{l-1}_{(l)}\big),
    \qquad a_L = 1,

(:math:`\bar f^k_{(l)}` the mean of :math:`f^k` over level ``l``'s own rows) telescopes to
:math:`\mathbb{E} f^L` for ANY coefficients: it is the multifidelity Monte Carlo estimator
(Peherstorfer, Willcox & Gunzburger, "Optimal model management for multifidelity Monte Carlo
estimation", SIAM J. Sci. Comput. 2016) with eq. (2) at :math:`a \equiv 1`.  For two levels with
:math:`n_0` independent cheap simulations and :math:`n_1` pairs its variance
:math:`\mathrm{Var} f^1/n_1 + a^2 \mathrm{Var} f^0 (1/n_0 + 1/n_1) - 2a\,\mathrm{Cov}(f^1, f^0)/n_1`
is smallest at

.. math::
    a^\star = \frac{\mathrm{Cov}(f^1, f^0)}{\mathrm{Var} f^0}\,\frac{n_0}{n_0 + n_1},

and the same rule is applied level by level from the top (:math:`a_{l-1} = a_l \cdot a^\star_l`).  When the
levels' losses are weakly correlated, :math:`a^\star` is small and the cheap level is down-weighted
instead of adding its variance — the case in which eq. (2) can be worse than ignoring the cheap
simulations.  :func:`coefficients` estimates :math:`a` from per-simulation losses on the pairs (at a
network pre-trained on the cheap level), clipped to ``[0, 1]``, and falls back to ``1`` with a
warning when a level has fewer than ``min_pairs`` pairs.

:func:`weighted_mean` gives the value and standard error of :math:`\ell_a` from per-simulation losses
(used for validation and for the safeguard comparison of :mod:`telescope.multilevel.safeguard`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["coefficients", "weighted_mean"]


def coefficients(losses: Sequence, sizes: Sequence[int], *, min_pairs: int = 10,
                 stacklevel: int = 2) -> tuple[list[float], dict]:
    r"""Estimated control-variate coefficients ``[a_0, ..., a_{L-1}]`` (``a_L = 1``).

    Arguments:
        losses: for each level ``l = 1..L`` a pair ``(f_high (n_l,), f_low (n_l,))`` of per-simulation losses
            of the two members of that level's pairs.
        sizes: ``[n_0, ..., n_L]``, simulations (pairs) per level in the loss.
        min_pairs: with fewer pairs the covariance estimate is too noisy: that level's ``a^*`` is 1 (eq. 2).

    Returns:
        ``(a, info)`` with ``info = {"raw": [a*_l], "correlations": [...], "fallback": [levels]}``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> f0 = torch.randn(500, generator=g)
        >>> f1 = 0.5 * f0 + 0.1 * torch.randn(500, generator=g)
        >>> a, info = coefficients([(f1, f0)], [10_000, 500])
        >>> round(a[0], 1)
        0.5
    """
    L = len(losses)
    if len(sizes) != L + 1:
        raise ValueError(f"sizes must have one entry per level ({L + 1}), got {len(sizes)}")
    raw, corr, fallback = [], [], []
    for l, (hi, lo) in enumerate(losses, 1):
        hi, lo = torch.as_tensor(hi).double().reshape(-1), torch.as_tensor(lo).double().reshape(-1)
        ok = torch.isfinite(hi) & torch.isfinite(lo)
        hi, lo = hi[ok], lo[ok]
        if hi.numel() < min_pairs:
            raw.append(1.0)
            corr.append(float("nan"))
            fallback.append(l)
            continue
        dh, dl = hi - hi.mean(), lo - lo.mean()
        var_lo, var_hi = float(dl.pow(2).mean()), float(dh.pow(2).mean())
        cov = float((dh * dl).mean())
        corr.append(cov / math.sqrt(var_lo * var_hi) if var_lo > 0 and var_hi > 0 else float("nan"))
        shrink = sizes[l - 1] / (sizes[l - 1] + sizes[l])
        raw.append(cov / var_lo * shrink if var_lo > 0 else 0.0)
    if fallback:
        warnings.warn(f"too few pairs to estimate the control-variate weight of level(s) {fallback} "
                      f"(fewer than {min_pairs}); using a = 1 (paper 1's eq. 2) there", UserWarning,
                      stacklevel=stacklevel)
    a = [1.0] * (L + 1)
    for l in range(L, 0, -1):
        a[l - 1] = a[l] * min(max(raw[l - 1], 0.0), 1.0)
    return a[:L], {"raw": raw, "correlations": corr, "fallback": fallback}


def weighted_mean(f0: Tensor, pairs: Sequence, a: Sequence[float] | None = None) -> tuple[float, float]:
    r"""Value and standard error of :math:`\ell_a` from per-simulation losses.

    Arguments:
        f0: ``(n_0,)`` losses of the level-0 simulations.
        pairs: for each level ``(f_high (n_l,), f_low (n_l,))``.
        a: coefficients ``[a_0, ..., a_{L-1}]`` (default all ones: eq. 2).

    Example:
        >>> v, se = weighted_mean(torch.ones(4), [(torch.full((2,), 3.0), torch.ones(2))])
        >>> v, se
        (3.0, 0.0)
    """
    L = len(pairs)
    coef = [1.0] * L if a is None else [float(c) for c in a]
    coef = coef + [1.0]
    f0 = torch.as_tensor(f0).double().reshape(-1)
    value = coef[0] * float(f0.mean())
    var = coef[0] ** 2 * float(f0.var()) / f0.numel() if f0.numel() > 1 else 0.0
    for l, (hi, lo) in enumerate(pairs, 1):
        d = coef[l] * torch.as_tensor(hi).double().reshape(-1) - coef[l - 1] * torch.as_tensor(lo).double().reshape(-1)
        value += float(d.mean())
        var += float(d.var()) / d.numel() if d.numel() > 1 else 0.0
    return value, math.sqrt(var)
