"""Neural estimators: NPE, NLE, NRE (NRE-A/B/C) and NPSE.

* :mod:`~telescope.estimators.base` — :class:`Estimator`: input checks, the public training protocol
  (``build_net``, ``loss``, ``loss_terms``, ``training_data``, ``trained_net``), fit, save and load;
* :mod:`~telescope.estimators.npe`, :mod:`~telescope.estimators.nle` — flow estimators (networks in
  :mod:`~telescope.estimators.flows`);
* :mod:`~telescope.estimators.nre` — NRE-C (loss and classifier in :mod:`~telescope.estimators.nre_net`,
  posterior sampling in :mod:`~telescope.estimators.nre_sampling`);
* :mod:`~telescope.estimators.npse` — NPSE (network in :mod:`~telescope.estimators.npse_net`, tall-data
  sampling in :mod:`~telescope.estimators.npse_sampling`);
* :mod:`~telescope.estimators.sbi_api` — sbi's posterior calls on every estimator.
"""
from .base import Estimator, load
from .nle import NLE
from .npe import NPE
from .npse import NPSE
from .nre import NRE  # imported so that load() finds saved NREs

__all__ = ["Estimator", "NPE", "NLE", "NPSE", "NRE", "load"]
