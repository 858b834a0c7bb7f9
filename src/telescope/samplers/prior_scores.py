r"""Scores of diffused priors, for tall-data posterior sampling (Linhart et al., 2024, Appendix D).

Under the variance-preserving forward process :math:`q_{t|0}(\theta_t | \theta_0) =
\mathcal{N}(\theta_t; \sqrt{\alpha_t}\theta_0, v_t I)` with :math:`v_t = 1 - \alpha_t`
(:class:`telescope.diffusion.VPSchedule`, :math:`\alpha_t = \bar\alpha(t)`), the diffused prior is
:math:`p^\lambda_t(\theta) = \int \lambda(\theta_0) q_{t|0}(\theta | \theta_0) d\theta_0`.

* **Gaussian** :math:`\lambda = \mathcal{N}(\mu, C)` (eqs. 23, 26):
  :math:`p^\lambda_t = \mathcal{N}(\sqrt{\alpha_t}\mu, \alpha_t C + v_t I)` and
  :math:`\nabla \log p^\lambda_t(\theta) = -(\alpha_t C + v_t I)^{-1}(\theta - \sqrt{\alpha_t}\mu)`.
* **Uniform** on :math:`[a, b]` (eqs. 34-38, written out correctly), per coordinate, with
  :math:`u = (\theta - \sqrt{\alpha_t} a)/\sqrt{v_t}` and :math:`l = (\theta - \sqrt{\alpha_t} b)/\sqrt{v_t}`:
  :math:`p^\lambda_t(\theta) \propto \Phi(u) - \Phi(l)` and
  :math:`\partial_\theta \log p^\lambda_t = (\varphi(u) - \varphi(l)) / (\sqrt{v_t}\,(\Phi(u) - \Phi(l)))`.
  Far outside the box both :math:`\Phi` terms underflow and the naive ratio is ``0/0``; here
  it is computed in log space (``log_ndtr``, ``log1mexp`` and the scaled ``erfcx``, see
  :func:`uniform_score_std`), so the score is finite and accurate everywhere and tends to the
  Gaussian tail :math:`-(\theta - \sqrt{\alpha_t} b)/v_t`.
* **Products** of independent parts (``Independent``, :class:`telescope.priors.Joint`): the
  forward noise is isotropic, so the diffused prior factorises and the score is the
  concatenation of the parts' scores.
* **LogNormal** parts are Gaussian in log space: with the log transform used by
  :class:`telescope.estimators.npse.NPSE` (``transform="auto"``) their score is the Gaussian one.

All scores live in the *standardised working space* of the score network,
:math:`z = (T(\theta) - m)/s` with :math:`T` the optional log transform: a Gaussian or uniform
prior stays Gaussian or uniform there, with transformed parameters.

Besides the score, GAUSS and JAC need the precision of the prior's backward kernel
:math:`p^\lambda_{0|t}`, approximated by the Gaussian formula
:math:`\Sigma_{t,\lambda}^{-1} = C^{-1} + (\alpha_t / v_t) I` (exact for a Gaussian prior; a
moment-matched Gaussian, variance :math:`(b-a)^2/12`, for a uniform one).  This module provides
:attr:`DiffusedPrior.precision0` (:math:`C^{-1}`) for that purpose.

Priors without a closed form (e.g. a Gamma or a Beta) raise :class:`PriorScoreError` naming the
supported ones; NPSE can learn such a prior score instead (``prior_score="learned"``,
classifier-free guidance, footnote 2 of the paper), wrapped here by :class:`LearnedPriorScore`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, Uniform, constraints
from torch.distributions import LogNormal as TorchLogNormal

from ..priors import Gaussian, Joint
from .diffused_base import DiffusedPrior
from .unconstrained import DiffusedLogistic, Logistic

__all__ = [
    "DiffusedPrior",
    "DiffusedGaussian",
    "DiffusedUniform",
    "DiffusedProduct",
    "LearnedPriorScore",
    "DiffusedFlat",
    "exact_kernel_prior",
    "PriorScoreError",
    "diffused_prior",
    "positive_dims",
    "SUPPORTED_PRIORS",
]

#: What :func:`diffused_prior` understands, for error messages.
SUPPORTED_PRIORS = ("telescope.Gaussian / torch MultivariateNormal", "telescope.BoxUniform / Independent(Uniform)",
                    "telescope.LogNormal / Independent(LogNormal) (Gaussian after the log transform)",
                    "Independent(Normal)", "telescope.samplers.unconstrained.Logistic (a box prior in logit space)",
                    "telescope.Joint of Normal, Uniform, LogNormal, Gaussian and BoxUniform parts")


class PriorScoreError(ValueError):
    """The diffused score of this prior has no closed form here."""


def _alpha(alpha_bar, z: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha_t`` and ``v_t = 1 - alpha_t`` in float64, shaped to broadcast against ``z (*, d)``."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64, device=z.device)
    if a.dim() > 0:
        a = a.reshape(*a.shape, *([1] * (z.dim() - a.dim())))
    return a, (1.0 - a)


class DiffusedGaussian(DiffusedPrior):
    r"""Diffused score of :math:`\mathcal{N}(\mu, C)`: :math:`-(\alpha C + vI)^{-1}(z - \sqrt\alpha\mu)`.

    Arguments:
        mean: ``(d,)``.
        cov: ``(d, d)`` covariance (or ``(d,)`` variances).

    Example:
        >>> p = DiffusedGaussian(torch.zeros(2), torch.eye(2))
        >>> p.score(torch.ones(3, 2), 0.5)     # alpha C + v I = I: score = -z
        tensor([[-1., -1.],
                [-1., -1.],
                [-1., -1.]])
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.dim() == 1:
            cov = torch.diag(cov)
        self.dim = mean.numel()
        self.mean, self.cov = mean, 0.5 * (cov + cov.T)
        self.evals, self.evecs = torch.linalg.eigh(self.cov)
        if not bool((self.evals > 0).all()):
            raise ValueError(f"Gaussian prior covariance must be positive definite, eigenvalues {self.evals.tolist()}")
        self.precision0 = (self.evecs / self.evals) @ self.evecs.T

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        a, v = _alpha(alpha_bar, z)
        r = z.double() - a.sqrt() * self.mean
        w = r @ self.evecs  # coordinates in the eigenbasis of C
        return (-(w / (a * self.evals + v)) @ self.evecs.T).to(z.dtype)

    def score0(self, z: Tensor) -> Tensor:
        return (-(z.double() - self.mean) @ self.precision0).to(z.dtype)

    def to(self, device) -> DiffusedGaussian:
        out = DiffusedGaussian.__new__(DiffusedGaussian)
        out.dim = self.dim
        for k in ("mean", "cov", "evals", "evecs", "precision0"):
            setattr(out, k, getattr(self, k).to(device))
        return out

    def __repr__(self) -> str:
        return f"DiffusedGaussian(d={self.dim})"


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and for very negative ``x``."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log_phi(u: Tensor) -> Tensor:
    return -0.5 * u * u - 0.5 * math.log(2 * math.pi)


