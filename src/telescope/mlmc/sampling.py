r"""The level-sampler protocol: calling a level sampler, checking what it returns, per-level running sums.

A level sampler is any callable ``sampler(level, n)`` returning ``(P_fine, P_coarse)`` or
``(P_fine, P_coarse, cost)``: arrays or tensors ``(n, *q)`` of coupled samples of :math:`P_\ell` and
:math:`P_{\ell-1}` (``P_coarse`` is ignored at the base level and may be ``None``), and the total cost of
the ``n`` pairs.  Without a reported cost the ``cost`` model is used (default :math:`C^f_\ell = M^\ell`
per fine path).  A sampler that accepts a keyword ``coarse`` is called with ``coarse=False`` at a base
level above 0 (:mod:`telescope.mlmc.driver` describes the protocol in full).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np

from ..utils import check_count

__all__ = ["LevelSampler"]

LevelSampler = Callable[..., tuple]
"""``sampler(level, n) -> (P_fine, P_coarse)`` or ``(P_fine, P_coarse, total_cost)``."""


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

