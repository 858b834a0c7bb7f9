"""Training: the one loop every estimator uses (:func:`train`), the validation split, the non-finite-loss error."""

from .loop import NonFiniteLossError, split, train

__all__ = ["train", "split", "NonFiniteLossError"]
