"""Deprecated path of :mod:`telescope.tasks.g_and_k.ladder` (kept for one release)."""

from .._compat import alias

alias(__name__, "telescope.tasks.g_and_k.ladder")
