"""Input checks shared by the figures: arrays from tensors or numpy, ``(n, d)`` matrices, the path type."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__: list[str] = []

PathLike = str | os.PathLike


def _array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}: {e}") from None


def _matrix(name: str, value: Any, dim: int | None = None) -> np.ndarray:
    a = _array(name, value)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}) like samples, got shape {a.shape}")
    return a
