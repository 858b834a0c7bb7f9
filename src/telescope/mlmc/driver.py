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

References:
    M. B. Giles (2008). Multilevel Monte Carlo path simulation. Operations Research 56(3).
    M. B. Giles (2015). Multilevel Monte Carlo methods. Acta Numerica 24.
    Haji-Ali, Pereyra, Shaw, Zygalakis (2025). Bayesian computation with generative
    diffusion models by multilevel Monte Carlo.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..utils import check_count
from ..utils import progress as _progress

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

LevelSampler = Callable[..., tuple]
"""``sampler(level, n) -> (P_fine, P_coarse)`` or ``(P_fine, P_coarse, total_cost)``."""

_MAX_ITER = 1000


class MLMCWarning(UserWarning):
    """Warnings from the MLMC driver and tests (non-decaying variance, failed checks, ...)."""


# -- argument checks -----------------------------------------------------------------------
def _check_eps(eps) -> float:
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a positive number, got {eps!r}") from None
    if not (e > 0 and math.isfinite(e)):
        raise ValueError(f"eps must be a finite number > 0 (the target root-mean-square error), got {eps!r}")
    return e


def _check_M(M) -> int:
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
        raise TypeError(f"M must be an integer >= 2 (the refinement factor between levels), got {M!r}")
    if M < 2:
        raise ValueError(f"M must be an integer >= 2 (the refinement factor between levels), got {M}")
    return int(M)


def _check_rate(name: str, v) -> float | None:
    if v is None:
        return None
    v = float(v)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a number > 0 or None (fit by regression), got {v}")
    return v


def _norm_weight(norm: str, q: int) -> float:
    if norm == "l2":
        return 1.0
    if norm == "rms":
        return 1.0 / q
    raise ValueError(f"norm must be 'rms' or 'l2', got {norm!r}")


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


# -- per-level accumulation ----------------------------------------------------------------
def _to_numpy(name: str, value, level: int) -> np.ndarray:
    if value is None:
        raise ValueError(f"sampler returned {name}=None at level {level}; expected an array (n, *q)")
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sampler returned {name} of type {type(value).__name__} at level {level}; "
                        "expected a numeric array or tensor (n, *q)") from None


class _Level:
    """Running sums of one level: powers 1-4 of dP = P_f - P_c, powers 1-2 of P_f and P_c."""

    def __init__(self, q: int):
        self.n = 0
        self.cost = 0.0
        self.s = np.zeros((4, q))     # sums of dP, dP^2, dP^3, dP^4 (componentwise)
        self.f = np.zeros((2, q))     # sums of P_f, P_f^2
        self.c = np.zeros((2, q))     # sums of P_c, P_c^2

    def add(self, pf: np.ndarray, pc: np.ndarray, cost: float) -> None:
        d = pf - pc
        d2 = d * d
        self.s += np.stack([d.sum(0), d2.sum(0), (d2 * d).sum(0), (d2 * d2).sum(0)])
        self.f += np.stack([pf.sum(0), (pf * pf).sum(0)])
        self.c += np.stack([pc.sum(0), (pc * pc).sum(0)])
        self.n += pf.shape[0]
        self.cost += cost

    # componentwise unbiased variances and means
    def _var(self, s1, s2) -> np.ndarray:
        n = self.n
        if n < 2:
            return np.full_like(s1, np.nan)
        return np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)

    def stats(self, w: float) -> dict:
        n = self.n
        mean_d = self.s[0] / n
        var_d = self._var(self.s[0], self.s[1])
        V = float(w * var_d.sum())
        raw = float(w * (mean_d**2).sum())
        mean_norm = math.sqrt(max(raw - V / n, 0.0)) if n >= 2 else math.sqrt(raw)
        var_f = self._var(self.f[0], self.f[1])
        var_c = self._var(self.c[0], self.c[1])
        # kurtosis of dP: per component, aggregated with variance weights
        m1 = mean_d
        m4 = (self.s[3] / n - 4 * self.s[2] / n * m1 + 6 * self.s[1] / n * m1**2 - 3 * m1**4)
        pop_var = np.maximum(self.s[1] / n - m1**2, 0.0)
        # components whose spread is round-off (deterministic levels) carry no kurtosis
        ok = pop_var > 1e-10 * (self.s[1] / n) + 1e-300
        kurt = float((m4[ok] / pop_var[ok]).sum() / pop_var[ok].sum()) if ok.any() else float("nan")
        return {
            "N": n,
            "cost": self.cost / n,
            "mean_norm": mean_norm,
            "mean_norm_raw": math.sqrt(raw),
            "var": V,
            "mean_fine_norm": float(math.sqrt(w * ((self.f[0] / n) ** 2).sum())),
            "var_fine": float(w * var_f.sum()),
            "var_coarse": float(w * var_c.sum()),
            "kurtosis": kurt,
        }