def log_ndtr_diff(u: Tensor, l: Tensor) -> Tensor:  # noqa: E741 - l is the lower argument
    r""":math:`\log(\Phi(u) - \Phi(l))` for ``u > l``, stable in both tails (float64 in, float64 out)."""
    # in the right tail use the mirror Phi(-l) - Phi(-u): both terms stay far from 1
    right = l > 0
    hi = torch.where(right, -l, u)
    lo = torch.where(right, -u, l)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + _log1mexp((log_lo - log_hi).clamp(max=-1e-300))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _mills(x: Tensor) -> Tensor:
    r""":math:`\varphi(x)/\Phi(x)` without under- or overflow (via the scaled ``erfcx``)."""
    return _SQRT_2_OVER_PI / torch.special.erfcx(-x / math.sqrt(2.0))


def uniform_score_std(u: Tensor, l: Tensor) -> Tensor:  # noqa: E741 - l is the lower argument
    r""":math:`(\varphi(u) - \varphi(l)) / (\Phi(u) - \Phi(l))` for ``u > l``, exact in both tails.

    In a tail (both arguments of one sign, mirrored to the left one) the ratio is written with
    Mills ratios :math:`R = \varphi/\Phi` and :math:`\rho = \Phi(l)/\Phi(u)`:
    :math:`(R(u) - \rho R(l)) / (1 - \rho)`, with :math:`\log\rho` from ``erfcx`` and the exact
    difference :math:`(l - u)(l + u)/2`, so nothing cancels catastrophically however far out.
    """
    right = l > 0  # mirror the right tail onto the left one: the score changes sign
    uu, ll = torch.where(right, -l, u), torch.where(right, -u, l)
    sign = torch.where(right, -1.0, 1.0).to(u.dtype)
    tail = uu < -1.0
    # left tail (u < -1, so both arguments are in it)
    ut, lt = torch.where(tail, uu, -2 * torch.ones_like(uu)), torch.where(tail, ll, -3 * torch.ones_like(ll))
    log_rho = torch.log(torch.special.erfcx(-lt / math.sqrt(2.0)) / torch.special.erfcx(-ut / math.sqrt(2.0))) \
        - 0.5 * (lt - ut) * (lt + ut)
    rho = torch.exp(log_rho)
    tail_val = (_mills(ut) - rho * _mills(lt)) / (-torch.expm1(log_rho))
    # otherwise Phi(u) > 0.15: the plain formula does not cancel catastrophically
    um, lm = torch.where(tail, torch.zeros_like(uu), uu), torch.where(tail, -torch.ones_like(ll), ll)
    mid_val = (torch.exp(_log_phi(um)) - torch.exp(_log_phi(lm))) / (torch.special.ndtr(um) - torch.special.ndtr(lm))
    return sign * torch.where(tail, tail_val, mid_val)


