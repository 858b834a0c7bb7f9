r"""The genetic toggle switch with the number of time steps as fidelity (paper 1, Section 5.3, Appendix B.4).

Parameters :math:`\theta = (\alpha_1, \alpha_2, \beta_1, \beta_2, \mu, \sigma, \gamma)` with prior
:math:`\mathcal{U}([0.01, 50]^2 \times [0.01, 5]^2 \times [250, 450] \times [0.01, 0.5] \times [0.01, 0.4])`.
From :math:`u_0 = v_0 = 10`, for :math:`t = 0, \dots, T - 1` (both updates use the time-``t`` values)

.. math::
    u_{t+1} \sim \tilde{\mathcal N}\Big(u_t + \frac{\alpha_1}{1 + v_t^{\beta_1}} - (1 + 0.03 u_t),\ 0.5\Big), \qquad
    v_{t+1} \sim \tilde{\mathcal N}\Big(v_t + \frac{\alpha_2}{1 + u_t^{\beta_2}} - (1 + 0.03 v_t),\ 0.5\Big),

and the observation is :math:`x \sim \tilde{\mathcal N}(\mu + u_T,\ \mu\sigma / u_T^{\gamma})`, where
:math:`\tilde{\mathcal N}(m, s)` is the normal with mean ``m`` and standard deviation ``s`` truncated to
:math:`[0, \infty)`.  The stated ``s`` is the standard deviation of the *parent* normal and is used as is
(:func:`truncated_normal`): it is neither squared nor rescaled after truncation.

**Noise and seed matching.**  Every draw is an inverse-CDF transform of one uniform, so the noise is
``w ~ U(0, 1)^(2 T_max + 1)``: column 0 drives the observation and columns ``1 + 2t`` and ``2 + 2t`` the
two updates of step ``t``.  A level with ``T_l <= T_max`` steps reads the first ``2 T_l + 1`` columns
(Appendix B.4: lower levels ignore the components they do not need), so the levels ``T = 50, 80, 300``
share the noise of their common steps and of the observation.  The cost of a simulation grows linearly
in ``T``; :meth:`ToggleSwitch.ladder` uses costs ``T_l``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..priors import BoxUniform
from ..simulation.ladder import FidelityLadder
from ..simulation.simulators import Simulator
from . import register
from .base import Task

__all__ = ["ToggleSwitch", "truncated_normal", "toggle_switch"]

_TINY = 1e-300


def truncated_normal(mean: Tensor, std: Tensor | float, w: Tensor, low: float = 0.0) -> Tensor:
    r"""Inverse-CDF draw from :math:`\mathcal N(\text{mean}, \text{std}^2)` truncated to ``[low, inf)``.

    Arguments:
        mean, std: parameters of the parent normal (``std`` is its standard deviation, used as is).
        w: uniforms in ``(0, 1)``, the noise (same shape as ``mean``).
        low: the truncation point.

    Returns:
        Draws ``>= low`` (float64); monotone in ``w``, so equal ``w`` give coupled draws.

    Example:
        >>> w = torch.rand(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> x = truncated_normal(torch.full_like(w, 100.0), 0.5, w)   # far from the bound: N(100, 0.5^2)
        >>> round(float(x.std()), 2)
        0.5
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    w = w.double().clamp(1e-16, 1 - 1e-16)
    a = (low - mean) / std  # standardised truncation point
    # upper tail mass P(Z > a) = Phi(-a); draw Z | Z > a with the numerically safer of two equivalent forms
    tail = torch.special.ndtr(-a)
    z_left = torch.special.ndtri((torch.special.ndtr(a) + w * tail).clamp(_TINY, 1 - 1e-16))  # a < 0
    z_right = -torch.special.ndtri(((1 - w) * tail).clamp_min(_TINY))  # a >= 0
    z = torch.where(a < 0, z_left, z_right)
    z = torch.maximum(z, a)  # rounding can put a draw a hair below the bound
    return mean + std * z


def toggle_switch(theta: Tensor, w: Tensor, T: int) -> Tensor:
    """Simulate ``x (n, 1)`` with ``T`` steps from ``theta (n, 7)`` and uniforms ``w (n, >= 2T + 1)``."""
    if w.shape[-1] < 2 * T + 1:
        raise ValueError(f"T={T} steps need noise with at least {2 * T + 1} columns, got {w.shape[-1]}")
    th = theta.double()
    a1, a2, b1, b2, mu, sigma, gamma = (th[:, j] for j in range(7))
    w = w.double()
    u = torch.full_like(a1, 10.0)
    v = torch.full_like(a1, 10.0)
    for t in range(T):
        mu_u = u + a1 / (1 + v.pow(b1)) - (1 + 0.03 * u)
        mu_v = v + a2 / (1 + u.pow(b2)) - (1 + 0.03 * v)
        u = truncated_normal(mu_u, 0.5, w[:, 1 + 2 * t])
        v = truncated_normal(mu_v, 0.5, w[:, 2 + 2 * t])
    scale = mu * sigma / u.clamp_min(1e-12).pow(gamma)
    x = truncated_normal(mu + u, scale, w[:, 0])
    return x.unsqueeze(-1).float()


class _Level:
    """Picklable generator of the toggle switch with ``T`` steps."""

    def __init__(self, T: int):
        self.T = int(T)

    def __call__(self, theta: Tensor, w: Tensor) -> Tensor:
        return toggle_switch(theta, w, self.T)


class _Noise:
    def __init__(self, T: int):
        self.dim = 2 * int(T) + 1

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.rand(n, self.dim, generator=generator, dtype=torch.float64)


@register("toggle_switch")
class ToggleSwitch(Task):
    """Toggle switch (Bonassi et al., 2011; paper 1, Appendix B.4) with ``T`` steps; no tractable likelihood.

    Arguments:
        T: steps of the (high-fidelity) simulator.
        T_levels: steps of the ladder's levels, increasing; the last must be ``T``.

    Example:
        >>> task = ToggleSwitch()
        >>> task.simulator(task.prior.sample((2,)), seed=0).shape
        torch.Size([2, 1])
        >>> task.ladder().costs
        [50.0, 80.0, 300.0]
    """

    reference_kind = None
    dim_theta = 7
    dim_x = 1

    def __init__(self, T: int = 300, T_levels: Sequence[int] = (50, 80, 300)):
        T_levels = [int(t) for t in T_levels]
        if any(t < 1 for t in T_levels) or any(b <= a for a, b in zip(T_levels, T_levels[1:])):
            raise ValueError(f"T_levels must be increasing positive step counts, got {T_levels}")
        if T_levels[-1] != int(T):
            raise ValueError(f"the last of T_levels ({T_levels[-1]}) must equal T ({T})")
        self.T, self.T_levels = int(T), T_levels
        self.prior = BoxUniform([0.01, 0.01, 0.01, 0.01, 250.0, 0.01, 0.01], [50.0, 50.0, 5.0, 5.0, 450.0, 0.5, 0.4])
        self.noise = _Noise(self.T)
        self.levels = [Simulator(_Level(t), noise=self.noise, name=f"toggle_switch_T{t}", config={"T": t})
                       for t in T_levels]
        self.simulator = self.levels[-1]

    def ladder(self, costs=None) -> FidelityLadder:
        """The levels ``T_levels`` sharing the uniform noise, costs proportional to ``T`` unless given."""
        return FidelityLadder(self.levels, noise=self.noise,
                              costs=costs if costs is not None else [float(t) for t in self.T_levels])

    def cache_key(self) -> str:
        return f"{self.name}_T{self.T}"
