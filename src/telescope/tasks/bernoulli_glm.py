"""Bernoulli GLM: a spiking neuron with a linear filter, with an MCMC reference.

The tasks ``bernoulli_glm`` and ``bernoulli_glm_raw`` of the SBI benchmark (Lueckmann et al.,
2021, tasks T.5 and T.6).  A neuron sees a white-noise stimulus ``I_t ~ N(0, 1)`` over ``T = 100``
time bins (one fixed stimulus for the task, drawn with a fixed seed) and spikes in bin ``t`` with

.. math::
    y_t \\sim \\mathrm{Bernoulli}\\big(\\sigma(v_t^\\top \\theta)\\big), \\qquad
    v_t = (1, I_t, I_{t-1}, \\dots, I_{t-8}) \\quad (I_s = 0 \\text{ for } s < 1),

so ``theta = (b, h_1..h_9)`` is an offset and a 9-tap linear filter (10-d).  The prior is the
benchmark's Gaussian smoothness prior, ``theta ~ N(0, B^{-1})`` with precision ``B``:
``B_00 = 1/2`` (offset variance 2) and ``B_{1:,1:} = F^T F`` with ``F = D^2 + diag(sqrt(k/9))``,
``k = 0..8``, where ``D`` is the first-difference matrix (ones on the diagonal, minus ones below).

* ``bernoulli_glm``: ``x = V^T y`` (10-d), the number of spikes and the spike-triggered sums of the
  lagged stimulus — the sufficient statistics of the GLM.
* ``bernoulli_glm_raw``: ``x = y`` (the 100 spikes).

**Likelihood.**  ``log p(y | theta) = theta^T V^T y - sum_t log(1 + exp(v_t^T theta))`` depends on
``y`` only through ``V^T y``, so both tasks share the posterior; for the summary task
:meth:`log_likelihood` returns this expression (the log-probability of any spike train with those
statistics — the number of such trains is a constant in ``theta``).

**Reference** (``reference_kind = "mcmc"``): whitened slice sampling of the log-concave exact
posterior, initialised by SIR of prior draws, with split-R-hat < 1.01 and a bulk-ESS check
(:func:`telescope.tasks._benchmark.checked_mcmc`).  Computed lazily per observation and cached.

**Checked against the benchmark's definition** (repository ``sbi-benchmark/sbibm``, file
``sbibm/tasks/bernoulli_glm/task.py``, read through the code search of this project): ``T = 100``
bins of a white-noise ``N(0, 1)`` stimulus, design matrix of a ones column and 9 lags, the
precision ``B`` above (``F = D D + diag(sqrt(k / 9))``, ``B_00 = 0.5``), spikes
``Bernoulli(sigmoid(V theta))`` and the summaries (spike count and the 9 spike-triggered sums, which
the benchmark computes as a padded correlation, equal to ``V^T y``): all as here.  One difference
is unavoidable: the benchmark's stimulus is one stored draw (NumPy seed 42); this task draws its
own fixed stimulus, so the observations differ from the benchmark's stored ones (its reference
uses Polya-Gamma Gibbs sampling; here slice sampling — both exact-likelihood MCMC).

**Observations** (``observations="sbibm"``, the default): the benchmark's stored stimulus (the
design matrix is built from it), its ten observations (the summaries, or the spike trains for
``bernoulli_glm_raw``), their true parameters and its 10,000 reference posterior samples each, read
from the package data (:mod:`telescope.tasks._sbibm`; copied from the sbibm 1.1.0 wheel, MIT
licence), so comparisons with published numbers are like for like; ``reference="mcmc"`` samples
this library's slice-sampling reference on them instead.  ``observations="telescope"`` gives the
library's own stimulus (seed ``20210112``), observations and references.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..priors import Gaussian
from ..simulation.simulators import Simulator
from . import register
from ._benchmark import MCMCReferenceTask
from ._sbibm import SBIBMObservations, data_dir

__all__ = ["BernoulliGLM", "BernoulliGLMRaw", "glm_design", "glm_prior_precision", "sbibm_stimulus"]

_T, _TAPS = 100, 9
_STIMULUS_SEED = 20210112


def sbibm_stimulus() -> Tensor:
    """The benchmark's stored white-noise stimulus ``(100,)`` (float64 of its float32 values)."""
    return torch.load(data_dir("bernoulli_glm") / "stimulus_I.pt", weights_only=True).double()


