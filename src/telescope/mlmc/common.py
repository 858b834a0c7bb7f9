"""What the MLMC driver and its tests share: argument checks, the norm of a quantity, JSON output, warnings."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["MLMCWarning"]


class MLMCWarning(UserWarning):
    """Warnings from the MLMC driver and tests (non-decaying variance, failed checks, ...)."""


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


def _warn_decay(beta_fit: float, where: str, stacklevel: int = 3) -> None:
    if math.isfinite(beta_fit) and beta_fit <= 0.1:
        warnings.warn(f"{where}: the variance V_l of the level corrections does not decay with the level "
                      f"(measured beta = {beta_fit:.2f}); MLMC will not pay over standard Monte Carlo on the "
                      "finest level — check that fine and coarse paths share their random inputs, or start "
                      "from a finer level", MLMCWarning, stacklevel=stacklevel)

