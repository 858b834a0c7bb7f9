r"""Figures for checking posteriors and training runs.

* :func:`corner` -- pair plot of posterior samples: 1-d histograms on the diagonal, 2-d
  histograms below it, reference samples overlaid as 68% / 95% highest-density contours and the
  true parameter marked with lines (the layout popularised by Foreman-Mackey's ``corner``).
* :func:`coverage_plot` -- empirical against nominal coverage of HPD regions
  (Hermans et al., 2022), with the diagonal and an optional binomial band: the range a
  calibrated estimator stays in with probability ``confidence`` given ``n_pairs`` test pairs
  (pointwise, :math:`\mathrm{Bin}(n, \alpha) / n` quantiles).
* :func:`training_curves` -- training and validation loss per epoch, best epoch marked.
* :func:`sbc_histograms` -- simulation-based-calibration rank histograms (Talts et al., 2018),
  one panel per parameter, with the band that uniform ranks stay in with probability
  ``confidence`` in each bin.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, no
GUI: PNG/PDF output goes through the Agg renderer), returns it, and writes it to ``path`` when
one is given.  Inputs may be torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..utils import save_figure as _save

__all__ = ["corner", "coverage_plot", "training_curves", "sbc_histograms"]

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------
# helpers


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


def _finite_rows(name: str, a: np.ndarray) -> np.ndarray:
    """Drop rows with NaN or inf (diverged samples), with a warning; error if none is left."""
    ok = np.isfinite(a).all(-1)
    if ok.all():
        return a
    if not ok.any():
        raise ValueError(f"{name} has no finite row (all {a.shape[0]} rows contain NaN or inf)")
    warnings.warn(f"{name}: dropped {int((~ok).sum())} of {a.shape[0]} rows containing NaN or inf", stacklevel=3)
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


# ----------------------------------------------------------------------------------------------
# corner


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
    x = _finite_rows("samples", _matrix("samples", samples))
    n, d = x.shape
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

    if smooth:
        from scipy.ndimage import gaussian_filter

    size = figsize or (max(3.0, 2.2 * d), max(3.0, 2.2 * d))
    fig = Figure(figsize=size)
    axes = fig.subplots(d, d, squeeze=False)
    edges = [np.linspace(lo, hi, bins + 1) for lo, hi in lims]

    for i in range(d):
        for j in range(d):
            ax: Axes = axes[i, j]
            if j > i:
                ax.remove()
                continue
            if i == j:
                ax.hist(x[:, i], bins=edges[i], density=True, histtype="stepfilled", alpha=0.45, color=color)
                if ref is not None:
                    ax.hist(ref[:, i], bins=edges[i], density=True, histtype="step", linewidth=1.5,
                            color=reference_color)
                if t is not None:
                    ax.axvline(t[i], color=truth_color, linewidth=1.2)
                ax.set_yticks([])
                ax.set_xlim(lims[i])
            else:
                h, _, _ = np.histogram2d(x[:, j], x[:, i], bins=[edges[j], edges[i]])
                h = np.ma.masked_equal(h.T, 0)
                ax.pcolormesh(edges[j], edges[i], h, cmap=_cmap_for(color), shading="flat", rasterized=True)
                if ref is not None:
                    hr, _, _ = np.histogram2d(ref[:, j], ref[:, i], bins=[edges[j], edges[i]])
                    if smooth:
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
                if j == 0:
                    ax.set_ylabel(labels[i])
                else:
                    ax.set_yticklabels([])
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            ax.tick_params(labelsize=8)

    handles = [Patch(color=color, alpha=0.45, label=sample_label)]
    if ref is not None:
        handles.append(Line2D([], [], color=reference_color, linewidth=1.5, label=reference_label))
    if t is not None:
        handles.append(Line2D([], [], color=truth_color, linewidth=1.2, label="truth"))
    if len(handles) > 1:
        if d == 1:
            axes[0, 0].legend(handles=handles, loc="upper right", frameon=False, fontsize=8)
        else:  # the empty upper triangle has room for it
            fig.legend(handles=handles, loc="upper right", frameon=False, fontsize=9)
    fig.subplots_adjust(wspace=0.08, hspace=0.08)
    return _save(fig, path, dpi)


def _cmap_for(color: str):
    from matplotlib.colors import LinearSegmentedColormap, to_rgba

    return LinearSegmentedColormap.from_list("telescope_corner", [(1, 1, 1, 0), to_rgba(color)])


# ----------------------------------------------------------------------------------------------
# coverage


def _binomial_band(alphas: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import binom

    tail = (1.0 - confidence) / 2.0
    return binom.ppf(tail, n, alphas) / n, binom.ppf(1.0 - tail, n, alphas) / n


def coverage_plot(alphas: Any, coverage: Any, *, label: str | None = None, path: PathLike | None = None,
                  n_pairs: int | None = None, confidence: float = 0.95, ax: Axes | None = None,
                  dpi: int = 120) -> Figure:
    """Empirical expected coverage against the nominal credibility level.

    Arguments:
        alphas: ``(k,)`` nominal levels in ``[0, 1]`` (e.g. from
            :func:`telescope.metrics.expected_coverage`).
        coverage: ``(k,)`` empirical coverage, or a dict ``{label: coverage}`` (sharing
            ``alphas``) or ``{label: (alphas, coverage)}`` to draw several curves.
        label: legend entry of a single curve.
        path: where to save the figure.
        n_pairs: number of test pairs behind the curves; if given, the band a calibrated
            estimator stays in (pointwise, with probability ``confidence``) is shaded.
        confidence: probability of that band.
        ax: draw into this axes instead of a new figure.
        dpi: resolution of the saved image.

    Returns:
        The figure (one axes).  Curves above the diagonal are conservative, below overconfident.

    Example:
        >>> import numpy as np
        >>> a = np.linspace(0, 1, 101)
        >>> fig = coverage_plot(a, {"NPE": a ** 1.5, "ML-NPE": a}, n_pairs=500)
        >>> len(fig.axes)
        1
    """
    al = _array("alphas", alphas).reshape(-1)
    if al.size == 0 or np.any(~np.isfinite(al)) or al.min() < 0 or al.max() > 1:
        raise ValueError(f"alphas must be a non-empty array of levels in [0, 1], got shape {al.shape}"
                         + (f" with values in [{al.min()}, {al.max()}]" if al.size else ""))
    if isinstance(coverage, Mapping):
        if not coverage:
            raise ValueError("coverage must not be an empty dict; expected {label: coverage}")
        curves = {}
        for key, value in coverage.items():
            if isinstance(value, tuple) and len(value) == 2:
                a_k, c_k = _array(f"coverage[{key!r}][0]", value[0]).reshape(-1), _array(
                    f"coverage[{key!r}][1]", value[1]).reshape(-1)
            else:
                a_k, c_k = al, _array(f"coverage[{key!r}]", value).reshape(-1)
            if a_k.shape != c_k.shape:
                raise ValueError(f"coverage[{key!r}] has shape {c_k.shape} but its alphas have shape {a_k.shape}; "
                                 "expected the same length")
            curves[str(key)] = (a_k, c_k)
    else:
        cov = _array("coverage", coverage).reshape(-1)
        if cov.shape != al.shape:
            raise ValueError(f"coverage must have the shape of alphas {al.shape}, got shape {cov.shape}")
        curves = {label: (al, cov)}
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")

    if ax is None:
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if n_pairs is not None:
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer or None, got {n_pairs!r}")
        grid = np.linspace(0.0, 1.0, 201)
        lo, hi = _binomial_band(grid, int(n_pairs), confidence)
        ax.fill_between(grid, lo, hi, color="0.85", linewidth=0,
                        label=f"{int(round(confidence * 100))}% band, {int(n_pairs)} pairs")
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1)
    for i, (name, (a_k, c_k)) in enumerate(curves.items()):
        ax.plot(a_k, c_k, color=f"C{i}", linewidth=1.8, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("empirical coverage")
    ax.text(0.03, 0.97, "conservative", transform=ax.transAxes, va="top", ha="left", fontsize=8, color="0.4")
    ax.text(0.97, 0.03, "overconfident", transform=ax.transAxes, va="bottom", ha="right", fontsize=8, color="0.4")
    if any(name is not None for name in curves) or n_pairs is not None:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.08), frameon=False, fontsize=8)
    return _save(fig, path, dpi)


# ----------------------------------------------------------------------------------------------
# training curves


def training_curves(history: Mapping[str, Any], path: PathLike | None = None, *, log_scale: bool = False,
                    title: str | None = None, ax: Axes | None = None, dpi: int = 120) -> Figure:
    """Training and validation loss per epoch.

    Arguments:
        history: a dict with ``"train_loss"`` (one value per epoch), optionally ``"val_loss"``
            and ``"best_epoch"`` (a 0-based index into the lists, marked with a vertical line).
            Other list-valued entries whose name contains ``"loss"`` are drawn as thin lines.
        path: where to save the figure.
        log_scale: logarithmic loss axis (only sensible for positive losses).
        title: axes title.
        ax: draw into this axes instead of a new figure.
        dpi: resolution of the saved image.

    Returns:
        The figure (one axes).

    Example:
        >>> fig = training_curves({"train_loss": [3, 2, 1.5], "val_loss": [3.1, 2.2, 2.4], "best_epoch": 1})
        >>> len(fig.axes)
        1
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict with 'train_loss' and 'val_loss' lists, got {type(history).__name__}")
    if "train_loss" not in history:
        raise ValueError(f"history must contain 'train_loss' (one value per epoch), got keys {sorted(history)}")
    series: dict[str, np.ndarray] = {}
    for key in ("train_loss", "val_loss"):
        if key in history:
            arr = _array(f"history[{key!r}]", history[key])
            if arr.ndim != 1:
                raise ValueError(f"history[{key!r}] must be a list of numbers (one per epoch), got shape {arr.shape}")
            series[key] = arr
    for key in sorted(k for k in history if isinstance(k, str) and "loss" in k and k not in series):
        try:
            arr = _array(key, history[key])
        except TypeError:
            continue
        if arr.ndim == 1:  # other per-epoch losses; scalars and tables are skipped
            series[key] = arr
    if series["train_loss"].size == 0:
        raise ValueError("history['train_loss'] is empty; expected one value per epoch")

    if ax is None:
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    styles = {"train_loss": dict(color="C0", linewidth=1.6, label="train"),
              "val_loss": dict(color="C1", linewidth=1.6, label="validation")}
    for i, (key, arr) in enumerate(series.items()):
        style = styles.get(key, dict(color=f"C{i + 2}", linewidth=0.9, alpha=0.8, label=key))
        ax.plot(np.arange(arr.size), arr, **style)
    best = history.get("best_epoch")
    if best is not None:
        if isinstance(best, bool) or not isinstance(best, (int, np.integer)) or best < 0:
            raise ValueError(f"history['best_epoch'] must be a non-negative integer epoch index, got {best!r}")
        ax.axvline(int(best), color="0.3", linestyle="--", linewidth=1, label=f"best epoch ({int(best)})")
        val = series.get("val_loss")
        if val is not None and best < val.size and np.isfinite(val[best]):
            ax.plot(best, val[best], "o", color="C1", markersize=5)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, path, dpi)


