"""The panel grid of the multi-panel figures: one panel per coordinate, row by row."""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__: list[str] = []


def _grid_shape(k: int, ncols: int) -> tuple[int, int]:
    """``(nrows, ncols)`` for ``k`` panels with at most ``ncols`` to a row (at least 1, at most ``k``)."""
    ncols = max(1, min(int(ncols), k))
    return math.ceil(k / ncols), ncols


def _panels(fig: Figure, k: int, nrows: int, ncols: int) -> list[Axes]:
    """The first ``k`` axes of an ``nrows x ncols`` grid on ``fig``, row by row; the grid's other axes are removed."""
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[k:]:
        ax.remove()
    return list(axes.ravel()[:k])
