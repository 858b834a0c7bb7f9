"""Deprecated path of :mod:`telescope.mlmc.npse` (kept for one release).

The experiment (training an NPSE and running the tests, ``run_npse``) moved to ``benchmarks/mlmc_npse.py``.
"""

from ._compat import alias

alias(__name__, "telescope.mlmc.npse")