# ----------------------------------------------------------------------------------------------
# SBC


def sbc_histograms(ranks: Any, n_samples: int, path: PathLike | None = None, *, bins: int | None = None,
                   labels: Sequence[str] | None = None, confidence: float = 0.99, ncols: int = 4,
                   dpi: int = 120) -> Figure:
    r"""Histograms of simulation-based-calibration ranks, one panel per parameter.

    Arguments:
        ranks: ``(m, d)`` integer ranks in ``{0, ..., n_samples}`` (from
            :func:`telescope.metrics.sbc_ranks`).
        n_samples: posterior samples per observation used for the ranks.
        path: where to save the figure.
        bins: histogram bins; default about ``m / 20`` (between 2 and 20, at most ``n_samples + 1``).
            Bins hold whole rank values, so the expected count is exact even when they differ in width.
        labels: ``d`` panel titles; default :math:`\theta_1, \ldots, \theta_d`.
        confidence: probability that a uniform histogram's bar stays in the shaded band.
        ncols: panels per row.
        dpi: resolution of the saved image.

    Returns:
        The figure: ``d`` axes.  A U shape means overconfident, a hump underdispersed-conservative,
        a slope biased.

    Example:
        >>> import torch
        >>> fig = sbc_histograms(torch.randint(0, 101, (500, 2)), 100)
        >>> len(fig.axes)
        2
    """
    from scipy.stats import binom

    r = _matrix("ranks", ranks)
    m, d = r.shape
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if np.any(r < 0) or np.any(r > n_samples) or np.any(r != np.round(r)):
        raise ValueError(f"ranks must be integers in [0, n_samples] = [0, {n_samples}], got values in "
                         f"[{r.min()}, {r.max()}]")
    if bins is None:
        bins = max(2, min(20, m // 20, n_samples + 1))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= n_samples + 1:
        raise ValueError(f"bins must be an integer in [1, n_samples + 1] = [1, {n_samples + 1}], got {bins!r}")
    if labels is None:
        labels = [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    elif len(labels) != d:
        raise ValueError(f"labels must hold {d} names (one per dimension), got {len(labels)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    ncols = max(1, min(int(ncols), d))
    nrows = math.ceil(d / ncols)

    # bin b holds the rank values edges[b], ..., edges[b + 1] - 1
    edges = np.floor(np.arange(bins + 1) * (n_samples + 1) / bins)
    prob = np.diff(edges) / (n_samples + 1)
    tail = (1 - confidence) / 2
    lo, hi = binom.ppf(tail, m, prob), binom.ppf(1 - tail, m, prob)
    x_edges = edges - 0.5

    fig = Figure(figsize=(3.0 * ncols, 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        if k >= d:
            ax.remove()
            continue
        counts, _ = np.histogram(r[:, k], bins=x_edges)
        ax.stairs(counts, x_edges, fill=True, color="C0", alpha=0.6)
        ax.stairs(counts, x_edges, color="C0", linewidth=1)
        ax.fill_between(x_edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color="0.5",
                        alpha=0.3, linewidth=0, zorder=3)
        ax.stairs(m * prob, x_edges, color="0.3", linestyle="--", linewidth=1, zorder=4)
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_title(labels[k], fontsize=10)
        if k % ncols == 0:
            ax.set_ylabel("count")
        if k // ncols == nrows - 1 or k + ncols >= d:
            ax.set_xlabel("rank")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)
