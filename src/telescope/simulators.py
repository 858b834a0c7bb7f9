"""Deprecated path of :mod:`telescope.simulation.simulators` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.simulation.simulators")