class DiffusedUniform(DiffusedPrior):
    r"""Diffused score of the uniform prior on the box ``[low, high]``, computed in log space.

    Example:
        >>> p = DiffusedUniform(torch.tensor([-1.0]), torch.tensor([1.0]))
        >>> bool(p.score(torch.tensor([[0.0]]), 0.5).abs() < 1e-6)        # symmetric: zero at the centre
        True
        >>> bool(torch.isfinite(p.score(torch.tensor([[1e3]]), 0.999)).all())   # far outside: finite
        True
    """

    def __init__(self, low: Tensor, high: Tensor):
        self.low = torch.as_tensor(low, dtype=torch.float64).reshape(-1)
        self.high = torch.as_tensor(high, dtype=torch.float64).reshape(-1)
        if self.low.shape != self.high.shape or not bool((self.high > self.low).all()):
            raise ValueError(f"uniform prior needs low < high of equal shape, got {self.low.tolist()} and "
                             f"{self.high.tolist()}")
        self.dim = self.low.numel()
        self.precision0 = torch.diag(12.0 / (self.high - self.low) ** 2)

    def log_density(self, z: Tensor, alpha_bar) -> Tensor:
        r""":math:`\log p^\lambda_t(z)` ``(*,)`` (float64), including the normalising constant."""
        a, v = _alpha(alpha_bar, z)
        sa, sv = a.sqrt(), v.clamp_min(1e-300).sqrt()
        zd = z.double()
        u, l = (zd - sa * self.low) / sv, (zd - sa * self.high) / sv  # noqa: E741
        return (log_ndtr_diff(u, l) - torch.log(sa * (self.high - self.low))).sum(-1)

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        a, v = _alpha(alpha_bar, z)
        sa, sv = a.sqrt(), v.clamp_min(1e-300).sqrt()
        zd = z.double()
        u, l = (zd - sa * self.low) / sv, (zd - sa * self.high) / sv  # noqa: E741
        return (uniform_score_std(u, l) / sv).to(z.dtype)

    def score0(self, z: Tensor) -> Tensor:
        """The undiffused uniform is flat: zero (the box itself is enforced by rejection after sampling)."""
        return torch.zeros_like(z)

    def to(self, device) -> DiffusedUniform:
        out = DiffusedUniform.__new__(DiffusedUniform)
        out.dim, out.low, out.high, out.precision0 = self.dim, self.low.to(device), self.high.to(device), \
            self.precision0.to(device)
        return out

    def __repr__(self) -> str:
        return f"DiffusedUniform(d={self.dim})"


class DiffusedProduct(DiffusedPrior):
    """Independent blocks: the score is the concatenation of the blocks' scores (in order)."""

    def __init__(self, parts: Sequence[DiffusedPrior]):
        self.parts = list(parts)
        self.sizes = [p.dim for p in self.parts]
        self.dim = sum(self.sizes)
        self.precision0 = torch.block_diag(*[p.precision0 for p in self.parts])

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        a = torch.as_tensor(alpha_bar)
        return torch.cat([p.score(c, a) for p, c in zip(self.parts, z.split(self.sizes, -1))], -1)

    def score0(self, z: Tensor) -> Tensor:
        return torch.cat([p.score0(c) for p, c in zip(self.parts, z.split(self.sizes, -1))], -1)

    def to(self, device) -> DiffusedProduct:
        return DiffusedProduct([p.to(device) for p in self.parts])

    def __repr__(self) -> str:
        return f"DiffusedProduct({self.parts})"


