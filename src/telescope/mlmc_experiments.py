"""Deprecated path of :mod:`telescope.mlmc.gaussian` (kept for one release).

The digits experiment moved to ``benchmarks/mlmc_digits.py``; ``summary`` is :func:`telescope.mlmc.report.summary`.
"""

from ._compat import alias

alias(__name__, "telescope.mlmc.gaussian")
