"""Deprecated path of :mod:`telescope.mlmc.coupled` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.mlmc.coupled")
