"""Gaussian linear: a conjugate Gaussian model with an analytic posterior.

The task of the SBI benchmark (Lueckmann et al., 2021, "gaussian_linear"):

.. math::
    \\theta \\sim \\mathcal{N}(0, \\sigma_0^2 I_D), \\qquad x \\mid \\theta \\sim \\mathcal{N}(\\theta, \\sigma^2 I_D),

with ``D = 10`` and ``sigma_0^2 = sigma^2 = 0.1``.  The posterior is Gaussian,

.. math::
    \\theta \\mid x \\sim \\mathcal{N}\\big(\\Sigma_n \\Sigma^{-1} x,\\ \\Sigma_n\\big), \\qquad
    \\Sigma_n = (\\Sigma_0^{-1} + \\Sigma^{-1})^{-1},

so reference samples are exact (``reference_kind = "analytic"``).  The simulator is a
generator ``x = theta + sigma * u`` with ``u ~ N(0, I)``.  sbibm calls the two variances "scales" but
uses them as covariances (``precision_matrix = inv(0.1 I)``), so its task is this one with the defaults.

**Observations** (``observations="sbibm"``, the default): the benchmark's ten stored observations, their
true parameters and its 10,000 reference posterior samples each, read from the package data
(:mod:`telescope.tasks._sbibm`; copied from the sbibm 1.1.0 wheel, MIT licence), so that comparisons with
published numbers are like for like; ``reference="mcmc"`` gives this library's own reference on them
instead.  ``observations="telescope"`` gives this library's own draws (fixed seeds) with its own references.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..priors import Gaussian
from ..simulation.simulators import Simulator
from . import register
from ._sbibm import SBIBMObservations
from .base import Task

__all__ = ["GaussianLinear"]


class _GaussianLinearCommon:
    """Mixin: what the two Gaussian linear tasks share, the likelihood ``x | theta ~ N(theta, noise_var I)``
    and the choice of observations by configuration.

    A task with it sets ``dim_x``, ``noise_var`` and ``_SBIBM_CONFIG``.  Its simulator's ``_noise`` and
    ``_generate`` stay in each task (two lines each): a simulator's fingerprint hashes the qualified names of
    its functions, so sharing them here would change the fingerprint of every store simulated with these tasks.
    """

    dim_x: int
    noise_var: float
    _SBIBM_CONFIG: str

    def _observation_set(self, observations: str | None, benchmark: bool) -> str:
        """``observations``, or for ``None`` ``"sbibm"`` in the benchmark's configuration (``benchmark``) and
        ``"telescope"`` otherwise; ``"sbibm"`` outside that configuration is refused."""
        if observations is None:
            return "sbibm" if benchmark else "telescope"
        if observations == "sbibm" and not benchmark:
            raise ValueError(f"observations='sbibm' needs the benchmark's configuration ({self._SBIBM_CONFIG}); "
                             f"sbibm's files are not observations of this one")
        return observations

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta (m, d)`` with one ``x (dim_x,)`` or paired rows ``x (m, dim_x)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim_x)
        r2 = ((x - theta) ** 2).sum(-1)
        return (-0.5 * r2 / self.noise_var - 0.5 * self.dim_x * math.log(2 * math.pi * self.noise_var)).float()


@register("gaussian_linear")
class GaussianLinear(_GaussianLinearCommon, SBIBMObservations, Task):
    """Gaussian prior, Gaussian likelihood centred on ``theta``; analytic posterior.

    Arguments:
        dim: dimension ``D`` of ``theta`` and ``x``.
        prior_var: prior variance ``sigma_0^2`` (isotropic).
        noise_var: likelihood variance ``sigma^2`` (isotropic).
        observations: ``"sbibm"`` (the benchmark's stored observations and true parameters), ``"telescope"``
            (this library's own draws) or ``None`` (the default: ``"sbibm"`` in the benchmark's configuration
            ``dim=10`` with variances 0.1, for which sbibm's files are made, else ``"telescope"``).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's own exact reference; the default otherwise).

    Example:
        >>> task = GaussianLinear()
        >>> task.reference_samples(1, 100, cache=False).shape
        torch.Size([100, 10])
    """

    reference_kind = "analytic"
    sbibm_name = "gaussian_linear"
    _SBIBM_CONFIG = "dim=10, prior_var=0.1, noise_var=0.1"

    def __init__(self, dim: int = 10, prior_var: float = 0.1, noise_var: float = 0.1,
                 observations: str | None = None, reference: str | None = None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        if not prior_var > 0 or not noise_var > 0:
            raise ValueError(f"prior_var and noise_var must be > 0, got {prior_var!r} and {noise_var!r}")
        self.dim_theta = self.dim_x = dim
        self.prior_var, self.noise_var = float(prior_var), float(noise_var)
        benchmark = (dim, self.prior_var, self.noise_var) == (10, 0.1, 0.1)
        self._init_observations(self._observation_set(observations, benchmark), reference)
        self.prior = Gaussian(torch.zeros(dim), torch.full((dim,), self.prior_var))
        self.simulator = Simulator(self._generate, noise=self._noise, name="gaussian_linear",
                                   config={"dim": dim, "noise_var": self.noise_var})

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim_x, generator=generator)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        return theta + math.sqrt(self.noise_var) * u.to(theta)

    def posterior_params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``(D,)`` and covariance ``(D, D)`` of the exact posterior ``p(theta | x)``."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        prec0 = torch.linalg.inv(self.prior.covariance_matrix.double())
        prec = torch.eye(self.dim_x, dtype=torch.float64) / self.noise_var
        cov = torch.linalg.inv(prec0 + prec)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ (prec @ x + prec0 @ self.prior.loc.double())
        return mean, cov

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        mean, cov = self.posterior_params(x)
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.dim_theta, generator=g, dtype=torch.float64)
        return mean + z @ torch.linalg.cholesky(cov).T

    def cache_key(self) -> str:
        if (self.dim_x, self.prior_var, self.noise_var) == (10, 0.1, 0.1):
            return super().cache_key()
        return f"{self.name}_d{self.dim_x}_p{self.prior_var:g}_n{self.noise_var:g}"
