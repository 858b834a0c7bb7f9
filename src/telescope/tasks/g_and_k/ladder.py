r"""A seed-matched low/high-fidelity ladder for the g-and-k distribution (paper 1, Appendix B.1).

Both levels draw the same uniforms :math:`u \sim \mathcal{U}(0, 1)` and differ only in the standard normal
quantile :math:`z(u) = \sqrt{2}\,\mathrm{erf}^{-1}(2u - 1)` fed to the g-and-k quantile function
:func:`~telescope.tasks.g_and_k.gk_quantile`:

* **high fidelity**: :math:`z` exact (``torch.special.ndtri``, float64);
* **low fidelity**: the third-order Taylor approximation
  :math:`\mathrm{erf}^{-1}_{\mathrm{low}}(v) = c\,(v + \tfrac{\pi}{12} v^3)`.

**The constant** ``c``.  The Maclaurin series of :math:`\mathrm{erf}^{-1}` starts
:math:`\tfrac{\sqrt\pi}{2}(v + \tfrac{\pi}{12}v^3 + \dots)`, so the Taylor approximation proper has
:math:`c = \sqrt\pi/2 \approx 0.886`.  The paper prints :math:`c = \pi/2 \approx 1.571` (and its code uses
it), which makes the low-fidelity quantiles about 1.77 times too wide near the median.  Both are
offered: ``constant="pi/2"`` (default, alias ``"paper"``) reproduces the paper's experiments;
``constant="sqrt(pi)/2"`` (alias ``"maclaurin"``) is the mathematically correct truncated series, a
closer low-fidelity simulator.

For NPE the paper simulates ``m = 1000`` iid draws per parameter and summarises them with the four
robust octile statistics of Drovandi & Pettitt (2011) used by Prangle (2016), :func:`gk_summaries`:
:math:`(E_4,\ E_6 - E_2,\ (E_6 + E_2 - 2E_4)/(E_6 - E_2),\ (E_7 - E_5 + E_3 - E_1)/(E_6 - E_2))` with
:math:`E_i` the ``i``-th octile.

Example:
    >>> import torch
    >>> ladder = gk_ladder(n_draws=3)
    >>> th = torch.tensor([[3.0, 1.0, 2.0, 1.0]])
    >>> u = ladder.noise(1, torch.Generator().manual_seed(0))
    >>> [tuple(g.run(th, u).shape) for g in ladder.levels]
    [(1, 3), (1, 3)]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...simulation.ladder import FidelityLadder
from ...simulation.simulators import Simulator
from .distribution import gk_quantile, standard_normal_quantile

__all__ = ["CONSTANTS", "erfinv_taylor", "low_fidelity_normal_quantile", "gk_summaries", "gk_ladder"]

#: names of the Taylor constant ``c`` and their values
CONSTANTS = {"pi/2": math.pi / 2, "paper": math.pi / 2, "sqrt(pi)/2": math.sqrt(math.pi) / 2,
             "maclaurin": math.sqrt(math.pi) / 2}


def _constant(constant: str | float) -> float:
    if isinstance(constant, str):
        if constant not in CONSTANTS:
            raise ValueError(f"constant must be one of {sorted(CONSTANTS)} or a number, got {constant!r}")
        return CONSTANTS[constant]
    try:
        return float(constant)
    except (TypeError, ValueError):
        raise TypeError(f"constant must be a name in {sorted(CONSTANTS)} or a number, got {constant!r}") from None


def erfinv_taylor(v: Tensor, constant: str | float = "pi/2") -> Tensor:
    r"""Third-order Taylor approximation :math:`c\,(v + \frac{\pi}{12} v^3)` of :math:`\mathrm{erf}^{-1}(v)`.

    Example:
        >>> round(float(erfinv_taylor(torch.tensor(0.1), "sqrt(pi)/2")), 5)  # erfinv(0.1) = 0.088856
        0.08885
    """
    c = _constant(constant)
    return c * (v + (math.pi / 12.0) * v**3)


def low_fidelity_normal_quantile(u: Tensor, constant: str | float = "pi/2") -> Tensor:
    """Low-fidelity :math:`z_{low}(u) = \\sqrt{2}\\,\\mathrm{erf}^{-1}_{low}(2u - 1)` in float64."""
    return math.sqrt(2.0) * erfinv_taylor(2.0 * u.double() - 1.0, constant)


def gk_summaries(x: Tensor) -> Tensor:
    """Octile summaries ``(*, 4)`` of iid draws ``x (*, m)`` (Drovandi & Pettitt, 2011; Prangle, 2016)."""
    q = torch.quantile(x.double(), torch.arange(1, 8, dtype=torch.float64, device=x.device) / 8.0, dim=-1)
    e1, e2, e3, e4, e5, e6, e7 = q
    spread = e6 - e2
    safe = torch.where(spread.abs() > 0, spread, torch.ones_like(spread))
    out = torch.stack([e4, spread, (e6 + e2 - 2 * e4) / safe, (e7 - e5 + e3 - e1) / safe], -1)
    return out.to(x.dtype if x.dtype.is_floating_point else torch.float32)


class _Level:
    """Picklable generator of one g-and-k fidelity level (for process backends)."""

    def __init__(self, fidelity: str, constant: float, summary: bool):
        self.fidelity, self.constant, self.summary = fidelity, constant, summary

    def __call__(self, theta: Tensor, u: Tensor) -> Tensor:
        z = standard_normal_quantile(u) if self.fidelity == "high" else low_fidelity_normal_quantile(u, self.constant)
        x = gk_quantile(theta.double(), z)
        return (gk_summaries(x) if self.summary else x).float()


class _Noise:
    def __init__(self, n_draws: int):
        self.n_draws = n_draws

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.rand(n, self.n_draws, generator=generator, dtype=torch.float64)


def gk_ladder(n_draws: int = 1, *, constant: str | float = "pi/2", summary: bool = False,
              costs=(1.0, 2.0)) -> FidelityLadder:
    """The two-level g-and-k ladder ``[low, high]`` sharing uniform noise ``u (n, n_draws)``.

    Arguments:
        n_draws: iid draws per simulation (1 for the paper's NLE, 1000 for its NPE).
        constant: the Taylor constant of the low level, ``"pi/2"`` (the paper's, default) or ``"sqrt(pi)/2"``.
        summary: return the four octile summaries of the draws (:func:`gk_summaries`) instead of the draws.
        costs: nominal costs per simulation (the paper fixes ``n_l`` rather than a budget here).

    Returns:
        A :class:`telescope.FidelityLadder`.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    if summary and n_draws < 8:
        raise ValueError(f"summary=True needs at least 8 draws per simulation (octiles), got n_draws={n_draws}")
    c = _constant(constant)
    noise = _Noise(n_draws)
    cfg = {"n_draws": n_draws, "constant": c, "summary": bool(summary)}
    low = Simulator(_Level("low", c, summary), noise=noise, name="g_and_k_low", config={**cfg, "fidelity": "low"})
    high = Simulator(_Level("high", c, summary), noise=noise, name="g_and_k_high", config={**cfg, "fidelity": "high"})
    return FidelityLadder([low, high], noise=noise, costs=costs)
