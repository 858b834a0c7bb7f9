"""Deprecated path of :mod:`telescope.plots.mlmc` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.plots.mlmc")
