"""The MLMC panels of Figure 3 of Haji-Ali et al. (2025), drawn with matplotlib (Agg).

From left to right: the variances :math:`V[P_\\ell]` and :math:`V_\\ell = V[P_\\ell - P_{\\ell-1}]`
against the level (the latter decaying with rate :math:`\\beta`); the norms of the means
:math:`\\|E P_\\ell\\|` and :math:`\\|E[P_\\ell - P_{\\ell-1}]\\|` (rate :math:`\\alpha`); the samples
:math:`N_\\ell` per level for each tolerance; and the accuracy reached against the total cost
(network evaluations) for MLMC and standard Monte Carlo.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["plot_mlmc"]


def _fit_line(ax, levels, values, rate, M, color, label):
    lv = np.asarray(levels, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    if rate is None or not math.isfinite(rate) or ok.sum() < 2:
        return
    # anchor the line on the finest fitted point
    x1, y1 = lv[ok][-1], v[ok][-1]
    ax.plot(lv, y1 * float(M) ** (-rate * (lv - x1)), ":", color=color, lw=1, label=f"{label} = {rate:.2f}")


def _level_panel(ax, lv, fine, corrections, fit, rate, M, labels, ylabel):
    """One convergence panel: a quantity of ``P_l`` and of the corrections ``P_l - P_(l-1)`` against the level,
    with the fitted rate's line through the corrections; ``labels`` names the two and the rate."""
    ax.semilogy(lv, fine, "o-", label=labels[0])
    ax.semilogy(lv[1:], corrections[1:], "s-", label=labels[1])
    _fit_line(ax, fit, [corrections[i] for i in fit], rate, M, "C1", labels[2])
    ax.set_xlabel(r"level $\ell$")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def plot_mlmc(result: dict, path: str | None = None, title: str | None = None):
    """Draw the four Figure-3 panels from :func:`telescope.mlmc.mlmc_test` output.

    Arguments:
        result: ``{"convergence": ..., "complexity": ...}`` (either may be missing).
        path: where to save the PNG (``None``: do not save).
        title: figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    conv = result.get("convergence")
    comp = result.get("complexity")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9))
    if conv is not None:
        M = conv["M"]
        lv = np.asarray(conv["levels"])
        fit = conv.get("fit_levels", list(lv[1:]))
        _level_panel(axes[0], lv, conv["var_fine"], conv["var"], fit, conv.get("beta"), M,
                     (r"$V[P_\ell]$", r"$V[P_\ell - P_{\ell-1}]$", r"$\beta$"), "variance")
        _level_panel(axes[1], lv, conv["mean_fine"], conv["mean"], fit, conv.get("alpha"), M,
                     (r"$\|E P_\ell\|$", r"$\|E[P_\ell - P_{\ell-1}]\|$", r"$\alpha$"), "norm of mean")
        if conv.get("start_level") is not None:
            for a in axes[:2]:
                a.axvline(conv["start_level"], color="gray", lw=0.8, ls="--")
    if comp is not None:
        ax = axes[2]
        for e, levels, N in zip(comp["eps"], comp["levels"], comp["N"]):
            ax.semilogy(levels, N, "o-", label=f"ε = {e:g}")
        ax.set_xlabel(r"level $\ell$")
        ax.set_ylabel(r"$N_\ell$")
        ax.legend(fontsize=8)
        ax = axes[3]
        eps = np.asarray(comp["eps"])
        ax.loglog(comp["mlmc_cost"], eps**2, "o-", label="MLMC")
        ax.loglog(comp["std_cost"], eps**2, "s-", label="standard MC")
        for c_ml, _c_mc, e, s in zip(comp["mlmc_cost"], comp["std_cost"], eps, comp["savings"]):
            ax.annotate(f"{s:.1f}x", (c_ml, e**2), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("cost (network evaluations)")
        ax.set_ylabel(r"MSE $\varepsilon^2$")
        ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3, which="both", lw=0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
