r"""Sample-based and calibration metrics for posterior estimates.

Two-sample distances (approximate posterior samples ``p`` against reference samples ``q``):

* :func:`c2st` -- the classifier two-sample test of the SBI benchmark (Lopez-Paz & Oquab, 2017;
  Lueckmann et al., 2021, "Benchmarking simulation-based inference").  An MLP with two hidden
  layers of ``10 d`` ReLU units is trained to tell ``p`` from ``q``; the score is its
  ``n_folds``-fold cross-validated accuracy.  0.5 means indistinguishable, 1.0 means disjoint.

* :func:`mmd` -- the unbiased estimate of the squared maximum mean discrepancy (Gretton et al.,
  2012) with a Gaussian kernel :math:`k(a, b) = \exp(-\|a - b\|^2 / 2\sigma^2)`,

  .. math:: \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)} \sum_{i \ne j} k(p_i, p_j)
            + \frac{1}{m(m-1)} \sum_{i \ne j} k(q_i, q_j) - \frac{2}{nm} \sum_{i, j} k(p_i, q_j),

  which is centred on the true value and can be slightly negative when ``p`` and ``q`` agree.

* :func:`mmd_to_point` -- the same unbiased squared MMD between samples ``p`` and the Dirac
  :math:`\delta_t` at a point ``t``: :math:`\frac{1}{n(n-1)}\sum_{i \ne j} k(p_i, p_j) - \frac{2}{n}
  \sum_i k(p_i, t) + 1`, jointly or per coordinate (``marginals=True``).  It measures how well
  posterior samples concentrate on a true parameter: Linhart et al. (2024), "Diffusion posterior
  sampling for simulation-based inference in tall data settings", Section 4.3 (Figs. 4 and 5) plot
  it for each 1-D marginal of the Jansen–Rit posterior.  0 for samples all at ``t``, rising as they
  spread or move away from ``t`` on the scale of the bandwidth.

* :func:`sliced_wasserstein` -- the sliced Wasserstein distance (Bonneel et al., 2015),

  .. math:: \mathrm{SW}_r(p, q) = \Big( \mathbb{E}_{u \sim \mathcal{U}(S^{d-1})}
            \big[ W_r^r(u_\# p, u_\# q) \big] \Big)^{1/r},

  estimated with random directions ``u`` and exact one-dimensional Wasserstein distances between
  the projected empirical measures (quantile functions, so sample sizes may differ).  The default
  ``order=2`` is the "sliced W2" of Linhart et al. (2024), "Diffusion posterior sampling for
  simulation-based inference in tall data settings", whose code uses POT's
  ``sliced_wasserstein_distance`` (p = 2).  For ``p = N(mu_1, S)`` and ``q = N(mu_2, S)`` every
  projection is a shift by ``u . delta`` (``delta = mu_1 - mu_2``), so
  ``SW_2 = |delta| / sqrt(d)`` and ``SW_1 = |delta| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))``.

Calibration of an amortised estimator over pairs :math:`(\theta^*_j, x_j) \sim p(\theta, x)`:

* :func:`nlpd` -- negative log posterior density of the true parameters,
  :math:`-\frac{1}{m} \sum_j \log q(\theta^*_j \mid x_j)` (lower is better; used by the
  multilevel-SBI paper, Hikida et al., 2025).

* :func:`hpd_levels`, :func:`expected_coverage`, :func:`coverage` -- expected coverage of
  highest-posterior-density (HPD) regions (Hermans et al., 2022, "A trust crisis in
  simulation-based inference?").  For each pair the level at which :math:`\theta^*` enters the
  HPD region is the posterior mass with higher density,
  :math:`\ell_j = P_{\theta \sim q(\cdot \mid x_j)}[q(\theta \mid x_j) > q(\theta^*_j \mid x_j)]`,
  estimated with posterior samples.  The empirical coverage at nominal level ``alpha`` is the
  fraction of pairs with :math:`\ell_j \le \alpha`.  A calibrated posterior lies on the diagonal,
  an overconfident one below it, a conservative one above.

* :func:`sbc_ranks`, :func:`sbc_uniformity` -- simulation-based calibration (Talts et al., 2018):
  the rank of each coordinate of :math:`\theta^*_j` among ``n`` posterior samples is uniform on
  ``{0, ..., n}`` when the posterior is exact.

* :func:`tarp`, :func:`tarp_coverage` (TARP, Lemos et al., 2023), :func:`sbc_ecdf`,
  :func:`sbc_ecdf_bands`, :func:`sbc_ecdf_pvalues` (SBC with simultaneous ECDF bands, Säilynoja et
  al., 2022) and :func:`posterior_predictive_check` -- defined in :mod:`telescope.calibration`,
  re-exported here; their figures are in :mod:`telescope.plots.calibration`.

Inputs may be torch tensors or numpy arrays; computations run in float64.
"""

from __future__ import annotations

from ..calibration import (
    posterior_predictive_check,
    sbc_ecdf,
    sbc_ecdf_bands,
    sbc_ecdf_pvalues,
    tarp,
    tarp_coverage,
)
from .classifier import c2st
from .hpd import BatchedEstimator, coverage, expected_coverage, hpd_levels, nlpd
from .kernel import mmd, mmd_to_point
from .ranks import sbc, sbc_ranks, sbc_uniformity
from .wasserstein import sliced_wasserstein

__all__ = [
    "c2st",
    "mmd",
    "mmd_to_point",
    "sliced_wasserstein",
    "nlpd",
    "hpd_levels",
    "expected_coverage",
    "coverage",
    "sbc",
    "sbc_ranks",
    "sbc_uniformity",
    "tarp",
    "tarp_coverage",
    "sbc_ecdf",
    "sbc_ecdf_bands",
    "sbc_ecdf_pvalues",
    "posterior_predictive_check",
    "BatchedEstimator",
]