class _Runner:
    """Calls a level sampler, checks what it returns and accumulates per-level sums."""

    def __init__(self, sampler: LevelSampler, M: int, cost: Callable[[int], float] | None,
                 batch_size: int | None):
        if not callable(sampler):
            raise TypeError(f"sampler must be callable as sampler(level, n), got {type(sampler).__name__}")
        self.sampler, self.M, self.cost_model = sampler, M, cost
        self.batch_size = None if batch_size is None else check_count("batch_size", batch_size, 1)
        try:
            params = inspect.signature(sampler).parameters
            self.accepts_coarse = "coarse" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self.accepts_coarse = False
        self.q_shape: tuple | None = None
        self.levels: dict[int, _Level] = {}
        self.base: int | None = None

    def fine_cost(self, level: int) -> float:
        if self.cost_model is not None:
            c = float(self.cost_model(level))
            if not (c > 0 and math.isfinite(c)):
                raise ValueError(f"cost({level}) must be a positive number, got {c}")
            return c
        return float(self.M**level)

    def _call(self, level: int, n: int, base: bool):
        if base and level > 0 and self.accepts_coarse:
            out = self.sampler(level, n, coarse=False)
        else:
            out = self.sampler(level, n)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            got = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
            raise ValueError(f"sampler({level}, {n}) must return (P_fine, P_coarse) or (P_fine, P_coarse, cost), "
                             f"got {got}")
        pf = _to_numpy("P_fine", out[0], level)
        if pf.ndim == 0 or pf.shape[0] != n:
            raise ValueError(f"sampler({level}, {n}) returned P_fine of shape {pf.shape}; expected (n, *q) with n={n}")
        if base:
            pc = np.zeros_like(pf)
        else:
            pc = _to_numpy("P_coarse", out[1], level)
            if pc.shape != pf.shape:
                raise ValueError(f"sampler({level}, {n}) returned P_fine of shape {pf.shape} and P_coarse of shape "
                                 f"{pc.shape}; expected equal shapes (n, *q) with n={n}")
        if self.q_shape is None:
            self.q_shape = pf.shape[1:]
        elif pf.shape[1:] != self.q_shape:
            raise ValueError(f"sampler({level}, {n}) returned samples of shape {pf.shape[1:]} per draw, but earlier "
                             f"calls returned {self.q_shape}; the quantity must keep one shape across levels")
        pf, pc = pf.reshape(n, -1), pc.reshape(n, -1)
        if not (np.isfinite(pf).all() and np.isfinite(pc).all()):
            bad = int((~np.isfinite(pf).all(1) | ~np.isfinite(pc).all(1)).sum())
            raise ValueError(f"sampler({level}, {n}) returned NaN or inf in {bad} of {n} samples; "
                             "expected finite values (is the level too coarse to be stable?)")
        if len(out) == 3 and out[2] is not None:
            cost = float(out[2])
            if not (cost >= 0 and math.isfinite(cost)):
                raise ValueError(f"sampler({level}, {n}) reported cost {cost}; expected a finite number >= 0")
        else:
            cost = n * (self.fine_cost(level) + (0.0 if base else self.fine_cost(level - 1)))
        return pf, pc, cost

    def draw(self, level: int, n: int, base: bool) -> None:
        remaining = int(n)
        while remaining > 0:
            m = remaining if self.batch_size is None else min(remaining, self.batch_size)
            pf, pc, cost = self._call(level, m, base)
            if level not in self.levels:
                self.levels[level] = _Level(pf.shape[1])
            self.levels[level].add(pf, pc, cost)
            remaining -= m

    def mean(self, level: int) -> np.ndarray:
        lv = self.levels[level]
        return lv.s[0] / lv.n


