"""Simulators: plain callables ``theta -> x`` and generators ``x = G(theta, u)``.

A *generator* makes its randomness explicit: ``u = noise(n, generator)`` draws the noise
and ``G(theta, u)`` is deterministic.  Two simulators that share one noise sampler can be
run on the *same* ``(theta, u)`` — the seed-matching that multilevel training needs
(paper 1, Section 3 and Appendix B.4).  A plain callable draws its own randomness from
torch's global generator, which :func:`telescope.simulate` seeds per batch.

Every simulator is wrapped in :class:`Simulator`, which carries a name and a JSON-able
configuration (used by the simulation store to refuse mixing simulators).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import random
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["Simulator", "as_simulator", "batch_seed", "level_seed", "theta_seed", "seeded"]


def batch_seed(seed: int, index: int) -> int:
    """Seed of batch ``index`` of a campaign with seed ``seed``: independent of scheduling."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0] >> 1)


def level_seed(seed: int, level: int) -> int:
    """Campaign seed of level ``level`` of a fidelity ladder run with seed ``seed``.

    Levels get independent streams (the MLMC terms are independent); within a level, the
    batches are seeded with :func:`batch_seed` ``(level_seed(seed, l), b)``.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(level), 0x1E7E1]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def theta_seed(seed: int) -> int:
    """Seed of the parameter draws of a batch whose simulator noise is seeded with ``seed`` (a separate stream)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x7E7A]).generate_state(1, np.uint64)[0] >> 1)


class seeded:
    """Context manager: run a block with torch's, numpy's and Python's global RNGs seeded, restoring them after."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        self._np = np.random.get_state()
        np.random.seed(self.seed % (2**32))
        self._py = random.getstate()
        random.seed(self.seed)
        return self

    def __exit__(self, *exc):
        random.setstate(self._py)
        np.random.set_state(self._np)
        return self._fork.__exit__(*exc)


class Simulator:
    """A simulator with a name and a configuration.

    Arguments:
        fn: ``fn(theta) -> x`` for a plain simulator, or ``fn(theta, u) -> x`` when ``noise`` is given.
            Called on a batch ``theta (n, d_theta)``, returns ``x (n, d_x)`` (or ``(n, *event)``).
            With ``vectorized=False`` it is called on one ``theta (d_theta,)`` at a time.
        noise: ``noise(n, generator) -> u (n, *)``, the explicit noise sampler of a generator.
        name: stored with simulations; defaults to the function's qualified name.
        config: JSON-able settings that define the simulator (stored, compared on resume).

    Example:
        >>> sim = Simulator(lambda th, u: th + 0.1 * u, noise=lambda n, g: torch.randn(n, 2, generator=g))
        >>> sim(torch.zeros(3, 2), seed=0).shape
        torch.Size([3, 2])
    """

    def __init__(self, fn: Callable, noise: Callable | None = None, name: str | None = None,
                 config: dict[str, Any] | None = None, vectorized: bool = True):
        if not callable(fn):
            raise TypeError(f"simulator must be callable, got {type(fn).__name__}")
        if noise is not None and not callable(noise):
            raise TypeError(f"noise must be callable noise(n, generator) -> Tensor, got {type(noise).__name__}")
        self.fn, self.noise, self.vectorized = fn, noise, vectorized
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.config = dict(config or {})

    @property
    def is_generator(self) -> bool:
        return self.noise is not None

    def sample_noise(self, n: int, seed: int | torch.Generator) -> Tensor:
        if self.noise is None:
            raise ValueError(f"simulator {self.name!r} has no noise sampler; pass noise=... to Simulator")
        g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        return self.noise(n, g)

    def run(self, theta: Tensor, u: Tensor | None = None) -> Tensor:
        """Evaluate on ``theta`` (and noise ``u`` for generators), no seeding."""
        args = (theta,) if u is None else (theta, u)
        if self.vectorized:
            x = self.fn(*args)
        else:
            x = torch.stack([torch.as_tensor(self.fn(*(a[i] for a in args))) for i in range(theta.shape[0])])
        x = torch.as_tensor(x)
        if x.dim() == 0 or x.shape[0] != theta.shape[0]:
            got = f"{x.shape[0]} outputs" if x.dim() else "a scalar"
            raise ValueError(f"simulator {self.name!r} returned {got} for {theta.shape[0]} "
                             f"parameters (shape {tuple(x.shape)}); it must return one row per theta")
        return x.float() if x.dtype == torch.float64 else x

    def __call__(self, theta: Tensor, seed: int | None = None) -> Tensor:
        """Simulate ``x`` for a batch ``theta``; the same seed gives the same ``x``."""
        theta = torch.as_tensor(theta, dtype=torch.float32)
        single = theta.dim() == 1
        theta = theta.unsqueeze(0) if single else theta
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        if self.is_generator:
            x = self.run(theta, self.sample_noise(theta.shape[0], seed))
        else:
            with seeded(seed):
                x = self.run(theta)
        return x[0] if single else x

    def fingerprint(self) -> str:
        """Hash of the name, configuration and (when available) source code of ``fn`` and ``noise``.

        The simulation store compares fingerprints to refuse mixing simulators.
        """
        parts = [self.name, repr(sorted(self.config.items())), _source(self.fn), str(self.vectorized)]
        if self.noise is not None:
            parts.append(_source(self.noise))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        kind = "generator" if self.is_generator else "callable"
        return f"Simulator({self.name!r}, {kind})"


def _source(fn) -> str:
    """Source code of a function, method, partial or callable object ("" when unavailable)."""
    if isinstance(fn, functools.partial):
        return _source(fn.func) + repr(fn.args) + repr(sorted(fn.keywords.items()))
    target = fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn)
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        return getattr(target, "__qualname__", "")


def as_simulator(simulator) -> Simulator:
    """Wrap a callable (or return a :class:`Simulator` unchanged)."""
    if isinstance(simulator, Simulator):
        return simulator
    if not callable(simulator):
        raise TypeError(f"simulator must be a callable theta -> x or a telescope.Simulator, "
                        f"got {type(simulator).__name__}")
    return Simulator(simulator)
