"""Bridges to the tools users already have: sbi posteriors (:mod:`.sbi`), ArviZ (:mod:`.arviz`).

Each bridge imports its package lazily, so none of them is a dependency of telescope.
"""

from .arviz import to_inference_data
from .sbi import as_telescope_posterior, from_sbi, is_sbi_posterior

__all__ = ["as_telescope_posterior", "from_sbi", "is_sbi_posterior", "to_inference_data"]
