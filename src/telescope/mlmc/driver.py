r"""Multilevel Monte Carlo (MLMC): Giles' adaptive driver, convergence and complexity tests.

For approximations :math:`\hat X_\ell` of rising accuracy and cost (e.g. a diffusion sampler
with :math:`T_0 M^\ell` steps) MLMC estimates :math:`E f(\hat X_L)` by the telescoping sum

.. math:: Y = \frac{1}{N_{\ell_0}}\sum_i P^{(i)}_{\ell_0}
              + \sum_{\ell=\ell_0+1}^{L} \frac{1}{N_\ell}\sum_i \big(P^{(i)}_\ell - P^{(i)}_{\ell-1}\big),
   \qquad P_\ell = f(\hat X_\ell),

where the pair :math:`(P_\ell, P_{\ell-1})` in each correction is computed from coupled
(correlated) samples so that :math:`V_\ell = E\|\Delta P_\ell - E\Delta P_\ell\|^2` decays with
:math:`\ell`.  With cost :math:`C_\ell` per sample, the optimal allocation for a mean-square
error :math:`\varepsilon^2` split as variance :math:`(1-\theta)\varepsilon^2` and squared bias
:math:`\theta\varepsilon^2` (eq. (16) of Haji-Ali et al. 2025, :math:`\theta = 1/2`) is

.. math:: N_\ell = \Big\lceil \frac{1}{(1-\theta)\varepsilon^2} \sqrt{V_\ell/C_\ell}
                   \sum_k \sqrt{V_k C_k} \Big\rceil .

:func:`mlmc` is Giles' adaptive algorithm (Algorithm 1 of Haji-Ali et al.; Giles, Acta
Numerica 2015): start with levels :math:`\ell_0..\ell_0+2`, add samples by eq. (16), and add a
level while the bias estimate exceeds :math:`\sqrt\theta\,\varepsilon`.  Following Remark 1
the bias estimate is :math:`\max_j(\|Y_{L-j}\| M^{-\alpha j}) / (M^\alpha - 1)` over the last
``bias_levels`` levels, the level means and variances are floored by the fitted models
:math:`\|Y_\ell\| \propto M^{-\alpha\ell}`, :math:`V_\ell \propto M^{-\beta\ell}` (so that a
level with few samples is not underestimated), and :math:`\|Y_\ell\|` is debiased: the norm
of a sample mean overestimates the norm of the mean, :math:`E\|\bar Y\|^2 = \|EY\|^2 + V/N`;
the fixed point of Remark 1's iteration, :math:`m^2 = \|\bar Y\|^2/(1 + V/(N m^2))`, is
:math:`m^2 = \max(\|\bar Y\|^2 - V/N, 0)`, which is used.  Rates :math:`\alpha, \beta,
\gamma` not given are fitted by least squares on :math:`\log_M` of :math:`\|Y_\ell\|, V_\ell,
C_\ell` over the levels above the base (floored at 0.5 as in Giles' code).  The starting
level :math:`\ell_0` is chosen by eq. (19) (:func:`select_start_level`).

Quantities may be vectors (e.g. the pixel-wise second moment of an image); ``norm="l2"``
uses the Euclidean norm, ``norm="rms"`` (default) the Euclidean norm over
:math:`\sqrt{\dim}`, so that ``eps`` is a root-mean-square error per component.

**The sampler protocol.** A level sampler is any callable ``sampler(level, n)`` returning
``(P_fine, P_coarse)`` or ``(P_fine, P_coarse, cost)``: arrays or tensors ``(n, *q)`` of
coupled samples of :math:`P_\ell` and :math:`P_{\ell-1}` (``P_coarse`` is ignored at the base
level and may be ``None``), and the total cost of the ``n`` pairs (e.g. network
evaluations).  Without a reported cost the ``cost`` model is used (default: one unit per
fine step, :math:`C^f_\ell = M^\ell`, and a pair costs :math:`C^f_\ell + C^f_{\ell-1}`).  A
sampler that accepts a keyword ``coarse`` is called with ``coarse=False`` at a base level
above 0, so it need not compute the unused coarse path.

:func:`convergence_test` and :func:`complexity_test` are Giles' standard ``mlmc_test``
checks, returning JSON-able dicts; :func:`telescope.plots.plot_mlmc` draws them as the
panels of Figure 3 of Haji-Ali et al.

The pieces: :mod:`~telescope.mlmc.adaptive` (:func:`mlmc` and :class:`MLMCResult`),
:mod:`~telescope.mlmc.sampling` (calling a level sampler and the per-level sums),
:mod:`~telescope.mlmc.rates` (fitted rates, eq. (16), Remark 1, eq. (19)) and
:mod:`~telescope.mlmc.common` (checks, JSON output, :class:`MLMCWarning`); this module holds Giles'
tests and keeps every name importable from ``telescope.mlmc.driver``.

References:
    M. B. Giles (2008). Multilevel Monte Carlo path simulation. Operations Research 56(3).
    M. B. Giles (2015). Multilevel Monte Carlo methods. Acta Numerica 24.
    Haji-Ali, Pereyra, Shaw, Zygalakis (2025). Bayesian computation with generative
    diffusion models by multilevel Monte Carlo.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..utils import check_count
from ..utils import progress as _progress
from .adaptive import MLMCResult, mlmc
from .common import MLMCWarning, _check_eps, _check_M, _check_rate, _jsonable, _norm_weight, _warn_decay
from .rates import _allocation, _bias, _bias_safe, _eq19, fit_rate, select_start_level, start_level_from
from .sampling import LevelSampler, _Level, _Runner, _to_numpy

__all__ = [
    "LevelSampler",
    "MLMCResult",
    "mlmc",
    "convergence_test",
    "complexity_test",
    "mlmc_test",
    "select_start_level",
    "start_level_from",
    "fit_rate",
    "MLMCWarning",
]

# private names of the one module this package's driver was split from, still importable from here
_SPLIT_OUT = (_allocation, _bias, _bias_safe, _check_rate, _eq19, _Level, _Runner, _to_numpy)


# -- Giles' standard tests -----------------------------------------------------------------
def convergence_test(sampler: LevelSampler, n: int, L: int, *, M: int = 2, cost: Callable[[int], float] | None = None,
                     norm: str = "rms", batch_size: int | None = None, fit_from: int | None = None,
                     progress: bool = False, warn: bool = True) -> dict:
    r"""Per-level statistics on levels ``0..L`` with ``n`` samples each (Giles' convergence test).

    For each level: the debiased norm of the mean and the variance of
    :math:`\Delta P_\ell = P_\ell - P_{\ell-1}` (``mean``, ``var``), the norm of the mean and the
    variance of :math:`P_\ell` (``mean_fine``, ``var_fine``) and of the coarse
    :math:`P_{\ell-1}` (``var_coarse``), the kurtosis of :math:`\Delta P_\ell`, the
    telescoping consistency check
    :math:`\|\bar{\Delta P_\ell} - (\bar P_\ell - \bar P_{\ell-1})\| / (3(\sqrt{V_\ell} +
    \sqrt{V[P_{\ell-1}]} + \sqrt{V[P_\ell]})/\sqrt n)` (above 1: the coarse path of level
    :math:`\ell` does not have the law of the fine path of level :math:`\ell-1`) and the cost
    per sample (pair, and fine path only).  Then ``alpha``, ``beta``, ``gamma`` fitted over
    levels ``fit_from..L`` (default: the eq.-(19) starting level + 1, at least 1) and the
    eq.-(19) ``start_level``.

    Returns:
        A JSON-able dict of lists indexed like ``levels``.
    """
    M = _check_M(M)
    n = check_count("n", n, 2)
    L = check_count("L", L, 1)
    run = _Runner(sampler, M, cost, batch_size)
    rows = []
    means_f = []
    with _progress(L + 1, desc="convergence test", enabled=progress, unit="level") as bar:
        for lv in range(L + 1):
            run.draw(lv, n, base=(lv == 0))
            acc = run.levels[lv]
            means_f.append(acc.f[0] / acc.n)
            rows.append(acc.stats(_norm_weight(norm, int(np.prod(run.q_shape)))))
            bar.update(1)
    w = _norm_weight(norm, int(np.prod(run.q_shape)))
    out: dict = {"levels": list(range(L + 1)), "n": n, "M": M, "norm": norm}
    for key in ("mean_norm", "var", "mean_fine_norm", "var_fine", "var_coarse", "kurtosis", "cost"):
        out[key] = [r[key] for r in rows]
    out["mean"] = out.pop("mean_norm")
    out["mean_fine"] = out.pop("mean_fine_norm")
    # fine-path cost: the base level costs one fine path; pairs cost fine + coarse
    cf = [rows[0]["cost"]]
    for lv in range(1, L + 1):
        cf.append(rows[lv]["cost"] - cf[-1] if cost is None else run.fine_cost(lv))
    out["cost_fine"] = cf
    check = [0.0]
    for lv in range(1, L + 1):
        d = run.mean(lv) - (means_f[lv] - means_f[lv - 1])
        num = math.sqrt(w * float((d**2).sum()))
        den = 3 * (math.sqrt(rows[lv]["var"]) + math.sqrt(rows[lv - 1]["var_fine"])
                   + math.sqrt(rows[lv]["var_fine"])) / math.sqrt(n)
        check.append(num / den if den > 0 else (0.0 if num == 0 else float("inf")))
    out["consistency"] = check
    l0 = start_level_from(out)
    out["start_level"] = l0
    lo = max(1, l0 + 1) if fit_from is None else check_count("fit_from", fit_from, 1)
    if L - lo < 1:
        lo = max(1, L - 1)
    up = list(range(lo, L + 1))
    out["fit_levels"] = up
    out["alpha"] = fit_rate(up, out["mean"][lo:], M)
    out["beta"] = fit_rate(up, out["var"][lo:], M)
    out["gamma"] = -fit_rate(up, out["cost"][lo:], M)
    if warn:
        bad = [lv for lv in range(1, L + 1) if check[lv] > 1]
        if bad:
            warnings.warn(f"telescoping consistency check fails on levels {bad} (values "
                          f"{[round(check[lv], 2) for lv in bad]} > 1): the coarse path of a level does not "
                          "reproduce the fine path of the level below — check the coupling", MLMCWarning,
                          stacklevel=2)
        k = out["kurtosis"][-1]
        if k is not None and math.isfinite(k) and k > 100:
            warnings.warn(f"kurtosis of the finest correction is {k:.0f} > 100: variance estimates on fine "
                          "levels are unreliable (rare large differences)", MLMCWarning, stacklevel=2)
        _warn_decay(out["beta"], "convergence test")
    return _jsonable(out)


def complexity_test(sampler: LevelSampler, eps: Sequence[float], *, M: int = 2, start_level: int | str = 0,
                    convergence: dict | None = None, use_rates: bool = True, n_initial: int = 100,
                    estimates: bool = False, progress: bool = False, **kwargs) -> dict:
    """Run :func:`mlmc` for each tolerance in ``eps`` (Giles' complexity test).

    With a ``convergence`` result its fitted ``alpha, beta, gamma`` are passed to the driver
    (``use_rates``), its eq.-(19) ``start_level`` is used when ``start_level="auto"``, and
    its ``var_fine`` on level ``L`` gives the standard-MC cost when ``L`` lies within it.

    Returns:
        ``{"eps", "mlmc_cost", "std_cost", "savings", "N", "levels", "rmse", "bias",
        "variance", "converged", "estimate_norm", "runs"}`` with one entry per tolerance
        (``runs`` holds each :meth:`MLMCResult.to_dict` without the estimate); with
        ``estimates=True`` also ``"estimates"``, the estimate vectors.
    """
    M = _check_M(M)
    eps_list = [_check_eps(e) for e in eps]
    if not eps_list:
        raise ValueError("eps must be a non-empty list of tolerances")
    if start_level == "auto" and convergence is not None:
        start_level = int(convergence["start_level"])
    rates = {}
    if convergence is not None and use_rates:
        for key in ("alpha", "beta", "gamma"):
            v = convergence.get(key)
            if v is not None and math.isfinite(v):
                rates[key] = max(0.5, float(v))
    rates.update({k: kwargs.pop(k) for k in ("alpha", "beta", "gamma") if k in kwargs})
    out: dict = {k: [] for k in ("eps", "mlmc_cost", "std_cost", "savings", "N", "levels", "rmse", "bias",
                                 "variance", "converged", "estimate_norm", "runs")}
    out["start_level"] = start_level
    if estimates:
        out["estimates"] = []
    with _progress(len(eps_list), desc="complexity test", enabled=progress, unit="eps") as bar:
        for e in eps_list:
            res = mlmc(sampler, e, M=M, start_level=start_level, n_initial=n_initial, **rates, **kwargs)
            if convergence is not None and res.L < len(convergence["var_fine"]) and "var_fine_L" not in kwargs:
                vf = convergence["var_fine"][res.L]
                cf = convergence["cost_fine"][res.L]
                res.std_cost = vf * cf / ((1 - kwargs.get("theta", 0.5)) * e**2)
                res.savings = res.std_cost / res.cost
            w = _norm_weight(res.norm, int(np.asarray(res.estimate).size))
            out["eps"].append(e)
            out["mlmc_cost"].append(res.cost)
            out["std_cost"].append(res.std_cost)
            out["savings"].append(res.savings)
            out["N"].append(list(res.N))
            out["levels"].append(list(res.levels))
            out["rmse"].append(res.rmse)
            out["bias"].append(res.bias)
            out["variance"].append(res.variance)
            out["converged"].append(res.converged)
            out["estimate_norm"].append(float(math.sqrt(w * float((np.asarray(res.estimate) ** 2).sum()))))
            out["runs"].append(res.to_dict(estimate=False))
            if estimates:
                out["estimates"].append(np.asarray(res.estimate).tolist())
            bar.update(1)
    return _jsonable(out)


def mlmc_test(sampler: LevelSampler, *, n: int, L: int, eps: Sequence[float], M: int = 2,
              start_level: int | str = "auto", n_initial: int = 100, norm: str = "rms",
              cost: Callable[[int], float] | None = None, batch_size: int | None = None,
              plot: str | None = None, title: str | None = None, progress: bool = False, **kwargs) -> dict:
    """The convergence test on levels ``0..L`` and then the complexity test for ``eps``.

    ``plot`` is a path for the Figure-3 panels (PNG), drawn by
    :func:`telescope.plots.plot_mlmc`.

    Returns:
        ``{"convergence": ..., "complexity": ...}`` (JSON-able).
    """
    M = _check_M(M)
    eps = [_check_eps(e) for e in eps]
    if not eps:
        raise ValueError("eps must be a non-empty list of tolerances")
    conv = convergence_test(sampler, n, L, M=M, cost=cost, norm=norm, batch_size=batch_size, progress=progress)
    comp = complexity_test(sampler, eps, M=M, start_level=start_level, convergence=conv, n_initial=n_initial,
                           norm=norm, cost=cost, batch_size=batch_size, progress=progress, **kwargs)
    result = {"convergence": conv, "complexity": comp}
    if plot is not None:
        from ..plots.mlmc import plot_mlmc

        plot_mlmc(result, path=plot, title=title)
    return result
