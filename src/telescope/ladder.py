"""Deprecated path of :mod:`telescope.simulation.ladder` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.simulation.ladder")
