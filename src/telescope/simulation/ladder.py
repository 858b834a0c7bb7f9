"""Fidelity ladders and seed-matched multilevel simulation (Section 3 and Appendix B.4 of Hikida et al., 2025).

Multilevel training needs simulators ``G_0, ..., G_L`` of rising fidelity and cost, and for
each level ``l >= 1`` pairs simulated on the *same* parameters and the *same* noise::

    theta_i ~ prior,   u_i ~ U,   x_i^l = G_l(theta_i, u_i),   x_i^{l-1} = G_{l-1}(theta_i, u_i)

so that the terms ``f^l - f^{l-1}`` of the telescoping sum are strongly coupled (their variance
is small).  All levels share one noise sampler over a common noise space; a lower level may
ignore the components it does not need (Appendix B.4: the toggle switch with ``T_l`` steps reads
the first ``2 T_l + 1`` normals).  For black-box simulators without an explicit noise, one
integer seed passed to every level *is* the shared noise: each level runs inside
``seeded(seed)``, so the levels draw the same stream from torch's, numpy's and Python's
generators (the coupling is as good as the levels' use of that stream is aligned).  A simulator
that takes its own seed can be written as a generator whose noise is that seed::

    noise = lambda n, g: torch.randint(0, 2**62, (n,), generator=g)   # one integer seed per simulation

The ladder's costs ``C_l`` (wall time per simulation) are given or measured; allocations of
``n_l`` (Theorem 2 of Hikida et al.) need them.

Example:
    >>> import torch, telescope as ts
    >>> noise = lambda n, g: torch.randn(n, 8, generator=g)
    >>> coarse = lambda th, u: th + u[:, :2].sum(-1, keepdim=True)
    >>> fine = lambda th, u: th + u.sum(-1, keepdim=True)
    >>> ladder = FidelityLadder([coarse, fine], noise=noise, costs=[1.0, 4.0])
    >>> (t0, x0), (t1, x1, x1_low) = simulate_levels(ladder, ts.BoxUniform([0.0], [1.0]), n=[100, 10],
    ...                                              progress_bar=False)
    >>> x0.shape, x1.shape, x1_low.shape
    (torch.Size([100, 1]), torch.Size([10, 1]), torch.Size([10, 1]))

References:
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

from torch import Tensor

from ..priors import check_prior
from ..utils import check_count, check_seed
from .campaign import _RNG_LOCK, Level, failure_message, run_levels, simulator_info, use_executor
from .simulators import Simulator, level_seed, seeded

__all__ = ["FidelityLadder", "simulate_levels"]


class FidelityLadder:
    """Simulators ``G_0, ..., G_L`` of rising fidelity that share one noise sampler.

    Arguments:
        levels: the simulators, lowest fidelity first: callables ``G_l(theta, u)`` when ``noise`` is
            given, black-box callables ``G_l(theta)`` otherwise, or :class:`telescope.Simulator` objects.
        noise: ``noise(n, generator) -> u (n, *)``, the shared noise sampler.  ``None`` for black-box
            levels (the shared noise is then the integer seed of each batch), or when the levels are
            Simulators that already hold the same noise sampler.
        costs: wall time per simulation ``C_0 < C_1 < ... < C_L`` (any unit).  When omitted they are
            measured by :meth:`measure_costs` or by :func:`simulate_levels`.

    Example:
        >>> ladder = FidelityLadder([lambda th: th, lambda th: th + 0.01], costs=[1.0, 10.0])
        >>> len(ladder), ladder.costs
        (2, [1.0, 10.0])
    """

    def __init__(self, levels: Sequence, noise=None, costs: Sequence[float] | None = None):
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) == 0:
            raise TypeError(f"levels must be a non-empty list of simulators [G_0, ..., G_L], got {levels!r}")
        if noise is not None and not callable(noise):
            raise TypeError(f"noise must be callable noise(n, generator) -> Tensor, got {type(noise).__name__}")
        sims = []
        for l, g in enumerate(levels):
            if isinstance(g, Simulator):
                if noise is not None:
                    if g.noise is not None and g.noise is not noise:
                        raise ValueError(f"levels[{l}] ({g.name!r}) has its own noise sampler, different from "
                                         f"noise=...; seed matching needs ONE noise sampler shared by every level")
                    g = Simulator(g.fn, noise=noise, name=g.name, config=g.config, vectorized=g.vectorized)
            elif callable(g):
                g = Simulator(g, noise=noise)
            else:
                raise TypeError(f"levels[{l}] must be a callable or a telescope.Simulator, got {type(g).__name__}")
            sims.append(g)
        if noise is None:
            samplers = [s.noise for s in sims]
            if any(s is not None for s in samplers) and not all(s is samplers[0] for s in samplers):
                kinds = ", ".join(f"{l}: {'none' if s is None else getattr(s, '__qualname__', 'sampler')}"
                                  for l, s in enumerate(samplers))
                raise ValueError(f"the levels do not share one noise sampler ({kinds}); seed matching needs one "
                                 f"sampler for every level: pass noise=... to FidelityLadder")
            noise = samplers[0]
        self.levels: list[Simulator] = sims
        self.noise = noise
        self._given = None if costs is None else _check_costs(costs, len(sims))
        self._measured: list[float] | None = None

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, l: int) -> Simulator:
        return self.levels[l]

    def __iter__(self):
        return iter(self.levels)

    @property
    def costs(self) -> list[float] | None:
        """Cost per simulation of each level: as given, else as last measured, else ``None``."""
        return list(self._given) if self._given is not None else (
            list(self._measured) if self._measured is not None else None)

    @property
    def costs_measured(self) -> bool:
        return self._given is None and self._measured is not None

    def measure_costs(self, prior, n: int = 16, seed: int = 0) -> list[float]:
        """Time every level on the same ``n`` parameters (after one warm-up call); wall seconds per simulation.

        Also checks that the levels agree on the output shape.
        """
        prior = check_prior(prior)
        n = check_count("n", n)
        with _RNG_LOCK, seeded(seed):
            theta = prior.sample((n,)).float()
        costs, shapes = [], []
        with _RNG_LOCK:
            for sim in self.levels:
                sim(theta[:1], seed=seed)  # warm-up (imports, caches, JIT)
                t0 = time.perf_counter()
                x = sim(theta, seed=seed)
                costs.append((time.perf_counter() - t0) / n)
                shapes.append(tuple(x.shape[1:]))
        _check_shapes(self, shapes)
        self._set_measured(costs)
        return list(costs)

    def _set_measured(self, costs: list[float]) -> None:
        self._measured = [float(c) for c in costs]
        if self._given is None and any(b <= a for a, b in zip(costs, costs[1:])):
            warnings.warn(f"measured costs per simulation {[f'{c:.3g}' for c in costs]} s do not increase with the "
                          f"level; multilevel training saves simulation time only when lower levels are cheaper",
                          UserWarning, stacklevel=3)

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.levels)
        return f"FidelityLadder([{names}], shared {'noise sampler' if self.noise else 'seed'}, costs={self.costs})"


def _check_costs(costs, n_levels: int) -> list[float]:
    try:
        costs = [float(c) for c in costs]
    except (TypeError, ValueError):
        raise TypeError(f"costs must be a list of {n_levels} positive numbers, got {costs!r}") from None
    if len(costs) != n_levels:
        raise ValueError(f"costs must have one entry per level ({n_levels}), got {len(costs)}: {costs}")
    if not all(c > 0 and c < float("inf") for c in costs):
        raise ValueError(f"costs must be positive and finite, got {costs}")
    if any(b <= a for a, b in zip(costs, costs[1:])):
        raise ValueError(f"costs must increase with the level (C_0 < C_1 < ... < C_L: higher fidelity costs more), "
                         f"got {costs}")
    return costs


def _check_shapes(ladder: FidelityLadder, shapes: list[tuple]) -> None:
    if len(set(shapes)) > 1:
        desc = ", ".join(f"level {l} ({s.name!r}) -> {shape}"
                         for l, (s, shape) in enumerate(zip(ladder.levels, shapes)))
        raise ValueError(f"the ladder's levels disagree on the output shape per simulation ({desc}); every level "
                         f"must return x of the same shape")


def simulate_levels(ladder, prior, n: Sequence[int], seed: int = 0, batch_size: int | Sequence[int] = 1000, *,
                    store=None, workers: int = 1, backend: str | None = None, client=None,
                    scheduler: str | None = None, progress_bar: bool = True,
                    include_failed: bool = False, timeout: float | None = None,
                    executor=None) -> list[tuple[Tensor, ...]]:
    """Seed-matched simulations for multilevel training.

    Level ``l`` draws ``n[l]`` parameters and noises (independently of the other levels) and runs
    ``G_l`` and ``G_{l-1}`` on the same theta and noise.  Level ``l`` is seeded from
    ``level_seed(seed, l)`` and batched like :func:`telescope.simulate`, so results do not depend on
    the backend, and with ``store=`` the level data are written batch by batch and resume.

    Arguments:
        ladder: a :class:`FidelityLadder` (or a list of simulators, wrapped in one).
        prior: a torch Distribution with event shape ``(d,)``.
        n: simulations per level ``[n_0, ..., n_L]``, usually decreasing.
        seed: campaign seed.
        batch_size: simulations per batch, one for all levels or one per level.
        store, workers, backend, client, scheduler, progress_bar, timeout, executor: as for :func:`telescope.simulate`
            (``timeout`` is per simulation of one ladder level's pair).
        include_failed: keep failed simulations (NaN rows); by default they are dropped (with a warning).

    Returns:
        ``[(theta_0, x_0), (theta_1, x_1, x_0'), ..., (theta_L, x_L, x_{L-1}')]``: level 0 as
        ``(theta (n_0, d), x_0 (n_0, *event))`` and each level ``l >= 1`` as ``(theta, x_l, x_{l-1})``
        with ``n_l`` rows, the two outputs simulated on the same ``theta`` and noise.
        When the ladder's costs were not given, ``ladder.costs`` holds the measured costs afterwards.
    """
    if not isinstance(ladder, FidelityLadder):
        ladder = FidelityLadder(ladder)
    prior = check_prior(prior)
    seed = check_seed(seed)
    backend = use_executor(backend, executor)
    L1 = len(ladder)
    if isinstance(n, (int, str)) or not isinstance(n, Sequence) or len(n) != L1:
        raise ValueError(f"n must be a list of {L1} counts [n_0, ..., n_{L1 - 1}] (one per ladder level), got {n!r}")
    n = [check_count(f"n[{l}]", v) for l, v in enumerate(n)]
    if any(b >= a for a, b in zip(n, n[1:])):
        warnings.warn(f"n = {n} does not decrease with the level; multilevel estimators usually need many cheap "
                      f"low-level simulations and few expensive high-level ones (n_0 > n_1 > ...)",
                      UserWarning, stacklevel=2)
    sizes = [batch_size] * L1 if isinstance(batch_size, int) else list(batch_size)
    if len(sizes) != L1:
        raise ValueError(f"batch_size must be one integer or a list of {L1}, got {batch_size!r}")
    sizes = [check_count(f"batch_size[{l}]", b) for l, b in enumerate(sizes)]
    levels = [Level(l, (ladder[l],) if l == 0 else (ladder[l], ladder[l - 1]), n[l], sizes[l], level_seed(seed, l))
              for l in range(L1)]
    data, summary = run_levels(levels, prior, kind="levels", seed=int(seed),
                               sims_info=[simulator_info(s) for s in ladder.levels], store=store, backend=backend,
                               workers=workers, client=client, scheduler=scheduler, progress_bar=progress_bar,
                               desc=f"simulate_levels ({L1} levels)", timeout=timeout)
    if ladder._given is None:
        ladder._set_measured(_measured_costs(summary, L1))
    if summary["n_failed"]:
        warnings.warn(failure_message(summary, "level simulations")
                      + ("" if include_failed else "; they are left out of the returned levels"),
                      RuntimeWarning, stacklevel=2)
    out: list[tuple[Tensor, ...]] = []
    for l, d in enumerate(data):
        keep = slice(None) if include_failed else d["ok"]
        out.append((d["theta"][keep], d["x"][keep]) if l == 0 else (d["theta"][keep], d["x"][keep], d["x_low"][keep]))
    return out


def _measured_costs(summary: dict, n_levels: int) -> list[float]:
    """Seconds per call of each G_k, pooled over level k (as the higher level) and level k+1 (as the lower)."""
    secs, calls = [0.0] * n_levels, [0] * n_levels
    for l, s in summary["levels"].items():
        secs[l] += s["seconds"][0]
        calls[l] += s["n"]
        if l >= 1:
            secs[l - 1] += s["seconds"][1]
            calls[l - 1] += s["n"]
    return [s / c if c else float("nan") for s, c in zip(secs, calls)]
