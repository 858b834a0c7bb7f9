"""Deprecated path of :mod:`telescope.simulation.simulate` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.simulation.simulate", call="simulate")