# -- the adaptive driver -------------------------------------------------------------------
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def _warn_decay(beta_fit: float, where: str) -> None:
    if math.isfinite(beta_fit) and beta_fit <= 0.1:
        warnings.warn(f"{where}: the variance V_l of the level corrections does not decay with the level "
                      f"(measured beta = {beta_fit:.2f}); MLMC will not pay over standard Monte Carlo on the "
                      "finest level — check that fine and coarse paths share their random inputs, or start "
                      "from a finer level", MLMCWarning, stacklevel=3)


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
    eps = _check_eps(eps)
    M = _check_M(M)
    n_initial = check_count("n_initial", n_initial, 2)
    n_min = check_count("n_min", n_min, 2)
    max_level = check_count("max_level", max_level, 2)
    alpha_0, beta_0, gamma_0 = _check_rate("alpha", alpha), _check_rate("beta", beta), _check_rate("gamma", gamma)
    if not 0 < theta < 1:
        raise ValueError(f"theta must lie in (0, 1), got {theta}")
    bias_levels = check_count("bias_levels", bias_levels, 1)
    _norm_weight(norm, 1)
    if isinstance(start_level, str):
        if start_level != "auto":
            raise ValueError(f"start_level must be an integer >= 0 or 'auto', got {start_level!r}")
        start_level = select_start_level(sampler, M=M, n=n_initial, max_level=max_level - 2, cost=cost,
                                         norm=norm, batch_size=batch_size)["start_level"]
    l0 = check_count("start_level", start_level, 0)
    if max_level < l0 + 2:
        raise ValueError(f"max_level must be >= start_level + 2 = {l0 + 2}, got {max_level}")

    run = _Runner(sampler, M, cost, batch_size)
    alpha_c = alpha_0 if alpha_0 is not None else 0.0
    beta_c = beta_0 if beta_0 is not None else 0.0
    gamma_c = gamma_0 if gamma_0 is not None else 1.0
    L = l0 + 2
    levels = list(range(l0, L + 1))
    dN = np.full(len(levels), n_initial, dtype=np.int64)
    converged = True
    fitted: dict = {}
    with _progress(None, desc=f"mlmc eps={eps:g}", enabled=progress, unit="round") as bar:
        for _ in range(_MAX_ITER):
            for i, lv in enumerate(levels):
                if dN[i] > 0:
                    run.draw(lv, int(dN[i]), base=(lv == l0))
            w = _norm_weight(norm, int(np.prod(run.q_shape)) if run.q_shape else 1)
            st = [run.levels[lv].stats(w) for lv in levels]
            Nl = np.array([s["N"] for s in st], dtype=np.int64)
            ml = np.array([s["mean_norm"] for s in st])
            Vl = np.array([s["var"] for s in st])
            Cl = np.array([s["cost"] for s in st])
            # Remark 1: floor the estimates of the finer levels by the rate models
            for i in range(2, len(levels)):
                ml[i] = max(ml[i], 0.5 * ml[i - 1] * M**-alpha_c)
                Vl[i] = max(Vl[i], 0.5 * Vl[i - 1] * M**-beta_c)
            up = levels[1:]
            fitted = {"alpha": fit_rate(up, ml[1:], M), "beta": fit_rate(up, Vl[1:], M),
                      "gamma": -fit_rate(up, Cl[1:], M)}
            if alpha_0 is None and math.isfinite(fitted["alpha"]):
                alpha_c = max(0.5, fitted["alpha"])
            if beta_0 is None and math.isfinite(fitted["beta"]):
                beta_c = max(0.5, fitted["beta"])
            if gamma_0 is None and math.isfinite(fitted["gamma"]):
                gamma_c = max(0.5, fitted["gamma"])
            Ns = _allocation(Vl, Cl, eps, theta, n_min)
            dN = np.maximum(0, Ns - Nl)
            if not np.any(dN > 0.01 * Nl):
                ml_raw = np.array([s["mean_norm_raw"] for s in st])
                bias, _ = _bias_safe(ml, ml_raw, M, alpha_c, bias_levels)
                if not bias <= math.sqrt(theta) * eps:  # a NaN is never a pass
                    if L >= max_level:
                        converged = False
                        if warn:
                            warnings.warn(f"mlmc reached max_level={max_level} with the bias estimate {bias:.3g} "
                                          f"above sqrt(theta)*eps = {math.sqrt(theta) * eps:.3g}; the result "
                                          "misses the requested accuracy", MLMCWarning, stacklevel=2)
                    else:
                        L += 1
                        levels.append(L)
                        Vl = np.append(Vl, Vl[-1] * M**-beta_c)
                        Cl = np.append(Cl, Cl[-1] * M**gamma_c)
                        Nl = np.append(Nl, 0)
                        Ns = _allocation(Vl, Cl, eps, theta, n_min)
                        dN = np.maximum(0, Ns - Nl)
            bar.update(1)
            bar.set_postfix(L=L, cost=f"{sum(run.levels[lv].cost for lv in run.levels):.3g}")
            if dN.sum() == 0:
                break
    # final numbers
    w = _norm_weight(norm, int(np.prod(run.q_shape)))
    st = [run.levels[lv].stats(w) for lv in levels]
    Nl = [s["N"] for s in st]
    V_raw = np.array([s["var"] for s in st])
    ml = np.array([s["mean_norm"] for s in st])
    ml_f = ml.copy()
    for i in range(2, len(levels)):
        ml_f[i] = max(ml_f[i], 0.5 * ml_f[i - 1] * M**-alpha_c)
    ml_raw = np.array([s["mean_norm_raw"] for s in st])
    bias, fallback = _bias_safe(ml_f, ml_raw, M, alpha_c, bias_levels)
    variance = float(np.sum(V_raw / np.asarray(Nl)))
    if fallback:
        fitted = {**fitted, "bias_fallback": True}
        if warn:
            warnings.warn(f"mlmc could not fit the weak-error rate alpha (the level means are "
                          f"{', '.join(f'{m:.3g}' for m in ml)} after debiasing) and none was given, so the bias "
                          f"estimate {bias:.3g} is the largest norm of the last {min(bias_levels, len(ml) - 1)} "
                          f"level means (not debiased) instead of eq. (Remark 1); pass alpha= to use a known rate",
                          MLMCWarning, stacklevel=2)
    if not (math.isfinite(bias) and math.isfinite(variance)):
        converged = False
    estimate = sum(run.mean(lv) for lv in levels).reshape(run.q_shape)
    total_cost = float(sum(run.levels[lv].cost for lv in levels))
    C = [s["cost"] for s in st]
    var_fine = [s["var_fine"] for s in st]
    vf_L = var_fine[-1] if var_fine_L is None else float(var_fine_L)
    cf_L = C[-1] if len(levels) == 1 else C[-1] / (1 + M**-gamma_c)
    if cost is not None:
        cf_L = run.fine_cost(L)
    std_cost = vf_L * cf_L / ((1 - theta) * eps**2)
    if warn:
        _warn_decay(fitted.get("beta", float("nan")), "mlmc")
    return MLMCResult(
        estimate=estimate, eps=eps, M=M, levels=list(levels), N=Nl, cost=total_cost, C=C, V=V_raw.tolist(),
        mean_norm=ml.tolist(), var_fine=var_fine, alpha=alpha_c, beta=beta_c, gamma=gamma_c, bias=bias,
        variance=variance, rmse=math.sqrt(bias**2 + variance), std_cost=std_cost,
        savings=std_cost / total_cost if total_cost > 0 else float("nan"), converged=converged, norm=norm,
        fitted=fitted)


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
