"""Figures, built on :class:`matplotlib.figure.Figure` without ``pyplot`` state (imported lazily by ``telescope``).

* :mod:`~telescope.plots.corner_plot` — :func:`corner`, the pair plot of posterior samples;
* :mod:`~telescope.plots.figures` — :func:`coverage_plot`, :func:`training_curves`, :func:`sbc_histograms`;
* :mod:`~telescope.plots.mlmc` — :func:`plot_mlmc`, the MLMC panels of Figure 3 of Haji-Ali et al. (2025);
* :mod:`~telescope.plots.calibration` — :func:`tarp_plot`, :func:`sbc_ecdf_plot` (simultaneous ECDF bands),
  :func:`ppc_plot` (posterior predictive checks).
"""

from .calibration import ppc_plot, sbc_ecdf_plot, tarp_plot
from .corner_plot import corner
from .figures import coverage_plot, sbc_histograms, training_curves
from .mlmc import plot_mlmc

__all__ = ["corner", "coverage_plot", "training_curves", "sbc_histograms", "plot_mlmc", "tarp_plot", "sbc_ecdf_plot",
           "ppc_plot"]
