"""Deprecated path of :mod:`telescope.cli.bench` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.cli.bench")
