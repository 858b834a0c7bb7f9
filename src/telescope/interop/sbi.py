"""Use an ``sbi`` posterior wherever telescope expects an estimator.

sbi's posteriors (``DirectPosterior``, ``MCMCPosterior``, ``RejectionPosterior``, ensembles, ...)
take ``sample(sample_shape, x=x_o)``, ``sample_batched(sample_shape, x)``, ``log_prob(theta, x=x_o)``
and, for some, ``log_prob_batched(theta, x)``.  :func:`from_sbi` wraps such an object into one with
telescope's calls — ``sample(x_o, n)``, ``sample_batched(x, n) -> (n, m, d)``,
``log_prob(theta, x_o)``, ``log_prob_batched(theta (n, m, d), x (m, *event)) -> (n, m)`` — so
:func:`telescope.metrics.coverage` and :func:`telescope.metrics.sbc` score an sbi posterior the same
way they score a telescope estimator (they call :func:`as_telescope_posterior` themselves).

Nothing here imports sbi: any object with sbi's call forms works (duck typing).  The other
direction, sbi's calls on telescope estimators, lives in :mod:`telescope.estimators.sbi_api`.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["from_sbi", "is_sbi_posterior", "as_telescope_posterior", "SBIPosterior"]


def _first_param(fn) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    return params[0].name if params else None


def _params(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def is_sbi_posterior(obj: Any) -> bool:
    """True for an object with sbi's posterior interface (``sample(sample_shape, x=...)``) that is not a
    telescope estimator (telescope estimators answer both forms and need no wrapping)."""
    from ..estimators.base import Estimator

    if isinstance(obj, (Estimator, SBIPosterior)) or isinstance(getattr(obj, "estimator", None), Estimator):
        return False
    sample = getattr(obj, "sample", None)
    return callable(sample) and _first_param(sample) == "sample_shape"


class SBIPosterior:
    """An sbi posterior seen through telescope's calls (see the module docstring).

    Arguments:
        posterior: the sbi posterior (or any object with its call forms).
        batched: use the posterior's ``sample_batched`` / ``log_prob_batched`` when it has them (default);
            ``False`` loops over observations with ``sample`` / ``log_prob`` (what sbi itself does for
            MCMC posteriors, whose batched sampling is not implemented).
        progress_bar: passed to sbi as ``show_progress_bars``.
    """

    def __init__(self, posterior: Any, *, batched: bool = True, progress_bar: bool = False):
        if not callable(getattr(posterior, "sample", None)) or not callable(getattr(posterior, "log_prob", None)):
            raise TypeError(f"posterior must have sbi's sample(sample_shape, x=...) and log_prob(theta, x=...), got "
                            f"{type(posterior).__name__}")
        self.posterior = posterior
        self.batched = bool(batched)
        self.progress_bar = bool(progress_bar)

    def __repr__(self) -> str:
        return f"SBIPosterior({type(self.posterior).__name__})"

    @staticmethod
    def _x(x) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32) if not isinstance(x, Tensor) else x.float()

    @staticmethod
    def _n(n) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        return n

    def sample(self, x_o, n: int) -> Tensor:
        """``n`` samples ``(n, d)`` for one observation ``x_o``."""
        out = self.posterior.sample((self._n(n),), x=self._x(x_o), show_progress_bars=self.progress_bar)
        return out.reshape(n, -1)

    def sample_batched(self, x, n: int) -> Tensor:
        """``n`` samples for each of ``m`` observations ``x (m, *event)``: ``(n, m, d)``."""
        n, x = self._n(n), self._x(x)
        if self.batched and callable(getattr(self.posterior, "sample_batched", None)):
            try:
                return self.posterior.sample_batched((n,), x=x, show_progress_bars=self.progress_bar)
            except (NotImplementedError, AssertionError):  # sbi's MCMC posteriors: not implemented
                warnings.warn(f"{type(self.posterior).__name__}.sample_batched is not implemented; sampling one "
                              f"observation at a time", stacklevel=2)
                self.batched = False
        return torch.stack([self.sample(xi, n) for xi in x], 1)

    def _call_density(self, fn, theta: Tensor, x: Tensor) -> Tensor:
        # sbi's DirectPosterior renormalises for the mass outside the prior by sampling (norm_posterior=True):
        # 40 s for 20 observations, and a constant per observation that HPD levels and ranks do not need
        if "norm_posterior" in _params(fn):
            return fn(theta, x=x, norm_posterior=False)
        return fn(theta, x=x)

    def log_prob(self, theta, x_o) -> Tensor:
        """``log q(theta | x_o)`` for ``theta (n, d)``: ``(n,)``, unnormalised for leakage outside the prior."""
        return self._call_density(self.posterior.log_prob, self._x(theta), self._x(x_o))

    def log_prob_batched(self, theta: Tensor, x) -> Tensor:
        """``theta (n, m, d)`` and observations ``x (m, *event)`` -> ``(n, m)``."""
        theta, x = self._x(theta), self._x(x)
        if theta.dim() != 3 or theta.shape[1] != x.shape[0]:
            raise ValueError(f"theta must have shape (n, m, d) with m = {x.shape[0]} (the rows of x), got "
                             f"{tuple(theta.shape)}")
        if self.batched and callable(getattr(self.posterior, "log_prob_batched", None)):
            try:
                return self._call_density(self.posterior.log_prob_batched, theta, x)
            except NotImplementedError:
                pass
        return torch.stack([self.log_prob(theta[:, j], x[j]) for j in range(x.shape[0])], 1)


def from_sbi(posterior: Any, **kwargs) -> SBIPosterior:
    """Wrap an sbi posterior for telescope (:class:`SBIPosterior`; keyword arguments go to it).

    Example:
        >>> class Fake:  # any object with sbi's call forms
        ...     def sample(self, sample_shape, x=None, show_progress_bars=False):
        ...         return torch.zeros(*sample_shape, 2)
        ...     def log_prob(self, theta, x=None):
        ...         return torch.zeros(theta.shape[0])
        >>> from_sbi(Fake()).sample_batched(torch.zeros(3, 1), 5).shape
        torch.Size([5, 3, 2])
    """
    return SBIPosterior(posterior, **kwargs)


def as_telescope_posterior(obj: Any) -> Any:
    """``obj`` unchanged when it already has telescope's calls, wrapped by :func:`from_sbi` when it is an sbi posterior."""
    return from_sbi(obj) if is_sbi_posterior(obj) else obj
