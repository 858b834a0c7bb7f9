"""Deprecated path of :mod:`telescope.cli.pipeline` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.cli.pipeline")