def glm_design(T: int = _T, taps: int = _TAPS, seed: int = _STIMULUS_SEED, stimulus: Tensor | None = None) -> Tensor:
    """The design matrix ``V (T, taps + 1)`` (float64): a column of ones and the lagged stimulus.

    The stimulus is ``stimulus`` ``(T,)`` when given (e.g. :func:`sbibm_stimulus`), else ``N(0, 1)`` draws with ``seed``."""
    if stimulus is None:
        g = torch.Generator().manual_seed(seed)
        stim = torch.randn(T, generator=g, dtype=torch.float64)
    else:
        stim = torch.as_tensor(stimulus, dtype=torch.float64)
        if stim.shape != (T,):
            raise ValueError(f"stimulus must have shape ({T},), got {tuple(stim.shape)}")
    V = torch.zeros(T, taps + 1, dtype=torch.float64)
    V[:, 0] = 1.0
    for k in range(taps):
        V[k:, 1 + k] = stim[: T - k]
    return V


def glm_prior_precision(taps: int = _TAPS) -> Tensor:
    """The prior precision ``B (taps + 1, taps + 1)`` (float64) of the benchmark's smoothness prior."""
    D = torch.eye(taps, dtype=torch.float64) - torch.diag(torch.ones(taps - 1, dtype=torch.float64), -1)
    F = D @ D + torch.diag(torch.sqrt(torch.arange(taps, dtype=torch.float64) / taps))
    B = torch.zeros(taps + 1, taps + 1, dtype=torch.float64)
    B[0, 0] = 0.5
    B[1:, 1:] = F.T @ F
    return B


@register("bernoulli_glm")
class BernoulliGLM(SBIBMObservations, MCMCReferenceTask):
    """Bernoulli GLM with sufficient-statistic summaries (10-d ``x``).

    Arguments:
        chains, warmup, thin: settings of the reference slice sampler.
        n_proposals: prior draws resampled (SIR) into the initial chains.
        strict: a reference failing its convergence checks raises (else warns).
        observations: ``"sbibm"`` (the benchmark's stimulus, stored observations and true parameters)
            or ``"telescope"`` (this library's own stimulus and draws).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's slice sampler; the default otherwise).

    Example:
        >>> task = BernoulliGLM()
        >>> task.simulator(task.prior.sample((3,)), seed=0).shape
        torch.Size([3, 10])
    """

    dim_theta = _TAPS + 1
    dim_x = _TAPS + 1
    raw = False
    sbibm_name = "bernoulli_glm"
    sbibm_observation_file = "observation.csv"

    def __init__(self, chains: int = 200, warmup: int = 200, thin: int = 3, n_proposals: int = 20_000,
                 strict: bool = True, observations: str = "sbibm", reference: str | None = None):
        self._init_observations(observations, reference)
        sbibm = self.observation_set == "sbibm"
        self.design = glm_design(stimulus=sbibm_stimulus()) if sbibm else glm_design()
        cov = torch.linalg.inv(glm_prior_precision())
        self.prior = Gaussian(torch.zeros(self.dim_theta), (0.5 * (cov + cov.T)).float())
        stimulus = {"stimulus": "sbibm"} if sbibm else {"stimulus_seed": _STIMULUS_SEED}
        self.simulator = Simulator(self._generate, noise=self._noise, name=self.name,
                                   config={"T": _T, "taps": _TAPS, **stimulus, "raw": self.raw})
        self._init_mcmc(chains, warmup, thin, n_proposals, strict)

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        """``u (n, 100)`` uniform on ``[0, 1)``: bin ``t`` spikes when ``u_t < sigmoid(v_t . theta)``."""
        return torch.rand(n, _T, generator=generator)

    def spikes(self, theta: Tensor, u: Tensor) -> Tensor:
        """Spike trains ``(n, 100)`` of ``theta (n, 10)`` for noise ``u (n, 100)``."""
        psi = theta.double() @ self.design.T
        return (u.double() < torch.sigmoid(psi)).to(theta.dtype)

    def _generate(self, theta: Tensor, u: Tensor) -> Tensor:
        y = self.spikes(theta, u)
        return y if self.raw else (y.double() @ self.design).to(theta.dtype)

    def _stats(self, x: Tensor) -> Tensor:
        return x @ self.design if self.raw else x

    def _ll64(self, theta: Tensor, x: Tensor) -> Tensor:
        psi = theta @ self.design.T  # (m, T)
        return theta @ self._stats(x) - torch.nn.functional.softplus(psi).sum(-1)

    def _tall_ll64(self, theta: Tensor, x_set: Tensor) -> Tensor:
        stats = (x_set @ self.design if self.raw else x_set).sum(0)
        return theta @ stats - x_set.shape[0] * torch.nn.functional.softplus(theta @ self.design.T).sum(-1)


@register("bernoulli_glm_raw")
class BernoulliGLMRaw(BernoulliGLM):
    """Bernoulli GLM with the raw spike train as data (100-d binary ``x``); same posterior as ``bernoulli_glm``."""

    dim_x = _T
    raw = True
    sbibm_observation_file = "observation_raw.csv"
