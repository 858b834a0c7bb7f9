"""Neural estimators: NPE, NLE (and, in later modules, NRE and NPSE)."""
from .base import Estimator, load
from .nle import NLE
from .npe import NPE
from .npse import NPSE

__all__ = ["Estimator", "NPE", "NLE", "NPSE", "load"]
