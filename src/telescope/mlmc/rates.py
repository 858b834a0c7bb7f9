r"""The formulas of the MLMC driver: fitted rates, the sample allocation (eq. 16), the bias estimate
(Remark 1) and the starting level (eq. 19) of Haji-Ali et al. (2025); :mod:`telescope.mlmc.driver` states them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..utils import check_count
from .common import _check_M, _jsonable, _norm_weight
from .sampling import LevelSampler, _Runner

__all__ = ["fit_rate", "select_start_level", "start_level_from"]


def fit_rate(levels: Sequence[int], values: Sequence[float], M: int) -> float:
    r"""The rate ``r`` of ``values ~ c M^{-r level}`` by least squares on :math:`\log_M`.

    Non-positive or non-finite values are skipped; ``nan`` when fewer than two remain.

    Example:
        >>> round(fit_rate([1, 2, 3], [0.5, 0.25, 0.125], 2), 6)
        1.0
    """
    lv = np.asarray(levels, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(lv[ok], np.log(v[ok]) / math.log(M), 1)[0]
    return float(-slope)



def _allocation(Vl: np.ndarray, Cl: np.ndarray, eps: float, theta: float, n_min: int) -> np.ndarray:
    """Eq. (16): N_l = ceil(sqrt(V_l / C_l) * sum_k sqrt(V_k C_k) / ((1 - theta) eps^2)), at least n_min."""
    Vl = np.nan_to_num(np.asarray(Vl, dtype=float), nan=0.0)
    Cl = np.asarray(Cl, dtype=float)
    Ns = np.ceil(np.sqrt(Vl / Cl) * np.sum(np.sqrt(Vl * Cl)) / ((1 - theta) * eps**2))
    return np.maximum(Ns, n_min).astype(np.int64)


def _bias_safe(ml: np.ndarray, ml_raw: np.ndarray, M: int, alpha: float, bias_levels: int) -> tuple[float, bool]:
    """The bias estimate of Remark 1, or, when the rate alpha is unknown (not > 0) or the estimate is not finite,
    the largest raw norm of the last ``bias_levels`` level means (conservative: it includes their noise).

    Returns ``(bias, fell_back)``; never NaN when the level means are finite.
    """
    if alpha > 0:
        b = _bias(ml, M, alpha, bias_levels)
        if math.isfinite(b):
            return b, False
    k = max(1, min(bias_levels, len(ml_raw) - 1))
    return float(max(ml_raw[-1 - j] for j in range(k))), True


def _bias(ml: np.ndarray, M: int, alpha: float, bias_levels: int) -> float:
    """Remark 1: max_j ||Y_{L-j}|| M^{-alpha j} / (M^alpha - 1) over the last levels (not the base)."""
    k = min(bias_levels, len(ml) - 1)
    vals = [ml[-1 - j] * M ** (-alpha * j) for j in range(k)]
    return float(max(vals) / (M**alpha - 1))


# -- starting level, eq. (19) --------------------------------------------------------------
def _eq19(V1: float, Vf1: float, Vf0: float, r: float) -> bool:
    """Eq. (19): adding level l0 below l0 + 1 pays, V_1 <= (sqrt(r Vf1) - sqrt(Vf0))^2 / (1 + r)."""
    a, b = math.sqrt(r * max(Vf1, 0.0)), math.sqrt(max(Vf0, 0.0))
    return a > b and V1 <= (a - b) ** 2 / (1 + r)


def start_level_from(convergence: dict) -> int:
    """The starting level by eq. (19) from a :func:`convergence_test` result.

    The smallest :math:`\\ell_0` such that the two-level estimator on
    :math:`(\\ell_0, \\ell_0+1)` is cheaper than standard MC on :math:`\\ell_0+1`; the variance
    of :math:`P_{\\ell_0}` is taken from the coarse samples of level :math:`\\ell_0+1`.
    Returns the last level but one when no level satisfies it (MLMC then does not pay on the
    levels tested).
    """
    lv = convergence["levels"]
    for i in range(1, len(lv)):
        r = convergence["cost_fine"][i] / convergence["cost_fine"][i - 1]
        if _eq19(convergence["var"][i], convergence["var_fine"][i], convergence["var_coarse"][i], r):
            return lv[i - 1]
    return lv[-2]


def select_start_level(sampler: LevelSampler, *, M: int = 2, n: int = 1000, max_level: int = 10,
                       cost: Callable[[int], float] | None = None, norm: str = "rms",
                       batch_size: int | None = None) -> dict:
    """Choose :math:`\\ell_0` by eq. (19) with ``n`` pilot pairs per level.

    For :math:`\\ell_0 = 0, 1, ...` draws ``n`` coupled pairs on level :math:`\\ell_0+1`
    (their coarse half samples :math:`P_{\\ell_0}`) and stops at the first
    :math:`\\ell_0` satisfying eq. (19).

    Returns:
        ``{"start_level": l0, "pilot": [per-level stats], "pilot_cost": total cost}``.
    """
    M = _check_M(M)
    n = check_count("n", n, 2)
    run = _Runner(sampler, M, cost, batch_size)
    pilot = []
    for l0 in range(0, check_count("max_level", max_level, 0) + 1):
        run.draw(l0 + 1, n, base=False)
        s = run.levels[l0 + 1].stats(_norm_weight(norm, int(np.prod(run.q_shape))))
        r = run.fine_cost(l0 + 1) / run.fine_cost(l0) if cost is not None else float(M)
        ok = _eq19(s["var"], s["var_fine"], s["var_coarse"], r)
        pilot.append({"level": l0 + 1, **s, "eq19": ok})
        if ok:
            break
    else:
        l0 = max_level
    return _jsonable({"start_level": l0, "pilot": pilot,
                      "pilot_cost": float(sum(lv.cost for lv in run.levels.values()))})

