"""Neural estimators: NPE, NLE, NRE (NRE-A/B/C) and NPSE."""
from .base import Estimator, load
from .nle import NLE
from .npe import NPE
from .npse import NPSE
from .nre import NRE  # imported so that load() finds saved NREs

__all__ = ["Estimator", "NPE", "NLE", "NPSE", "NRE", "load"]
