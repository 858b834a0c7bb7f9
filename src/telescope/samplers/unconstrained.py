r"""Box priors in an unconstrained space: the logit bijection and the diffused logistic prior.

A uniform prior on the box :math:`[a, b]` has a hard boundary.  A score network learns the
boundary layer of every single-observation posterior only approximately, and a tall-data
sampler adds those errors over the ``n`` observations (Linhart et al., 2024, eq. 1: the tall
score is :math:`\sum_j s_j + (1 - n) s_\lambda`), so where the box binds at the true parameter the
error grows with ``n``.  The bijection

.. math::
    u = \operatorname{logit}\frac{\theta - a}{b - a}, \qquad \theta = a + (b - a)\,\sigma(u),

maps the box to :math:`\mathbb{R}^d`; the uniform prior becomes the standard logistic
distribution :math:`\lambda(u) = \sigma(u)(1 - \sigma(u))` (the Jacobian of the map), which is
smooth, unimodal and close to a Gaussian (variance :math:`\pi^2/3`), and the posteriors have no
boundary.  Train and sample there (:class:`LogitBox`); the tall posterior in ``u`` maps back to
the tall posterior in :math:`\theta` exactly (a bijection carries the whole posterior).

The diffused logistic prior :math:`p^\lambda_t(z) = \int \lambda(u) \mathcal{N}(z; \sqrt{\alpha_t}u, v_t)du`
has no closed form; :class:`DiffusedLogistic` computes its score
:math:`(\sqrt{\alpha_t}\,\mathbb{E}[u | z] - z)/v_t` per coordinate by quadrature: Gauss-Hermite in the
kernel variable while the kernel is narrow (:math:`v_t/\alpha_t \le 1/4`), a fine grid over ``u``
otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, SigmoidTransform, TransformedDistribution, Uniform
from torch.distributions.transforms import AffineTransform

from .diffused_base import DiffusedPrior

__all__ = ["Logistic", "LogitBox", "DiffusedLogistic"]


class Logistic(Independent):
    """Independent logistic distribution with ``loc`` and ``scale`` ``(d,)`` (the uniform box prior in logit space).

    Example:
        >>> p = Logistic(torch.zeros(2), torch.ones(2))
        >>> p.sample((5,)).shape
        torch.Size([5, 2])
    """

    def __init__(self, loc, scale):
        self.loc = torch.as_tensor(loc, dtype=torch.float32).reshape(-1)
        self.scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if self.loc.shape != self.scale.shape or not bool((self.scale > 0).all()):
            raise ValueError(f"Logistic needs loc and scale of one shape with scale > 0, got {self.loc.tolist()} and "
                             f"{self.scale.tolist()}")
        base = TransformedDistribution(Uniform(torch.zeros_like(self.loc), torch.ones_like(self.loc)),
                                       [SigmoidTransform().inv, AffineTransform(self.loc, self.scale)])
        super().__init__(base, 1)


class LogitBox:
    r"""The logit bijection of a box ``[low, high]`` and the prior it turns the uniform one into.

    Train on ``(box.to_u(theta), x)`` with prior ``box.prior`` and map samples back with
    :meth:`to_theta`.

    Example:
        >>> import telescope as ts
        >>> box = LogitBox(ts.BoxUniform([-1.0, 0.0], [1.0, 5.0]))
        >>> theta = torch.tensor([[0.5, 1.0]])
        >>> torch.allclose(box.to_theta(box.to_u(theta)), theta)
        True
    """

    def __init__(self, prior_or_low, high=None):
        if high is None:
            from ..priors import prior_bounds

            bounds = prior_bounds(prior_or_low)
            if bounds is None:
                raise ValueError(f"LogitBox needs a box prior (BoxUniform) or low and high, got "
                                 f"{type(prior_or_low).__name__}")
            low, high = bounds
        else:
            low = prior_or_low
        self.low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
        self.high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
        if self.low.shape != self.high.shape or not bool((self.high > self.low).all()):
            raise ValueError(f"LogitBox needs low < high of one shape, got {self.low.tolist()} and {self.high.tolist()}")
        d = self.low.numel()
        self.prior = Logistic(torch.zeros(d), torch.ones(d))

    def to_u(self, theta: Tensor) -> Tensor:
        """``theta (*, d)`` in the box to ``u (*, d)`` (clamped 1e-6 inside the box, so finite)."""
        p = ((theta - self.low) / (self.high - self.low)).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)

    def to_theta(self, u: Tensor) -> Tensor:
        """``u (*, d)`` to ``theta (*, d)``."""
        return self.low + (self.high - self.low) * torch.sigmoid(u)


_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)  # probabilists' Hermite: weight exp(-x^2/2)


class DiffusedLogistic(DiffusedPrior):
    r"""Diffused score of independent logistic coordinates with ``loc`` and ``scale`` ``(d,)`` (quadrature).

    Example:
        >>> p = DiffusedLogistic(torch.zeros(1), torch.ones(1))
        >>> bool(p.score(torch.tensor([[0.0]]), 0.5).abs() < 1e-6)        # symmetric: zero at the centre
        True
        >>> round(float(p.score0(torch.tensor([[1.0]]))), 4)                # -tanh(1/2)
        -0.4621
    """

    def __init__(self, loc: Tensor, scale: Tensor, grid: int = 1601):
        self.loc = torch.as_tensor(loc, dtype=torch.float64).reshape(-1)
        self.scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        self.dim = self.loc.numel()
        self.precision0 = torch.diag(3.0 / (math.pi ** 2 * self.scale ** 2))
        self.grid = int(grid)

    def _log_lambda(self, u: Tensor) -> Tensor:
        y = (u - self.loc) / self.scale
        return -torch.nn.functional.softplus(y) - torch.nn.functional.softplus(-y) - torch.log(self.scale)

    def score0(self, z: Tensor) -> Tensor:
        y = (z.double() - self.loc) / self.scale
        return (-torch.tanh(y / 2) / self.scale).to(z.dtype)

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        a = float(torch.as_tensor(alpha_bar).reshape(-1)[0])
        v = max(1.0 - a, 1e-300)
        zd = z.double()
        sa = math.sqrt(a)
        if v / a <= 0.25:  # u ~ N(z / sqrt(a), v / a): Gauss-Hermite in the kernel variable
            x = torch.as_tensor(_GH_X, dtype=torch.float64, device=z.device)
            logw = torch.log(torch.as_tensor(_GH_W, dtype=torch.float64, device=z.device))
            u = zd.unsqueeze(-1) / sa + math.sqrt(v / a) * x  # (*, d, q)
            lw = logw + self._log_lambda_b(u)
        else:  # a grid over u covering the logistic's mass
            lo = float((self.loc - 40 * self.scale).min())
            hi = float((self.loc + 40 * self.scale).max())
            u = torch.linspace(lo, hi, self.grid, dtype=torch.float64, device=z.device)
            u = u.expand(*zd.shape, self.grid)
            lw = self._log_lambda_b(u) - 0.5 * (zd.unsqueeze(-1) - sa * u) ** 2 / v
        w = torch.softmax(lw, -1)
        mean_u = (w * u).sum(-1)
        return ((sa * mean_u - zd) / v).to(z.dtype)

    def _log_lambda_b(self, u: Tensor) -> Tensor:
        loc, scale = self.loc.to(u.device).unsqueeze(-1), self.scale.to(u.device).unsqueeze(-1)
        y = (u - loc) / scale
        return -torch.nn.functional.softplus(y) - torch.nn.functional.softplus(-y)

    def to(self, device) -> DiffusedLogistic:
        out = DiffusedLogistic(self.loc.to(device), self.scale.to(device), self.grid)
        out.precision0 = self.precision0.to(device)
        return out

    def __repr__(self) -> str:
        return f"DiffusedLogistic(d={self.dim})"
