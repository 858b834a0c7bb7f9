"""Priors as torch Distributions with a ``(d,)`` event shape.

telescope accepts any ``torch.distributions.Distribution`` whose ``event_shape`` is
``(d,)`` and which implements ``sample`` and ``log_prob``.  This module adds the usual
ones with plain constructors:

* :class:`BoxUniform` — independent uniforms on a box ``[low, high]``;
* :class:`Gaussian` — a multivariate normal with full covariance;
* :class:`LogNormal` — independent log-normals;
* :class:`Joint` — an independent product of priors (each scalar or ``(d_i,)``),
  concatenated into one ``(sum d_i,)`` vector.

:func:`check_prior` validates a user prior and :func:`in_support` tells which rows of
``theta`` lie inside the prior support (used by NPE's rejection step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, constraints

__all__ = ["BoxUniform", "Gaussian", "LogNormal", "Joint", "check_prior", "in_support", "prior_bounds"]


def _vec(name: str, value, dtype=torch.float32) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-d vector, got shape {tuple(t.shape)}")
    return t


class BoxUniform(Independent):
    """Independent uniform prior on the box ``[low, high]`` (shape ``(d,)``).

    Example:
        >>> prior = BoxUniform([-1.0, -1.0], [1.0, 1.0])
        >>> prior.sample((3,)).shape
        torch.Size([3, 2])
    """

    def __init__(self, low, high):
        low, high = _vec("low", low), _vec("high", high)
        if low.shape != high.shape:
            raise ValueError(f"low and high must have the same shape, got {tuple(low.shape)} and {tuple(high.shape)}")
        if not torch.all(high > low):
            raise ValueError(f"high must be > low everywhere, got low={low.tolist()} high={high.tolist()}")
        super().__init__(torch.distributions.Uniform(low, high), 1)
        self.low, self.high = low, high

    def log_prob(self, value: Tensor) -> Tensor:
        # Uniform.log_prob raises outside the support when validation is on; return -inf instead.
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        lp = -torch.log(self.high - self.low).sum()
        return torch.where(inside, lp, torch.tensor(-float("inf"), dtype=value.dtype, device=value.device))

    def __repr__(self) -> str:
        return f"BoxUniform(low={self.low.tolist()}, high={self.high.tolist()})"


class Gaussian(MultivariateNormal):
    """Multivariate normal prior ``N(loc, cov)`` with full covariance (``cov`` may be a vector of variances)."""

    def __init__(self, loc, cov):
        loc = _vec("loc", loc)
        cov = torch.as_tensor(cov, dtype=torch.float32)
        if cov.dim() == 1:
            cov = torch.diag(cov)
        if cov.shape != (loc.numel(), loc.numel()):
            raise ValueError(f"cov must have shape ({loc.numel()}, {loc.numel()}), got {tuple(cov.shape)}")
        if not torch.isfinite(cov).all():
            raise ValueError(f"cov must be finite, got {cov.tolist()}")
        if not torch.allclose(cov, cov.T, rtol=1e-5, atol=1e-6):
            raise ValueError(f"cov must be symmetric, got {cov.tolist()} (cov - cov.T has largest entry "
                             f"{float((cov - cov.T).abs().max()):.3g})")
        if torch.linalg.cholesky_ex(cov.double()).info != 0:
            eig = torch.linalg.eigvalsh(cov.double())
            raise ValueError(f"cov must be positive definite, got a matrix whose smallest eigenvalue is "
                             f"{float(eig.min()):.3g} (eigenvalues {[round(float(e), 6) for e in eig][:6]}); a "
                             f"vector of variances must be > 0")
        super().__init__(loc, covariance_matrix=cov)

    def __repr__(self) -> str:
        return f"Gaussian(d={self.event_shape[0]})"


class LogNormal(Independent):
    """Independent log-normal prior: ``log theta_i ~ N(loc_i, scale_i^2)``."""

    def __init__(self, loc, scale):
        loc, scale = _vec("loc", loc), _vec("scale", scale)
        if loc.shape != scale.shape:
            raise ValueError(f"loc and scale must have the same shape, got {tuple(loc.shape)} and {tuple(scale.shape)}")
        if not torch.all(scale > 0):
            raise ValueError(f"scale must be > 0, got {scale.tolist()}")
        super().__init__(torch.distributions.LogNormal(loc, scale), 1)

    def log_prob(self, value: Tensor) -> Tensor:
        inside = (value > 0).all(-1)
        safe = torch.where(value > 0, value, torch.ones_like(value))
        lp = super().log_prob(safe)
        return torch.where(inside, lp, torch.full_like(lp, -float("inf")))


class _JointSupport(constraints.Constraint):
    event_dim = 1

    def __init__(self, joint: Joint):
        self.joint = joint

    def check(self, value: Tensor) -> Tensor:
        return torch.stack([_part_support(p, v) for p, v in zip(self.joint.parts, self.joint._split(value))], -1).all(-1)


class Joint(Distribution):
    """Independent product of priors, concatenated into one vector.

    Arguments:
        parts: distributions with event shape ``()`` or ``(d_i,)``.

    Example:
        >>> prior = Joint([torch.distributions.Normal(0.0, 1.0), BoxUniform([0.0], [1.0])])
        >>> prior.sample((5,)).shape
        torch.Size([5, 2])
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, parts: Sequence[Distribution]):
        if len(parts) == 0:
            raise ValueError("parts must contain at least one distribution")
        sizes = []
        for i, p in enumerate(parts):
            if not isinstance(p, Distribution):
                raise TypeError(f"parts[{i}] must be a torch Distribution, got {type(p).__name__}")
            if len(p.event_shape) > 1 or len(p.batch_shape) > 0:
                raise ValueError(f"parts[{i}] must have event shape () or (d,) and no batch shape, "
                                 f"got event {tuple(p.event_shape)} batch {tuple(p.batch_shape)}")
            sizes.append(1 if len(p.event_shape) == 0 else p.event_shape[0])
        self.parts, self.sizes = list(parts), sizes
        super().__init__(event_shape=torch.Size([sum(sizes)]), validate_args=False)

    def _split(self, value: Tensor):
        out = []
        for p, chunk in zip(self.parts, value.split(self.sizes, -1)):
            out.append(chunk.squeeze(-1) if len(p.event_shape) == 0 else chunk)
        return out

    @property
    def support(self):
        return _JointSupport(self)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        out = []
        for p in self.parts:
            s = p.sample(sample_shape)
            out.append(s.unsqueeze(-1) if len(p.event_shape) == 0 else s)
        return torch.cat(out, -1)

    def log_prob(self, value: Tensor) -> Tensor:
        total: Any = 0.0  # a float until the first part adds its tensor
        for p, v in zip(self.parts, self._split(value)):
            inside = _part_support(p, v)
            lp = p.log_prob(torch.where(_bcast(inside, v), v, _safe_point(p, v)))
            total = total + torch.where(inside, lp, torch.full_like(lp, -float("inf")))
        return total

    @property
    def mean(self) -> Tensor:
        return torch.cat([p.mean.reshape(-1) for p in self.parts])

    @property
    def variance(self) -> Tensor:
        return torch.cat([p.variance.reshape(-1) for p in self.parts])


def _part_support(p: Distribution, v: Tensor) -> Tensor:
    if len(p.event_shape) == 0:
        return p.support.check(v) & torch.isfinite(v)  # type: ignore[union-attr]  # support: set by every Distribution
    return in_support(p, v)


def _bcast(mask: Tensor, v: Tensor) -> Tensor:
    return mask.reshape(mask.shape + (1,) * (v.dim() - mask.dim()))


def _safe_point(p: Distribution, v: Tensor) -> Tensor:
    try:
        m = p.mean
        if torch.isfinite(m).all():
            return m.to(v).expand_as(v)
    except NotImplementedError:
        pass
    return p.sample().to(v).expand_as(v)


def check_prior(prior, name: str = "prior") -> Distribution:
    """Validate that ``prior`` is a usable prior and return it.

    Raises:
        TypeError: not a Distribution, or missing ``log_prob``/``sample``.
        ValueError: event shape is not ``(d,)``.
    """
    if not isinstance(prior, Distribution):
        raise TypeError(f"{name} must be a torch.distributions.Distribution with event shape (d,), "
                        f"got {type(prior).__name__}")
    if len(prior.event_shape) != 1 or len(prior.batch_shape) != 0:
        raise ValueError(f"{name} must have event shape (d,) and no batch shape, got event shape "
                         f"{tuple(prior.event_shape)} and batch shape {tuple(prior.batch_shape)}; "
                         f"wrap scalar distributions with telescope.Joint([...]) or torch Independent")
    for method in ("sample", "log_prob"):
        try:
            if method == "sample":
                prior.sample((1,))
            else:
                prior.log_prob(prior.sample((1,)))
        except NotImplementedError:
            raise TypeError(f"{name} must implement {method}(), but {type(prior).__name__}.{method} "
                            f"raised NotImplementedError") from None
    return prior


def in_support(prior: Distribution, theta: Tensor) -> Tensor:
    """Boolean mask ``(*,)`` of the rows of ``theta`` ``(*, d)`` inside the support of ``prior``."""
    if isinstance(prior, BoxUniform):
        return ((theta >= prior.low.to(theta)) & (theta <= prior.high.to(theta))).all(-1)
    try:
        ok = prior.support.check(theta)  # type: ignore[union-attr]  # typed Optional in torch; raises NotImplementedError when absent
        if ok.dim() == theta.dim():  # element-wise constraint: reduce the event dim
            ok = ok.all(-1)
        return ok & torch.isfinite(theta).all(-1)
    except NotImplementedError:
        return torch.isfinite(prior.log_prob(theta))


def prior_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """``(low, high)`` when the prior lives on a box, else ``None``."""
    if isinstance(prior, BoxUniform):
        return prior.low, prior.high
    support = getattr(prior, "support", None)
    base = getattr(support, "base_constraint", support)
    if isinstance(base, constraints.interval) or type(base).__name__ == "_Interval":
        low, high = torch.as_tensor(base.lower_bound), torch.as_tensor(base.upper_bound)  # type: ignore[union-attr]
        d = prior.event_shape[0]
        return low.expand(d).float(), high.expand(d).float()
    return None