class DiffusedFlat(DiffusedPrior):
    r"""The improper flat "prior" (Lebesgue measure) on ``d`` coordinates: zero score, zero precision.

    Its backward kernel is exactly Gaussian, :math:`p_{0|t}(\theta_0|\theta) = \mathcal{N}(\theta/\sqrt{\alpha_t},
    (v_t/\alpha_t) I)`, i.e. :meth:`precision` is :math:`(\alpha_t/v_t) I`.  It stands in for a uniform
    prior in the tall-data decomposition (:func:`exact_kernel_prior`).
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.precision0 = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        return torch.zeros_like(z)

    def score0(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z)

    def to(self, device) -> DiffusedFlat:
        out = DiffusedFlat(self.dim)
        out.precision0 = self.precision0.to(device)
        return out

    def __repr__(self) -> str:
        return f"DiffusedFlat(d={self.dim})"


def exact_kernel_prior(prior: DiffusedPrior) -> DiffusedPrior:
    r"""The prior term for tall-data sampling whose backward kernel is exactly Gaussian.

    The tall posterior is :math:`\lambda^{1-n}\prod_j p(\theta|x_j)`.  For a uniform prior
    :math:`\lambda^{1-n}` is constant on the box and every :math:`p(\theta|x_j)` vanishes outside
    it, so the tall posterior equals :math:`\ell^{1-n}\prod_j p(\theta|x_j)` with :math:`\ell` the flat
    (Lebesgue) measure, whose diffused score is zero and whose backward kernel is exactly
    :math:`\mathcal{N}(\theta/\sqrt{\alpha_t}, (v_t/\alpha_t)I)`.  Lemma 3.2 of Linhart et al. (2024)
    holds with :math:`\ell` in place of :math:`\lambda`, so the moment-matched Gaussian kernel of the
    uniform prior (weighted by :math:`1 - n`) disappears; only the per-observation kernels remain
    approximated.  Uniform blocks become :class:`DiffusedFlat`; Gaussian blocks (and LogNormal
    ones, Gaussian in log space) are already exact and are kept.  Learned prior scores are kept.
    """
    if isinstance(prior, DiffusedUniform):
        return DiffusedFlat(prior.dim)
    if isinstance(prior, DiffusedProduct):
        return DiffusedProduct([exact_kernel_prior(p) for p in prior.parts])
    return prior


class LearnedPriorScore(DiffusedPrior):
    r"""A prior score learned by the score network itself (classifier-free: ``x`` replaced by a null token).

    Arguments:
        eps: ``eps(z (*, d), alpha_bar) -> (*, d)``, the unconditional noise prediction at the time
            with that :math:`\bar\alpha`.
        precision0: ``(d, d)`` precision of the prior in the working space (from the training
            parameters: the inverse of their empirical covariance).
    """

    def __init__(self, eps: Callable[[Tensor, float], Tensor], precision0: Tensor, score0_alpha: float = 0.999):
        self.eps = eps
        self.precision0 = torch.as_tensor(precision0, dtype=torch.float64)
        self.dim = self.precision0.shape[0]
        self.score0_alpha = score0_alpha

    def score(self, z: Tensor, alpha_bar) -> Tensor:
        a = float(torch.as_tensor(alpha_bar).reshape(-1)[0])
        return -self.eps(z, a) / math.sqrt(max(1.0 - a, 1e-12))

    def score0(self, z: Tensor) -> Tensor:
        """The learned score at the least noisy time the network saw well (``alpha_bar = score0_alpha``)."""
        return self.score(z, self.score0_alpha)

    def to(self, device) -> LearnedPriorScore:
        return LearnedPriorScore(self.eps, self.precision0.to(device), self.score0_alpha)


# -- recognising priors ------------------------------------------------------------------------
def _scalar_part(p: Distribution, size: int):
    """(kind, params) of a scalar or independent part, or None."""
    if isinstance(p, Logistic):
        return "logistic", (p.loc.expand(size), p.scale.expand(size))
    base = p
    while isinstance(base, Independent):  # BoxUniform and telescope's LogNormal are Independent too
        base = base.base_dist
    if isinstance(base, Uniform):
        return "uniform", (base.low.expand(size), base.high.expand(size))
    if isinstance(base, TorchLogNormal):
        return "lognormal", (base.loc.expand(size), base.scale.expand(size))
    if isinstance(base, (Gaussian, MultivariateNormal)):
        return "gaussian", (base.loc.expand(size), base.covariance_matrix)
    if isinstance(base, Normal):
        return "gaussian", (base.loc.expand(size), torch.diag(base.scale.expand(size) ** 2))
    return None


def _blocks(prior: Distribution) -> list:
    """The prior as a list of (kind, params, size) blocks, or raise PriorScoreError."""
    if isinstance(prior, Joint):
        out = []
        for part, size in zip(prior.parts, prior.sizes):
            out += _blocks_part(part, size)
        return out
    return _blocks_part(prior, int(prior.event_shape[0]) if len(prior.event_shape) else 1)


def _blocks_part(part: Distribution, size: int) -> list:
    if isinstance(part, Joint):
        return _blocks(part)
    found = _scalar_part(part, size)
    if found is None:
        raise PriorScoreError(
            f"the diffused score of a {type(part).__name__} prior has no closed form in telescope; supported "
            f"priors: {'; '.join(SUPPORTED_PRIORS)}. For other priors use NPSE(prior, prior_score='learned') "
            f"(the prior score is learned with the posterior score, classifier-free)")
    kind, params = found
    return [(kind, tuple(torch.as_tensor(q, dtype=torch.float64) for q in params), size)]


def positive_dims(prior: Distribution) -> Tensor:
    """Boolean mask ``(d,)`` of coordinates whose prior support is the positive half-line.

    NPSE (``transform="auto"``) diffuses ``log theta`` on these coordinates, so samples stay
    positive and LogNormal parts become Gaussian.
    """
    d = int(prior.event_shape[0])
    if isinstance(prior, Joint):
        return torch.cat([positive_dims(p) if len(p.event_shape) else positive_dims(Independent(p.expand((1,)), 1))
                          for p in prior.parts])
    try:
        support = prior.support
    except NotImplementedError:
        return torch.zeros(d, dtype=torch.bool)
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    half_line = isinstance(support, (constraints.greater_than, constraints.greater_than_eq))
    if half_line and bool((torch.as_tensor(support.lower_bound) == 0).all()):
        return torch.ones(d, dtype=torch.bool)
    return torch.zeros(d, dtype=torch.bool)


def diffused_prior(prior: Distribution, loc: Tensor | None = None, scale: Tensor | None = None,
                   log_dims: Tensor | None = None) -> DiffusedPrior:
    r"""The :class:`DiffusedPrior` of ``prior`` in the working space ``z = (T(theta) - loc) / scale``.

    Arguments:
        prior: a supported prior (see :data:`SUPPORTED_PRIORS`).
        loc, scale: ``(d,)`` standardisation (default 0 and 1).
        log_dims: ``(d,)`` boolean mask of coordinates diffused in log space (``T = log`` there);
            LogNormal parts must be in it, other parts must not.

    Raises:
        PriorScoreError: the prior (or a part of it) has no closed-form diffused score.

    Example:
        >>> import telescope as ts
        >>> p = diffused_prior(ts.BoxUniform([0.0, 0.0], [2.0, 4.0]), loc=torch.tensor([1.0, 2.0]),
        ...                    scale=torch.tensor([1.0, 2.0]))
        >>> p.low.tolist(), p.high.tolist()
        ([-1.0, -1.0], [1.0, 1.0])
    """
    d = int(prior.event_shape[0])
    loc = torch.zeros(d, dtype=torch.float64) if loc is None else torch.as_tensor(loc, dtype=torch.float64)
    scale = torch.ones(d, dtype=torch.float64) if scale is None else torch.as_tensor(scale, dtype=torch.float64)
    log_dims = torch.zeros(d, dtype=torch.bool) if log_dims is None else torch.as_tensor(log_dims, dtype=torch.bool)
    blocks = _blocks(prior)
    parts: list[DiffusedPrior] = []
    i = 0
    for kind, params, size in blocks:
        sl = slice(i, i + size)
        m, s, lg = loc[sl], scale[sl], log_dims[sl]
        if kind == "lognormal":
            if not bool(lg.all()):
                raise PriorScoreError(
                    "a LogNormal prior has a closed-form diffused score only in log space: use "
                    "NPSE(prior, transform='auto') (the default), or prior_score='learned'")
            mu, sd = params
            parts.append(DiffusedGaussian((mu - m) / s, torch.diag((sd / s) ** 2)))
        elif bool(lg.any()):
            raise PriorScoreError(f"coordinates {list(range(sl.start, sl.stop))} are diffused in log space but "
                                  f"their {kind} prior has no closed-form diffused score there; use "
                                  f"transform=None or prior_score='learned'")
        elif kind == "logistic":  # the uniform box prior in logit space (telescope.samplers.unconstrained)
            mu, sc = params
            parts.append(DiffusedLogistic((mu - m) / s, sc / s))
        elif kind == "gaussian":
            mu, cov = params
            parts.append(DiffusedGaussian((mu - m) / s, cov / (s[:, None] * s[None, :])))
        else:  # uniform
            low, high = params
            parts.append(DiffusedUniform((low - m) / s, (high - m) / s))
        i += size
    if i != d:
        raise PriorScoreError(f"prior parts cover {i} coordinates but the prior has {d}")
    # merge consecutive blocks only when needed
    return parts[0] if len(parts) == 1 else DiffusedProduct(parts)
