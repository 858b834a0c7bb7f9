"""Small shared helpers: argument checks, progress bars, devices, figure files."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["check_seed", "check_count", "check_matrix", "check_finite_rows", "progress", "as_device", "save_figure"]


#: Seeds accepted by campaigns: every integer in ``[SEED_MIN, SEED_MAX]`` (the range of ``torch.manual_seed``)
#: gives its own stream.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def check_seed(seed, name: str = "seed") -> int:
    """An integer seed in ``[-2**63, 2**64 - 1]``, or a TypeError/ValueError naming ``name``.

    Floats (even ``1.0``), strings, ``None`` and booleans are refused rather than converted.
    """
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"{name} must be an integer in [-2**63, 2**64 - 1], got {seed!r} ({type(seed).__name__})")
    seed = int(seed.__index__())
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be an integer in [-2**63, 2**64 - 1] (the range of torch.manual_seed), "
                         f"got {seed}")
    return seed


def check_count(name: str, value, minimum: int = 1) -> int:
    """An integer ``>= minimum`` or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (hasattr(value, "__index__")):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_matrix(name: str, value, dim: int | None = None, *, allow_vector: bool = False,
                 dtype=torch.float32) -> Tensor:
    """Return ``value`` as a float tensor of shape ``(n, dim)``.

    With ``allow_vector`` a single ``(dim,)`` vector becomes ``(1, dim)``.  Raises a ValueError that
    names the argument, the shape seen and the shape expected.
    """
    try:
        t = torch.as_tensor(value, dtype=dtype) if not isinstance(value, Tensor) else value.to(dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}: {e}") from None
    want = f"(n, {dim})" if dim is not None else "(n, d)"
    if allow_vector and t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape {want}{' or (' + str(dim) + ',)' if allow_vector and dim else ''}, "
                         f"got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(t.shape)} "
                         f"(trailing dimension {t.shape[1]}, expected {dim} as at fit)")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(t.shape)}")
    return t


def check_finite_rows(name: str, t: Tensor) -> None:
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf in {int(bad.sum())} of {t.shape[0]} rows "
                         f"(first at row {int(torch.nonzero(bad)[0])}); expected finite values")


def as_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None


class _NullBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def set_description(self, *a, **k):
        pass


@contextlib.contextmanager
def progress(total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar (rate and ETA) or a silent stand-in when ``enabled`` is False."""
    if not enabled:
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
               smoothing=0.1, mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()


def logmeanexp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def save_figure(fig, path=None, dpi: int = 120):
    """Write ``fig`` (a matplotlib Figure) to ``path`` (parent folders created; tight bounding box) unless
    ``path`` is None; returns ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig
