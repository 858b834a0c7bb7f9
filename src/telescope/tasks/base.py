"""The Task interface: a prior, a simulator, observations and reference posteriors.

Observations ``i = 1..num_observations`` are simulated from fixed true parameters with fixed
seeds, so they are the same on every machine.  Reference posterior samples are computed once
(analytically, by rejection, or by MCMC against the exact likelihood) and cached on disk under
``$TELESCOPE_CACHE`` (default ``~/.cache/telescope``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..simulation.simulators import Simulator, batch_seed, seeded

__all__ = ["Task", "cache_dir"]


def cache_dir() -> Path:
    root = Path(os.environ.get("TELESCOPE_CACHE", Path.home() / ".cache" / "telescope"))
    root.mkdir(parents=True, exist_ok=True)
    return root


class Task:
    """A benchmark problem.

    Subclasses set ``name``, ``dim_theta``, ``dim_x``, ``prior``, ``simulator`` and implement
    :meth:`_reference` (and :meth:`log_likelihood` where the likelihood is tractable).

    Attributes:
        num_observations: observations available as ``observation(1..num_observations)``.
        reference_kind: ``"analytic"``, ``"rejection"``, ``"mcmc"`` or ``None``.
    """

    name: str = "task"
    dim_theta: int
    dim_x: int
    prior: torch.distributions.Distribution
    simulator: Simulator
    num_observations: int = 10
    reference_kind: str | None = None
    observation_seed: int = 1_000_000

    # -- observations -------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= self.num_observations:
            raise ValueError(f"observation index must be an integer in 1..{self.num_observations} "
                             f"for task {self.name!r}, got {i!r}")
        return i

    def true_parameters(self, i: int = 1) -> Tensor:
        """True parameters ``(dim_theta,)`` behind observation ``i``."""
        i = self._check_index(i)
        with seeded(batch_seed(self.observation_seed, i)):
            return self.prior.sample((1,))[0].float()

    def observation(self, i: int = 1) -> Tensor:
        """Observation ``i`` as ``(dim_x,)``."""
        i = self._check_index(i)
        theta = self.true_parameters(i)
        return self.simulator(theta.unsqueeze(0), seed=batch_seed(self.observation_seed + 1, i))[0]

    # -- likelihood and references ------------------------------------------------------
    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)`` for ``theta (m, d)`` and one ``x (dim_x,)``, shape ``(m,)``."""
        raise NotImplementedError(f"task {self.name!r} has no tractable likelihood")

    def log_posterior_unnorm(self, theta: Tensor, x: Tensor) -> Tensor:
        lp = self.prior.log_prob(theta)
        ok = torch.isfinite(lp)
        out = torch.full_like(lp, -float("inf"))
        if ok.any():
            out[ok] = lp[ok] + self.log_likelihood(theta[ok], x)
        return out

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        raise NotImplementedError(f"task {self.name!r} has no reference posterior")

    def reference_samples(self, i: int = 1, n: int = 10_000, *, cache: bool = True) -> Tensor:
        """``n`` reference posterior samples ``(n, dim_theta)`` for observation ``i`` (cached on disk)."""
        i = self._check_index(i)
        path = cache_dir() / "references" / self.cache_key() / f"obs{i}_n{n}.pt"
        if cache and path.exists():
            return torch.load(path, weights_only=True)
        samples = self._reference(self.observation(i), n, seed=batch_seed(self.observation_seed + 2, i)).float()
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(samples, tmp)
            os.replace(tmp, path)
        return samples

    def cache_key(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, dim_theta={self.dim_theta}, dim_x={self.dim_x}, "
                f"reference={self.reference_kind})")
