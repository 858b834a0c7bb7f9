r"""Figures of the calibration checks of :mod:`telescope.calibration` (re-exported by :mod:`telescope.metrics`).

* :func:`tarp_plot` -- TARP expected coverage against the credibility level (Lemos et al., 2023),
  with the diagonal and the pointwise binomial band of a calibrated estimator.
* :func:`sbc_ecdf_plot` -- SBC ranks as ECDF differences ``F(z) - z`` with the simultaneous band of
  Säilynoja et al. (2022), one panel per parameter, the simultaneous p-value in each title; with
  ``histogram=True`` the rank histograms above them.
* :func:`ppc_plot` -- a posterior predictive check: replicate histograms with ``x_o`` marked (few
  coordinates), or the replicates' 50% / 90% intervals along the coordinates with ``x_o`` (many).

Each builds a :class:`matplotlib.figure.Figure` without ``pyplot`` state, returns it and saves it to
``path`` when given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..calibration import sbc_ecdf, sbc_ecdf_bands, sbc_ecdf_pvalues
from ._layout import _grid_shape, _panels
from .figures import PathLike, _array, _save, coverage_plot

__all__ = ["tarp_plot", "sbc_ecdf_plot", "ppc_plot"]


def tarp_plot(alphas: Any, ecp: Any, *, label: str | None = None, path: PathLike | None = None,
              n_pairs: int | None = None, confidence: float = 0.95, ax: Axes | None = None, dpi: int = 120) -> Figure:
    """TARP expected coverage probability against the credibility level.

    Arguments:
        alphas, ecp: from :func:`telescope.metrics.tarp` or :func:`telescope.metrics.tarp_coverage`; ``ecp``
            may be a dict ``{label: ecp}`` or ``{label: (alphas, ecp)}`` for several estimators.
        label, path, n_pairs, confidence, ax, dpi: as for :func:`telescope.plots.coverage_plot`.

    Returns:
        The figure (one axes).  A calibrated estimator follows the diagonal.

    Example:
        >>> import numpy as np
        >>> a = np.linspace(0, 1, 101)
        >>> tarp_plot(a, a, label="NPE", n_pairs=300).axes[0].get_ylabel()
        'expected coverage (TARP)'
    """
    fig = coverage_plot(alphas, ecp, label=label, n_pairs=n_pairs, confidence=confidence, ax=ax, dpi=dpi)
    axes = fig.axes[0] if ax is None else ax
    axes.set_ylabel("expected coverage (TARP)")
    return _save(fig, path, dpi)


def sbc_ecdf_plot(ranks: Any, n_samples: int, path: PathLike | None = None, *, confidence: float = 0.95,
                  histogram: bool = False, labels: Sequence[str] | None = None, points: int | None = None,
                  n_sim: int = 5000, seed: int = 0, ncols: int = 4, dpi: int = 120) -> Figure:
    r"""SBC ranks as ECDF differences with a simultaneous band (Säilynoja et al., 2022).

    Arguments:
        ranks: ``(m, d)`` integer ranks in ``{0..n_samples}`` (:func:`telescope.metrics.sbc_ranks` or
            :func:`telescope.metrics.sbc`).
        n_samples: posterior samples per pair behind the ranks.
        path: where to save the figure.
        confidence: probability that the ECDF of uniform ranks stays in the band everywhere.
        histogram: also draw the rank histograms (as :func:`telescope.plots.sbc_histograms`, pointwise
            band) in a row above each row of ECDF panels.
        labels: ``d`` panel titles; default :math:`\theta_1, \ldots, \theta_d`.
        points, n_sim, seed: as for :func:`telescope.metrics.sbc_ecdf_bands`.
        ncols: panels per row.
        dpi: resolution of the saved image.

    Returns:
        The figure: ``d`` ECDF panels (``2 d`` with ``histogram=True``).  An ECDF difference below
        zero then above (a dip then a rise) is the U-shaped histogram of an overconfident posterior;
        above then below is an underconfident one; one-sided is a bias.

    Example:
        >>> import torch
        >>> fig = sbc_ecdf_plot(torch.randint(0, 100, (300, 2)), 99, n_sim=500)
        >>> len(fig.axes)
        2
    """
    z, F = sbc_ecdf(ranks, n_samples, points=points)
    rk = _array("ranks", ranks).reshape(-1, F.shape[1])
    m, d = rk.shape
    band = sbc_ecdf_bands(m, n_samples, confidence=confidence, points=points, n_sim=n_sim, seed=seed)
    pvals = sbc_ecdf_pvalues(ranks, n_samples, points=points, n_sim=n_sim, seed=seed)
    if labels is None:
        labels = [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    elif len(labels) != d:
        raise ValueError(f"labels must hold {d} names (one per dimension), got {len(labels)}")
    nrows, ncols = _grid_shape(d, ncols)
    rows = 2 * nrows if histogram else nrows
    fig = Figure(figsize=(3.0 * ncols, 2.5 * rows))
    axes = fig.subplots(rows, ncols, squeeze=False)
    zz = np.concatenate([[0.0], z.numpy(), [1.0]])
    lo = np.concatenate([[0.0], band["lower"].numpy(), [1.0]]) - zz
    hi = np.concatenate([[0.0], band["upper"].numpy(), [1.0]]) - zz
    for k in range(nrows * ncols):
        r, c = divmod(k, ncols)
        ax = axes[2 * r + 1 if histogram else r, c]
        if histogram:
            top = axes[2 * r, c]
            if k >= d:
                top.remove()
            else:
                _rank_histogram(top, rk[:, k], n_samples, confidence)
                top.set_title(labels[k], fontsize=10)
        if k >= d:
            ax.remove()
            continue
        ax.fill_between(zz, lo, hi, color="0.85", linewidth=0,
                        label=f"{int(round(confidence * 100))}% simultaneous band")
        ax.axhline(0.0, color="0.4", linestyle="--", linewidth=1)
        ax.plot(zz, np.concatenate([[0.0], F[:, k].numpy(), [1.0]]) - zz, color="C0", linewidth=1.5)
        ax.set_xlim(0, 1)
        ax.set_title(f"{labels[k]}  (p = {float(pvals[k]):.3g})", fontsize=10)
        ax.set_xlabel("fractional rank", fontsize=8)
        if c == 0:
            ax.set_ylabel("ECDF difference", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _rank_histogram(ax: Axes, r: np.ndarray, n_samples: int, confidence: float) -> None:
    """Rank histogram of one parameter with the pointwise band of uniform ranks (bins of whole rank values)."""
    from scipy.stats import binom

    m = r.size
    bins = max(2, min(20, m // 20, n_samples + 1))
    edges = np.floor(np.arange(bins + 1) * (n_samples + 1) / bins)
    prob = np.diff(edges) / (n_samples + 1)
    tail = (1 - confidence) / 2
    lo, hi = binom.ppf(tail, m, prob), binom.ppf(1 - tail, m, prob)
    x_edges = edges - 0.5
    counts, _ = np.histogram(r, bins=x_edges)
    ax.stairs(counts, x_edges, fill=True, color="C0", alpha=0.6)
    ax.fill_between(x_edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color="0.5", alpha=0.3,
                    linewidth=0)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_xlabel("rank", fontsize=8)
    ax.tick_params(labelsize=8)


def ppc_plot(check: Mapping[str, Any], path: PathLike | None = None, *, labels: Sequence[str] | None = None,
             max_panels: int = 12, ncols: int = 4, dpi: int = 120) -> Figure:
    """Posterior predictive check: replicates from posterior draws against the observation.

    Arguments:
        check: the dict of :func:`telescope.metrics.posterior_predictive_check`.
        path: where to save the figure.
        labels: names of the ``k`` data coordinates; default ``x_1 .. x_k``.
        max_panels: up to this many coordinates get one histogram each (``x_o`` as a red line, the
            marginal p-value in the title); more are drawn as one panel of the replicates' median,
            50% and 90% intervals along the coordinate index, with ``x_o`` as dots.
        ncols: panels per row (histogram layout).
        dpi: resolution of the saved image.

    Returns:
        The figure; its title gives the joint (Mahalanobis) predictive p-value.

    Example:
        >>> import torch
        >>> from telescope.metrics import posterior_predictive_check
        >>> chk = posterior_predictive_check(lambda t: t + torch.randn_like(t), torch.randn(500, 3), torch.zeros(3))
        >>> len(ppc_plot(chk).axes)
        3
    """
    if not isinstance(check, Mapping) or not {"x_rep", "x_o", "p_values", "p_value"} <= set(check):
        raise TypeError("check must be the dict returned by telescope.metrics.posterior_predictive_check "
                        f"(with x_rep, x_o, p_values, p_value), got {type(check).__name__}")
    x_rep, x_o = _array("x_rep", check["x_rep"]), _array("x_o", check["x_o"]).reshape(-1)
    pv = _array("p_values", check["p_values"]).reshape(-1)
    k = x_o.size
    if labels is None:
        labels = [f"$x_{{{i + 1}}}$" for i in range(k)]
    elif len(labels) != k:
        raise ValueError(f"labels must hold {k} names (one per data coordinate), got {len(labels)}")
    title = f"posterior predictive check: joint p = {float(check['p_value']):.3g} ({x_rep.shape[0]} replicates)"
    if k <= max_panels:
        nrows, ncols = _grid_shape(k, ncols)
        fig = Figure(figsize=(3.0 * ncols, 2.4 * nrows + 0.4))
        for i, ax in enumerate(_panels(fig, k, nrows, ncols)):
            col = x_rep[:, i]
            ax.hist(col, bins=min(40, max(5, int(np.sqrt(col.size)))), color="C0", alpha=0.6)
            ax.axvline(x_o[i], color="C3", linewidth=1.5)
            ax.set_title(f"{labels[i]}  (p = {pv[i]:.3g})", fontsize=9)
            ax.tick_params(labelsize=8)
    else:
        fig = Figure(figsize=(min(14.0, 4 + 0.08 * k), 3.4))
        ax = fig.add_subplot()
        idx = np.arange(k)
        q = np.quantile(x_rep, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.fill_between(idx, q[0], q[4], color="C0", alpha=0.2, linewidth=0, label="90% of replicates")
        ax.fill_between(idx, q[1], q[3], color="C0", alpha=0.4, linewidth=0, label="50%")
        ax.plot(idx, q[2], color="C0", linewidth=1, label="median")
        ax.plot(idx, x_o, "o", color="C3", markersize=3, label="$x_o$")
        ax.set_xlabel("data coordinate")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
