r"""The corner plot: pair plot of posterior samples.

:func:`corner` draws 1-d histograms on the diagonal and 2-d histograms below it, reference samples
overlaid as 68% / 95% highest-density contours and the true parameter marked with lines (the layout
popularised by Foreman-Mackey's ``corner``).  It builds a :class:`matplotlib.figure.Figure` directly (no
``pyplot`` state) and writes it to ``path`` when one is given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..utils import save_figure as _save
from ._inputs import PathLike, _array, _matrix

__all__ = ["corner"]


def corner(samples: Any, *, reference: Any = None, truth: Any = None, labels: Sequence[str] | None = None,
           limits: Sequence[tuple[float, float]] | None = None, path: PathLike | None = None, bins: int = 40,
           sample_label: str = "samples", reference_label: str = "reference", color: str = "C0",
           reference_color: str = "C1", truth_color: str = "k", smooth: float = 1.0,
           figsize: tuple[float, float] | None = None, dpi: int = 120) -> Figure:
    r"""Pair plot of ``(n, d)`` samples.

    Arguments:
        samples: ``(n, d)`` samples (``(n,)`` for one parameter).
        reference: optional ``(m, d)`` reference samples (e.g. the true posterior), drawn as
            outline histograms and 68% / 95% highest-density contours.
        truth: optional ``(d,)`` true parameter, marked with lines (and a dot below the diagonal).
        labels: ``d`` axis labels; default :math:`\theta_1, \ldots, \theta_d`.
        limits: ``d`` pairs ``(low, high)``; default the central 99% of all samples and the truth,
            padded by 5%.
        path: where to save the figure (format from the suffix); parent folders are created.
        bins: histogram bins per axis.
        sample_label, reference_label: legend entries.
        color, reference_color, truth_color: matplotlib colours.
        smooth: Gaussian smoothing (in bins) of the 2-d histograms behind the reference
            contours; 0 for none.
        figsize: figure size in inches; default ``2.2 d`` square.
        dpi: resolution of the saved image.

    Returns:
        The figure: ``d (d + 1) / 2`` axes (the lower triangle and the diagonal, row by row).

    Example:
        >>> import torch
        >>> fig = corner(torch.randn(500, 3), truth=torch.zeros(3))
        >>> len(fig.axes)
        6
    """
    x, ref, t, labels, lims = _corner_inputs(samples, reference, truth, labels, limits, bins)
    d = x.shape[1]
    size = figsize or (max(3.0, 2.2 * d), max(3.0, 2.2 * d))
    fig = Figure(figsize=size)
    axes = fig.subplots(d, d, squeeze=False)
    edges = [np.linspace(lo, hi, bins + 1) for lo, hi in lims]
    colors = (color, reference_color, truth_color)
    for i in range(d):
        for j in range(d):
            ax: Axes = axes[i, j]
            if j > i:
                ax.remove()
                continue
            if i == j:
                _corner_diagonal(ax, i, x, ref, t, edges, lims, colors)
            else:
                _corner_pair(ax, i, j, x, ref, t, edges, lims, colors, smooth)
                if j == 0:
                    ax.set_ylabel(labels[i])
                else:
                    ax.set_yticklabels([])
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            ax.tick_params(labelsize=8)
    _corner_legend(fig, axes, d, ref is not None, t is not None, sample_label, reference_label, colors)
    fig.subplots_adjust(wspace=0.08, hspace=0.08)
    return _save(fig, path, dpi)


def _corner_inputs(samples, reference, truth, labels, limits, bins) -> tuple:
    """:func:`corner`'s inputs checked: samples, reference, truth as arrays, ``d`` labels and ``d`` axis limits."""
    x = _finite_rows("samples", _matrix("samples", samples))
    d = x.shape[1]
    ref = None if reference is None else _finite_rows("reference", _matrix("reference", reference, d))
    t = None
    if truth is not None:
        t = _array("truth", truth).reshape(-1)
        if t.shape != (d,):
            raise ValueError(f"truth must have shape ({d},) like the samples' dimension, got shape "
                             f"{_array('truth', truth).shape}")
    if labels is None:
        labels = [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    else:
        labels = [str(v) for v in labels]
        if len(labels) != d:
            raise ValueError(f"labels must hold {d} names (one per dimension), got {len(labels)}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if limits is None:
        lims = [_finite_range([x[:, i]] + ([ref[:, i]] if ref is not None else []),
                              None if t is None else float(t[i])) for i in range(d)]
    else:
        lims = [tuple(map(float, lim)) for lim in limits]
        if len(lims) != d or any(len(lim) != 2 or not lim[0] < lim[1] for lim in lims):
            raise ValueError(f"limits must be {d} pairs (low, high) with low < high, got {limits!r}")
    return x, ref, t, labels, lims


def _corner_diagonal(ax: Axes, i: int, x, ref, t, edges, lims, colors) -> None:
    """Panel ``(i, i)``: the histogram of parameter ``i`` (reference as an outline, truth as a line)."""
    color, reference_color, truth_color = colors
    ax.hist(x[:, i], bins=edges[i], density=True, histtype="stepfilled", alpha=0.45, color=color)
    if ref is not None:
        ax.hist(ref[:, i], bins=edges[i], density=True, histtype="step", linewidth=1.5,
                color=reference_color)
    if t is not None:
        ax.axvline(t[i], color=truth_color, linewidth=1.2)
    ax.set_yticks([])
    ax.set_xlim(lims[i])


def _corner_pair(ax: Axes, i: int, j: int, x, ref, t, edges, lims, colors, smooth: float) -> None:
    """Panel ``(i, j)``, ``j < i``: the 2-d histogram of parameters ``j``, ``i``, the reference's 68% / 95%
    highest-density contours and the truth."""
    color, reference_color, truth_color = colors
    h, _, _ = np.histogram2d(x[:, j], x[:, i], bins=[edges[j], edges[i]])
    h = np.ma.masked_equal(h.T, 0)
    ax.pcolormesh(edges[j], edges[i], h, cmap=_cmap_for(color), shading="flat", rasterized=True)
    if ref is not None:
        hr, _, _ = np.histogram2d(ref[:, j], ref[:, i], bins=[edges[j], edges[i]])
        if smooth:
            from scipy.ndimage import gaussian_filter

            hr = gaussian_filter(hr, smooth)
        levels = _hpd_thresholds(hr, (0.95, 0.68))
        if levels:
            centres_x = 0.5 * (edges[j][1:] + edges[j][:-1])
            centres_y = 0.5 * (edges[i][1:] + edges[i][:-1])
            ax.contour(centres_x, centres_y, hr.T, levels=levels, colors=reference_color,
                       linewidths=1.2)
    if t is not None:
        ax.axvline(t[j], color=truth_color, linewidth=1.0)
        ax.axhline(t[i], color=truth_color, linewidth=1.0)
        ax.plot(t[j], t[i], "o", color=truth_color, markersize=3)
    ax.set_xlim(lims[j])
    ax.set_ylim(lims[i])


def _corner_legend(fig: Figure, axes, d: int, has_ref: bool, has_truth: bool, sample_label: str,
                   reference_label: str, colors) -> None:
    """The legend (samples, reference, truth) when there is more than the samples to name."""
    color, reference_color, truth_color = colors
    handles = [Patch(color=color, alpha=0.45, label=sample_label)]
    if has_ref:
        handles.append(Line2D([], [], color=reference_color, linewidth=1.5, label=reference_label))
    if has_truth:
        handles.append(Line2D([], [], color=truth_color, linewidth=1.2, label="truth"))
    if len(handles) > 1:
        if d == 1:
            axes[0, 0].legend(handles=handles, loc="upper right", frameon=False, fontsize=8)
        else:  # the empty upper triangle has room for it
            fig.legend(handles=handles, loc="upper right", frameon=False, fontsize=9)


def _cmap_for(color: str):
    from matplotlib.colors import LinearSegmentedColormap, to_rgba

    return LinearSegmentedColormap.from_list("telescope_corner", [(1, 1, 1, 0), to_rgba(color)])


def _finite_rows(name: str, a: np.ndarray) -> np.ndarray:
    """Drop rows with NaN or inf (diverged samples), with a warning (pointing at :func:`corner`'s caller); error if
    none is left."""
    ok = np.isfinite(a).all(-1)
    if ok.all():
        return a
    if not ok.any():
        raise ValueError(f"{name} has no finite row (all {a.shape[0]} rows contain NaN or inf)")
    warnings.warn(f"{name}: dropped {int((~ok).sum())} of {a.shape[0]} rows containing NaN or inf", stacklevel=4)
    return a[ok]


def _finite_range(columns: list[np.ndarray], extra: float | None) -> tuple[float, float]:
    """Central 99% of the pooled values (plus ``extra``), padded by 5%."""
    lo, hi = math.inf, -math.inf
    for c in columns:
        c = c[np.isfinite(c)]
        if c.size:
            lo = min(lo, float(np.quantile(c, 0.005)))
            hi = max(hi, float(np.quantile(c, 0.995)))
    if extra is not None and math.isfinite(extra):
        lo, hi = min(lo, extra), max(hi, extra)
    if not math.isfinite(lo):
        return 0.0, 1.0
    if hi - lo <= 0:
        return lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _hpd_thresholds(hist: np.ndarray, masses: Sequence[float]) -> list[float]:
    """Density thresholds whose super-level sets hold ``masses`` of the histogram, increasing."""
    flat = np.sort(hist.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cum = np.cumsum(flat) / total
    levels = sorted({float(flat[min(np.searchsorted(cum, m), flat.size - 1)]) for m in masses})
    return [v for v in levels if v > 0]
