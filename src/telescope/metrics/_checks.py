"""Input checks shared by the metrics: sample matrices, pairs of samples, subsampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__: list[str] = []


def _as_tensor(name: str, value: Any, dtype=torch.float64) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(dtype)
    try:
        return torch.as_tensor(np.asarray(value), dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a torch tensor or numpy array of numbers, "
                        f"got {type(value).__name__}: {e}") from None


def _samples(name: str, value: Any, *, min_rows: int = 1) -> Tensor:
    """A ``(n, d)`` float64 sample matrix; a ``(n,)`` vector is read as ``(n, 1)``."""
    t = _as_tensor(name, value)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d) (or (n,) for d = 1), got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one dimension, got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} sample{'s' if min_rows > 1 else ''}, "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t).all(-1)).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} of {t.shape[0]} rows; expected finite samples")
    return t


def _pair(p: Any, q: Any, *, min_rows: int = 1) -> tuple[Tensor, Tensor]:
    p = _samples("p", p, min_rows=min_rows)
    q = _samples("q", q, min_rows=min_rows)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"p and q must have the same trailing dimension, got p of shape {tuple(p.shape)} "
                         f"and q of shape {tuple(q.shape)}")
    return p, q


def _subsample(t: Tensor, k: int | None, generator: torch.Generator) -> Tensor:
    if k is None or t.shape[0] <= k:
        return t
    return t[torch.randperm(t.shape[0], generator=generator)[:k]]
