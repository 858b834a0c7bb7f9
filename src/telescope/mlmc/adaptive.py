r"""Giles' adaptive MLMC algorithm (:func:`mlmc`) in named steps; :mod:`telescope.mlmc.driver` states the method.

Start with levels :math:`\ell_0..\ell_0+2`, draw the samples the allocation of eq. (16) asks for,
refit the rates and the allocation, and add a level while the bias estimate of Remark 1 exceeds
:math:`\sqrt\theta\,\varepsilon` (Algorithm 1 of Haji-Ali et al. 2025; Giles, Acta Numerica 2015).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..utils import check_count
from ..utils import progress as _progress
from .common import MLMCWarning, _check_eps, _check_M, _check_rate, _jsonable, _norm_weight, _warn_decay
from .rates import _allocation, _bias_safe, fit_rate, select_start_level
from .sampling import LevelSampler, _Runner

__all__ = ["MLMCResult", "mlmc"]

_MAX_ITER = 1000


@dataclass
class MLMCResult:
    """The outcome of :func:`mlmc`; ``to_dict()`` is JSON-able.

    Attributes:
        estimate: the MLMC estimate of :math:`E f(\\hat X_L)`, shaped like one quantity ``(*q)``.
        eps: the requested root-mean-square error.
        levels: the levels used, ``start_level .. L``.
        N: samples per level.
        cost: total cost spent (sum over levels of the cost of all samples drawn).
        C: average cost of one sample (pair) per level.
        V: :math:`V_\\ell` per level (the variance of :math:`P_{\\ell_0}` at the base level).
        mean_norm: debiased :math:`\\|Y_\\ell\\|` per level.
        var_fine: variance of :math:`P_\\ell` per level (norm-weighted trace).
        alpha, beta, gamma: the rates used (given or fitted).
        bias: the bias estimate; variance: :math:`\\sum V_\\ell/N_\\ell`;
        rmse: :math:`\\sqrt{bias^2 + variance}` (eq. (20)).
        std_cost: the cost of standard Monte Carlo on level ``L`` at the same ``eps``,
            :math:`V[P_L] C^f_L/((1-\\theta)\\varepsilon^2)`; savings = std_cost / cost.
        converged: False when ``max_level`` stopped the driver with the bias too large, or when the
            bias or variance is not finite (a NaN never passes).  ``fitted["bias_fallback"]`` is True when
            alpha could not be fitted and the bias is the norm of the last levels' means (with a warning).
    """

    estimate: np.ndarray
    eps: float
    M: int
    levels: list
    N: list
    cost: float
    C: list
    V: list
    mean_norm: list
    var_fine: list
    alpha: float
    beta: float
    gamma: float
    bias: float
    variance: float
    rmse: float
    std_cost: float
    savings: float
    converged: bool
    norm: str
    fitted: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        return self.levels[-1]

    def to_dict(self, estimate: bool = True) -> dict:
        d = asdict(self)
        d["estimate"] = np.asarray(self.estimate).tolist() if estimate else None
        d["L"] = self.L
        return _jsonable(d)



def mlmc(sampler: LevelSampler, eps: float, *, M: int = 2, start_level: int | str = 0,
         n_initial: int = 100, n_min: int = 10, max_level: int = 20, alpha: float | None = None,
         beta: float | None = None, gamma: float | None = None,
         cost: Callable[[int], float] | None = None, norm: str = "rms", theta: float = 0.5,
         bias_levels: int = 2, batch_size: int | None = None, var_fine_L: float | None = None,
         progress: bool = False, warn: bool = True) -> MLMCResult:
    r"""Giles' adaptive MLMC estimate of :math:`E f(\hat X_L)` with root-mean-square error ``eps``.

    Arguments:
        sampler: level sampler ``sampler(level, n) -> (P_fine, P_coarse[, cost])`` (module docs).
        eps: target root-mean-square error (in the chosen ``norm``), > 0.
        M: refinement factor between levels (>= 2); enters the bias estimate and eq. (19).
        start_level: the base level :math:`\ell_0`, or ``"auto"`` to choose it by eq. (19)
            with ``n_initial`` pilot samples per level (:func:`select_start_level`).
        n_initial: initial samples on each of the first three levels.
        n_min: fewest samples kept on any level (so each level has a variance estimate).
        max_level: the finest level allowed; reaching it with the bias too large warns.
        alpha, beta, gamma: weak rate, variance rate and cost rate; ``None`` fits them.
        cost: fine-path cost per sample at a level, used when the sampler reports none.
        norm: ``"rms"`` or ``"l2"`` (module docs).
        theta: share of the MSE given to the squared bias (1/2 in the paper).
        bias_levels: number of finest levels in the bias estimate (Remark 1; 1 is Giles 2008).
        batch_size: most samples requested from the sampler in one call.
        var_fine_L: variance of :math:`P_L` for the standard-MC cost (e.g. from a convergence
            test); default: estimated from the fine samples on level ``L``.
        progress: show a progress bar; warn: emit :class:`MLMCWarning` s.

    Returns:
        :class:`MLMCResult`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> def sampler(level, n):     # P_l = 1 + 2^-l + 2^-l * noise, coupled through z
        ...     z = rng.standard_normal((n, 1))
        ...     fine = 1 + 2.0**-level * (1 + z)
        ...     coarse = 1 + 2.0**-(level - 1) * (1 + z) if level > 0 else np.zeros((n, 1))
        ...     return fine, coarse
        >>> res = mlmc(sampler, 0.01)
        >>> bool(abs(res.estimate[0] - 1) < 0.03), res.alpha > 0.5
        (True, True)
    """
    eps, M = _check_eps(eps), _check_M(M)
    n_initial, n_min, max_level, rates, bias_levels = _check_settings(n_initial, n_min, max_level, alpha, beta,
                                                                      gamma, theta, bias_levels, norm)
    l0 = _start_level(sampler, start_level, M, n_initial, max_level, cost, norm, batch_size)
    run = _Runner(sampler, M, cost, batch_size)
    state = _Adaptive(run, eps=eps, M=M, theta=theta, n_min=n_min, max_level=max_level, bias_levels=bias_levels,
                      norm=norm, rates=rates, l0=l0, n_initial=n_initial, warn=warn)
    with _progress(None, desc=f"mlmc eps={eps:g}", enabled=progress, unit="round") as bar:
        for _ in range(_MAX_ITER):
            done = state.round()
            bar.update(1)
            bar.set_postfix(L=state.L, cost=f"{sum(run.levels[lv].cost for lv in run.levels):.3g}")
            if done:
                break
    return state.result(cost, var_fine_L)


def _check_settings(n_initial, n_min, max_level, alpha, beta, gamma, theta, bias_levels, norm) -> tuple:
    """:func:`mlmc`'s settings, checked in the order of its signature."""
    n_initial = check_count("n_initial", n_initial, 2)
    n_min = check_count("n_min", n_min, 2)
    max_level = check_count("max_level", max_level, 2)
    rates = (_check_rate("alpha", alpha), _check_rate("beta", beta), _check_rate("gamma", gamma))
    if not 0 < theta < 1:
        raise ValueError(f"theta must lie in (0, 1), got {theta}")
    bias_levels = check_count("bias_levels", bias_levels, 1)
    _norm_weight(norm, 1)
    return n_initial, n_min, max_level, rates, bias_levels


