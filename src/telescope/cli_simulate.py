"""Deprecated path of :mod:`telescope.cli.simulate` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.cli.simulate")
