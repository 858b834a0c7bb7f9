"""Deprecated path of :mod:`telescope.training.loop` (kept for one release)."""

from ._compat import alias

alias(__name__, "telescope.training.loop", call="train")
