r"""Figures for checking posteriors and training runs.

* :func:`corner` -- pair plot of posterior samples: 1-d histograms on the diagonal, 2-d
  histograms below it, reference samples overlaid as 68% / 95% highest-density contours and the
  true parameter marked with lines (the layout popularised by Foreman-Mackey's ``corner``);
  it lives in :mod:`telescope.plots.corner_plot` and is importable from here too.
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

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..utils import save_figure as _save
from ._inputs import PathLike, _array, _matrix
from ._layout import _grid_shape, _panels
from .corner_plot import corner

__all__ = ["corner", "coverage_plot", "training_curves", "sbc_histograms"]


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
    nrows, ncols = _grid_shape(d, ncols)

    # bin b holds the rank values edges[b], ..., edges[b + 1] - 1
    edges = np.floor(np.arange(bins + 1) * (n_samples + 1) / bins)
    prob = np.diff(edges) / (n_samples + 1)
    tail = (1 - confidence) / 2
    lo, hi = binom.ppf(tail, m, prob), binom.ppf(1 - tail, m, prob)
    x_edges = edges - 0.5

    fig = Figure(figsize=(3.0 * ncols, 2.5 * nrows))
    for k, ax in enumerate(_panels(fig, d, nrows, ncols)):
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