def _start_level(sampler: LevelSampler, start_level: int | str, M: int, n_initial: int, max_level: int,
                 cost: Callable[[int], float] | None, norm: str, batch_size: int | None) -> int:
    """The base level: ``start_level``, or with ``"auto"`` the one eq. (19) picks from pilot samples."""
    if isinstance(start_level, str):
        if start_level != "auto":
            raise ValueError(f"start_level must be an integer >= 0 or 'auto', got {start_level!r}")
        start_level = select_start_level(sampler, M=M, n=n_initial, max_level=max_level - 2, cost=cost,
                                         norm=norm, batch_size=batch_size)["start_level"]
    l0 = check_count("start_level", start_level, 0)
    if max_level < l0 + 2:
        raise ValueError(f"max_level must be >= start_level + 2 = {l0 + 2}, got {max_level}")
    return l0


class _Adaptive:
    """The state of the algorithm between rounds: the levels, the samples still to draw, the rates in use."""

    def __init__(self, run: _Runner, *, eps: float, M: int, theta: float, n_min: int, max_level: int,
                 bias_levels: int, norm: str, rates: tuple, l0: int, n_initial: int, warn: bool):
        self.run, self.eps, self.M, self.theta, self.n_min = run, eps, M, theta, n_min
        self.max_level, self.bias_levels, self.norm, self.warn = max_level, bias_levels, norm, warn
        self.given = rates  # alpha, beta, gamma as given (None: fitted)
        self.alpha = rates[0] if rates[0] is not None else 0.0
        self.beta = rates[1] if rates[1] is not None else 0.0
        self.gamma = rates[2] if rates[2] is not None else 1.0
        self.l0, self.L = l0, l0 + 2
        self.levels = list(range(l0, self.L + 1))
        self.dN = np.full(len(self.levels), n_initial, dtype=np.int64)
        self.converged = True
        self.fitted: dict = {}

    def round(self) -> bool:
        """Draw the samples asked for, refit rates and allocation, add a level if the bias is too large.

        Returns whether the algorithm is done (no more samples to draw)."""
        run, M = self.run, self.M
        for i, lv in enumerate(self.levels):
            if self.dN[i] > 0:
                run.draw(lv, int(self.dN[i]), base=(lv == self.l0))
        w = _norm_weight(self.norm, int(np.prod(run.q_shape)) if run.q_shape else 1)
        st = [run.levels[lv].stats(w) for lv in self.levels]
        Nl = np.array([s["N"] for s in st], dtype=np.int64)
        ml = np.array([s["mean_norm"] for s in st])
        Vl = np.array([s["var"] for s in st])
        Cl = np.array([s["cost"] for s in st])
        # Remark 1: floor the estimates of the finer levels by the rate models
        for i in range(2, len(self.levels)):
            ml[i] = max(ml[i], 0.5 * ml[i - 1] * M**-self.alpha)
            Vl[i] = max(Vl[i], 0.5 * Vl[i - 1] * M**-self.beta)
        self._fit_rates(ml, Vl, Cl)
        Ns = _allocation(Vl, Cl, self.eps, self.theta, self.n_min)
        self.dN = np.maximum(0, Ns - Nl)
        if not np.any(self.dN > 0.01 * Nl):
            ml_raw = np.array([s["mean_norm_raw"] for s in st])
            self._bias_check(ml, ml_raw, Nl, Vl, Cl)
        return self.dN.sum() == 0

    def _fit_rates(self, ml: np.ndarray, Vl: np.ndarray, Cl: np.ndarray) -> None:
        """Fit alpha, beta, gamma over the levels above the base; use them where none was given (floored at 0.5)."""
        up, M = self.levels[1:], self.M
        self.fitted = {"alpha": fit_rate(up, ml[1:], M), "beta": fit_rate(up, Vl[1:], M),
                       "gamma": -fit_rate(up, Cl[1:], M)}
        if self.given[0] is None and math.isfinite(self.fitted["alpha"]):
            self.alpha = max(0.5, self.fitted["alpha"])
        if self.given[1] is None and math.isfinite(self.fitted["beta"]):
            self.beta = max(0.5, self.fitted["beta"])
        if self.given[2] is None and math.isfinite(self.fitted["gamma"]):
            self.gamma = max(0.5, self.fitted["gamma"])

    def _bias_check(self, ml: np.ndarray, ml_raw: np.ndarray, Nl: np.ndarray, Vl: np.ndarray, Cl: np.ndarray) -> None:
        """The allocation is met: add a level while the bias estimate exceeds sqrt(theta) eps (up to max_level)."""
        M, eps, theta = self.M, self.eps, self.theta
        bias, _ = _bias_safe(ml, ml_raw, M, self.alpha, self.bias_levels)
        if bias <= math.sqrt(theta) * eps:  # a NaN is never a pass
            return
        if self.L >= self.max_level:
            self.converged = False
            if self.warn:
                warnings.warn(f"mlmc reached max_level={self.max_level} with the bias estimate {bias:.3g} "
                              f"above sqrt(theta)*eps = {math.sqrt(theta) * eps:.3g}; the result "
                              "misses the requested accuracy", MLMCWarning, stacklevel=4)
            return
        self.L += 1
        self.levels.append(self.L)
        Vl = np.append(Vl, Vl[-1] * M**-self.beta)
        Cl = np.append(Cl, Cl[-1] * M**self.gamma)
        Nl = np.append(Nl, 0)
        Ns = _allocation(Vl, Cl, eps, theta, self.n_min)
        self.dN = np.maximum(0, Ns - Nl)

    def result(self, cost: Callable[[int], float] | None, var_fine_L: float | None) -> MLMCResult:
        """The final estimate, its bias and variance, and the cost against standard Monte Carlo on level ``L``."""
        run, M, levels, L, norm, warn = self.run, self.M, self.levels, self.L, self.norm, self.warn
        w = _norm_weight(norm, int(np.prod(run.q_shape)))
        st = [run.levels[lv].stats(w) for lv in levels]
        Nl = [s["N"] for s in st]
        V_raw = np.array([s["var"] for s in st])
        ml = np.array([s["mean_norm"] for s in st])
        ml_f = ml.copy()
        for i in range(2, len(levels)):
            ml_f[i] = max(ml_f[i], 0.5 * ml_f[i - 1] * M**-self.alpha)
        ml_raw = np.array([s["mean_norm_raw"] for s in st])
        bias, fallback = _bias_safe(ml_f, ml_raw, M, self.alpha, self.bias_levels)
        variance = float(np.sum(V_raw / np.asarray(Nl)))
        fitted, converged = self.fitted, self.converged
        if fallback:
            fitted = {**fitted, "bias_fallback": True}
            if warn:
                warnings.warn(f"mlmc could not fit the weak-error rate alpha (the level means are "
                              f"{', '.join(f'{m:.3g}' for m in ml)} after debiasing) and none was given, so the bias "
                              f"estimate {bias:.3g} is the largest norm of the last {min(self.bias_levels, len(ml) - 1)} "
                              f"level means (not debiased) instead of eq. (Remark 1); pass alpha= to use a known rate",
                              MLMCWarning, stacklevel=3)
        if not (math.isfinite(bias) and math.isfinite(variance)):
            converged = False
        estimate = sum(run.mean(lv) for lv in levels).reshape(run.q_shape)
        total_cost = float(sum(run.levels[lv].cost for lv in levels))
        C = [s["cost"] for s in st]
        var_fine = [s["var_fine"] for s in st]
        vf_L = var_fine[-1] if var_fine_L is None else float(var_fine_L)
        cf_L = C[-1] if len(levels) == 1 else C[-1] / (1 + M**-self.gamma)
        if cost is not None:
            cf_L = run.fine_cost(L)
        std_cost = vf_L * cf_L / ((1 - self.theta) * self.eps**2)
        if warn:
            _warn_decay(fitted.get("beta", float("nan")), "mlmc", stacklevel=4)
        return MLMCResult(
            estimate=estimate, eps=self.eps, M=M, levels=list(levels), N=Nl, cost=total_cost, C=C,
            V=V_raw.tolist(), mean_norm=ml.tolist(), var_fine=var_fine, alpha=self.alpha, beta=self.beta,
            gamma=self.gamma, bias=bias, variance=variance, rmse=math.sqrt(bias**2 + variance), std_cost=std_cost,
            savings=std_cost / total_cost if total_cost > 0 else float("nan"), converged=converged, norm=norm,
            fitted=fitted)
