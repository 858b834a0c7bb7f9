r"""Calibration checks beyond HPD coverage: TARP, SBC with simultaneous ECDF bands, posterior predictive checks.

Part of :mod:`telescope.metrics` (re-exported there: ``ts.metrics.tarp`` and so on); the figures are in
:mod:`telescope.plots.calibration`.

**TARP** -- "Tests of Accuracy with Random Points" (Lemos, Coogan, Hezaveh & Perreault-Levasseur,
2023, "Sampling-based accuracy testing of posterior estimators for general inference", ICML,
arXiv:2302.03026).  For each pair :math:`(\theta^*_j, x_j)` with posterior samples
:math:`\theta_{ij} \sim q(\theta \mid x_j)`, ``i = 1..n``, draw a random reference point
:math:`\theta^r_j` and count the samples closer to it than the truth,

.. math:: f_j = \frac{1}{n} \sum_i \mathbb{1}\big[\lVert \theta_{ij} - \theta^r_j \rVert
          < \lVert \theta^*_j - \theta^r_j \rVert\big].

The expected coverage probability of the balls centred on :math:`\theta^r` is
:math:`\mathrm{ECP}(\alpha) = \frac{1}{m} \sum_j \mathbb{1}[f_j \le \alpha]`.  When
:math:`q = p(\theta \mid x)` the :math:`f_j` are uniform and the ECP curve is the diagonal for any
reference distribution (their Theorem 3); the converse needs references that depend on ``x`` or
cover the parameter space, which the default (uniform in the box around the standardised true
parameters) approximates.  Only samples are needed, no density: TARP applies to every estimator.
:func:`tarp` takes samples, :func:`tarp_coverage` an amortised estimator (an ``sbi`` posterior too).

**SBC with simultaneous ECDF bands** (Säilynoja, Bürkner & Vehtari, 2022, "Graphical test for
discrete uniformity and its applications in goodness-of-fit evaluation and multiple sample
comparison", Statistics and Computing 32:32, arXiv:2103.10522).  The ranks :math:`r_j \in \{0..L\}`
of :func:`telescope.metrics.sbc_ranks` are uniform for an exact posterior.  Their empirical CDF
at the rank boundaries :math:`z_i = c_i / (L + 1)` is :math:`F_m(z_i) = \frac{1}{m} \#\{j : r_j < c_i\}`,
and :math:`m F_m(z_i) \sim \mathrm{Bin}(m, z_i)` under uniformity.  A band that the whole ECDF stays
in with probability :math:`1 - a` (simultaneous, not pointwise) is made of binomial quantiles at a
pointwise level :math:`\gamma` chosen so that
:math:`P\big[\min_i 2 \min(F_{\mathrm{Bin}}(m F_m(z_i)),\, 1 - F_{\mathrm{Bin}}(m F_m(z_i) - 1)) \ge \gamma\big] = 1 - a`;
:math:`\gamma` is the :math:`a`-quantile of that minimum over simulated uniform rank sets (the
simulation variant of the paper, exact for discrete ranks because the counts between boundaries are
multinomial).  The same simulated minima give a simultaneous p-value per parameter
(:func:`sbc_ecdf_pvalues`).

**Posterior predictive check** (Gelman, Meng & Stern, 1996; Gelman et al., "Bayesian Data
Analysis", ch. 6): simulate :math:`x^{rep}_i \sim p(x \mid \theta_i)` from posterior draws
:math:`\theta_i` and compare with :math:`x_o`: two-sided marginal predictive p-values
:math:`2 \min(P[x^{rep}_k \le x_{o,k}], P[x^{rep}_k \ge x_{o,k}])` per coordinate and a joint one from
the Mahalanobis distance to the predictive mean (the fraction of replicates at least as far as
:math:`x_o`).  Small p-values flag an observation the fitted posterior cannot reproduce (a wrong
posterior, or a misspecified simulator).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["tarp", "tarp_coverage", "sbc_ecdf", "sbc_ecdf_bands", "sbc_ecdf_pvalues", "posterior_predictive_check"]


# ----------------------------------------------------------------------------------------------
# input checks (kept local: this module sits below telescope.metrics, which re-exports it)


def _tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}: {e}") from None


def _int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def lift_1d(samples: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """One parameter: ``theta (m,)`` is read as ``(m, 1)``, and then ``samples (n, m)`` as ``(n, m, 1)``
    (anything else is returned as it is, for the caller's shape checks)."""
    if theta.dim() == 1:
        theta = theta.unsqueeze(-1)
    if samples.dim() == 2 and theta.dim() == 2 and theta.shape[1] == 1:
        samples = samples.unsqueeze(-1)
    return samples, theta


def _alphas(alphas: Any) -> Tensor:
    if alphas is None:
        return torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    al = _tensor("alphas", alphas).reshape(-1)
    if al.numel() == 0 or torch.isnan(al).any() or (al < 0).any() or (al > 1).any():
        raise ValueError(f"alphas must be a non-empty array of levels in [0, 1], got shape {tuple(al.shape)}")
    return al


# ----------------------------------------------------------------------------------------------
# TARP


def tarp(samples: Any, theta: Any, *, references: Any = None, alphas: Any = None, normalize: bool = True,
         seed: int = 0, return_levels: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    r"""TARP expected coverage (Lemos et al., 2023) from posterior samples of ``m`` test pairs.

    Arguments:
        samples: ``(n, m, d)`` posterior samples, ``n`` for each of ``m`` observations.
        theta: ``(m, d)`` true parameters (drawn from the prior) of the observations.
        references: ``(m, d)`` reference points, one per pair; default: uniform in the box spanned
            by the (standardised) true parameters, drawn with ``seed``.
        alphas: credibility levels in ``[0, 1]``; default 101 points from 0 to 1.
        normalize: standardise every coordinate by the mean and sd of ``theta`` first, so that
            distances weigh the parameters alike (given ``references`` are standardised too).
        seed: seeds the default references.
        return_levels: also return the ``(m,)`` fractions :math:`f_j`.

    Returns:
        ``(alphas, ecp)`` float64 ``(k,)``: ``ecp[i]`` the fraction of pairs with :math:`f_j \le \alpha_i`
        (the diagonal when calibrated); and the :math:`f_j` if asked (uniform when calibrated).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.randn(300, 2, generator=g)
        >>> a, ecp = tarp(theta + torch.randn(400, 300, 2, generator=g), theta + torch.randn(300, 2, generator=g))
        >>> bool((ecp - a).abs().max() < 0.1)  # samples and truth from the same distribution: calibrated
        True
    """
    s, th = lift_1d(_tensor("samples", samples), _tensor("theta", theta))
    if s.dim() != 3 or th.dim() != 2 or s.shape[1:] != th.shape or s.shape[0] == 0 or th.shape[0] == 0:
        raise ValueError(f"samples must have shape (n, m, d) and theta (m, d) with the same m and d (n, m >= 1), "
                         f"got shapes {tuple(s.shape)} and {tuple(th.shape)}")
    if not torch.isfinite(th).all() or not torch.isfinite(s).all():
        raise ValueError("samples and theta must be finite (drop diverged samples first)")
    m, d = th.shape
    if normalize:
        mu, sd = th.mean(0), th.std(0) if m > 1 else torch.ones(d, dtype=th.dtype)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        th, s = (th - mu) / sd, (s - mu) / sd
    if references is None:
        # a mixed seed: the references must not replay the stream that drew theta (users reuse seed=0)
        g = torch.Generator().manual_seed((int(seed) * 6364136223846793005 + 1442695040888963407) % 2**63)
        lo, hi = th.min(0).values, th.max(0).values
        ref = lo + (hi - lo) * torch.rand(m, d, generator=g, dtype=torch.float64)
    else:
        ref = _tensor("references", references)
        if ref.dim() == 1 and d == 1:
            ref = ref.unsqueeze(-1)
        if ref.shape != (m, d) or not torch.isfinite(ref).all():
            raise ValueError(f"references must be a finite (m, d) = {(m, d)} array, got shape {tuple(ref.shape)}")
    d_samples = (s - ref).norm(dim=-1)  # (n, m)
    d_true = (th - ref).norm(dim=-1)  # (m,)
    f = (d_samples < d_true).double().mean(0)
    al = _alphas(alphas)
    ecp = (f[None, :] <= al[:, None] + 1e-12).double().mean(1)
    return (al, ecp, f) if return_levels else (al, ecp)


def check_pairs(theta: Any, x: Any, *, need_d: bool = False) -> tuple[Tensor, Tensor]:
    """``theta (m, d)`` and ``x (m, *event)`` as tensors (float32 unless given as tensors), or a ValueError;
    with ``need_d`` a ``theta`` with ``d = 0`` columns is refused too."""
    theta_t = theta if isinstance(theta, Tensor) else torch.as_tensor(np.asarray(theta), dtype=torch.float32)
    x_t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if theta_t.dim() != 2 or theta_t.shape[0] == 0 or (need_d and theta_t.shape[1] == 0):
        raise ValueError(f"theta must have shape (m, d) with {'m, d >= 1' if need_d else 'm >= 1'}, "
                         f"got shape {tuple(theta_t.shape)}")
    if x_t.dim() < 2 or x_t.shape[0] != theta_t.shape[0]:
        raise ValueError(f"x must have shape (m, *event) with m = {theta_t.shape[0]} rows like theta, "
                         f"got shape {tuple(x_t.shape)}")
    return theta_t, x_t


def batched_draws(estimator: Any, theta_t: Tensor, x_t: Tensor, n_samples: int, batch_size: int,
                  seed: int | None, fn) -> list:
    """``fn(samples, theta_batch, x_batch)`` for the draws ``samples = estimator.sample_batched(x_batch, n_samples)``
    ``(n_samples, b, d)`` of each batch of ``b`` pairs, in order, without gradients; with ``seed`` the torch
    random state is seeded for the sampling and restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    out = []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        for th, xb in zip(theta_t.split(batch_size), x_t.split(batch_size)):
            s = estimator.sample_batched(xb, n_samples)
            if tuple(s.shape) != (n_samples, th.shape[0], th.shape[1]):
                raise ValueError(f"estimator.sample_batched returned shape {tuple(s.shape)}, expected "
                                 f"(n_samples, m, d) = {(n_samples, th.shape[0], th.shape[1])}")
            out.append(fn(s, th, xb))
    return out


def posterior_draws(estimator: Any, theta: Any, x: Any, n_samples: int, batch_size: int, seed: int | None,
                    fn) -> tuple[Tensor, list]:
    """``fn(samples, theta_batch)`` for the posterior draws ``(n_samples, b, d)`` of each batch of ``b``
    observations ``x`` (``theta (m, d)`` their true parameters); returns ``theta`` as a tensor and the list.

    ``estimator`` is a telescope estimator or an ``sbi`` posterior; with ``seed`` the torch random state is
    seeded for the sampling and restored after.
    """
    from .interop.sbi import as_telescope_posterior

    estimator = as_telescope_posterior(estimator)
    if not callable(getattr(estimator, "sample_batched", None)):
        raise TypeError(f"estimator must provide sample_batched(x, n) (a telescope estimator or an sbi posterior), "
                        f"got {type(estimator).__name__}")
    theta_t, x_t = check_pairs(theta, x)
    return theta_t, batched_draws(estimator, theta_t, x_t, n_samples, batch_size, seed, lambda s, th, xb: fn(s, th))


def tarp_coverage(estimator: Any, theta: Any, x: Any, n_samples: int = 1000, alphas: Any = None, *,
                  references: Any = None, normalize: bool = True, batch_size: int = 256, seed: int | None = 0,
                  return_levels: bool = False):
    r"""TARP expected coverage of an amortised estimator over ``m`` pairs :math:`(\theta^*_j, x_j)`.

    Arguments:
        estimator: an object with ``sample_batched(x, n) -> (n, m, d)`` (every telescope estimator), or
            an ``sbi`` posterior (wrapped by :func:`telescope.interop.sbi.from_sbi`).
        theta: ``(m, d)`` true parameters drawn from the prior; ``x``: ``(m, *event)`` their simulations.
        n_samples: posterior samples per observation.
        alphas, references, normalize, return_levels: as for :func:`tarp`.
        batch_size: observations per call to the estimator.
        seed: if not None, seeds the sampling (the torch random state is restored after) and the references.

    Returns:
        ``(alphas, ecp)`` (and the ``(m,)`` levels if asked), as :func:`tarp`.
    """
    n_samples = _int("n_samples", n_samples)
    batch_size = _int("batch_size", batch_size)
    theta_t, parts = posterior_draws(estimator, theta, x, n_samples, batch_size, seed,
                                     lambda s, th: s.detach().cpu().double())
    return tarp(torch.cat(parts, 1), theta_t, references=references, alphas=alphas, normalize=normalize,
                seed=0 if seed is None else int(seed), return_levels=return_levels)


# ----------------------------------------------------------------------------------------------
# SBC: ECDF with simultaneous bands


def check_ranks(r: Tensor, n: int, name: str) -> Tensor:
    """SBC ranks ``r (m, d)`` (``(m,)`` read as ``(m, 1)``) that are integers in ``[0, n]``, or a ValueError;
    ``name`` is the argument that holds ``n``."""
    if r.dim() == 1:
        r = r.unsqueeze(-1)
    if r.dim() != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise ValueError(f"ranks must have shape (m, d) with m, d >= 1, got shape {tuple(r.shape)}")
    if (r < 0).any() or (r > n).any() or (r != r.round()).any():
        raise ValueError(f"ranks must be integers in [0, {name}] = [0, {n}], got values in "
                         f"[{float(r.min())}, {float(r.max())}]")
    return r


def _ranks(ranks: Any, n_samples: int) -> Tensor:
    n_samples = _int("n_samples", n_samples)
    return check_ranks(_tensor("ranks", ranks), n_samples, "n_samples")


def _boundaries(n_samples: int, points: int | None) -> np.ndarray:
    """Rank boundaries ``c_i`` in ``1..L`` (``L = n_samples``): the ECDF is evaluated at ``z_i = c_i / (L + 1)``."""
    L1 = n_samples + 1
    k = min(L1, 100) if points is None else _int("points", points, 2)
    c = np.unique(np.round(np.arange(1, k) * L1 / k).astype(np.int64))
    return c[(c > 0) & (c < L1)]


def sbc_ecdf(ranks: Any, n_samples: int, *, points: int | None = None) -> tuple[Tensor, Tensor]:
    r"""Empirical CDF of SBC ranks at the rank boundaries.

    Arguments:
        ranks: ``(m, d)`` integer ranks in ``{0, ..., n_samples}`` (:func:`telescope.metrics.sbc_ranks`).
        n_samples: posterior samples per observation behind the ranks (``L``).
        points: evaluation points (about ``points - 1`` interior boundaries); default ``min(L + 1, 100)``.

    Returns:
        ``z`` ``(k,)`` in ``(0, 1)`` and ``ecdf`` ``(k, d)``: the fraction of ranks below ``z (L + 1)``.
        Uniform ranks give ``ecdf ~ z``.

    Example:
        >>> z, F = sbc_ecdf(torch.arange(10).reshape(-1, 1), 9, points=5)
        >>> z.tolist(), F[:, 0].tolist()
        ([0.2, 0.4, 0.6, 0.8], [0.2, 0.4, 0.6, 0.8])
    """
    r = _ranks(ranks, n_samples)
    c = _boundaries(n_samples, points)
    z = torch.as_tensor(c / (n_samples + 1), dtype=torch.float64)
    F = (r[None, :, :] < torch.as_tensor(c, dtype=torch.float64)[:, None, None]).double().mean(1)
    return z, F


def _min_pointwise_p(counts_below: np.ndarray, m: int, z: np.ndarray) -> np.ndarray:
    """``min_i 2 min(Bin_cdf(C_i), 1 - Bin_cdf(C_i - 1))`` over the last axis (``C (..., k)``)."""
    from scipy.stats import binom

    lower = binom.cdf(counts_below, m, z)
    upper = binom.sf(counts_below - 1, m, z)
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper)).min(-1)


def _null_min_p(m: int, n_samples: int, c: np.ndarray, n_sim: int, seed: int) -> np.ndarray:
    """The minimum pointwise p-value of ``n_sim`` uniform rank sets (multinomial counts between boundaries)."""
    L1 = n_samples + 1
    edges = np.concatenate([[0], c, [L1]])
    probs = np.diff(edges) / L1
    rng = np.random.default_rng(int(seed))
    counts = rng.multinomial(m, probs, size=n_sim)  # (n_sim, k + 1)
    below = np.cumsum(counts, axis=1)[:, :-1]  # ranks < c_i
    return _min_pointwise_p(below, m, c / L1)


def sbc_ecdf_bands(m: int, n_samples: int, *, confidence: float = 0.95, points: int | None = None,
                   n_sim: int = 5000, seed: int = 0) -> dict:
    r"""Simultaneous band for the ECDF of ``m`` uniform SBC ranks (Säilynoja et al., 2022).

    Arguments:
        m: number of SBC pairs (ranks per parameter).
        n_samples: posterior samples per pair (ranks in ``{0..n_samples}``).
        confidence: probability that the whole ECDF of uniform ranks stays inside the band.
        points: as for :func:`sbc_ecdf`.
        n_sim: simulated uniform rank sets used to set the pointwise level ``gamma``.
        seed: seeds the simulation.

    Returns:
        ``{"z": (k,), "lower": (k,), "upper": (k,), "gamma": float}``: the band in ECDF units at the
        evaluation points of :func:`sbc_ecdf` (subtract ``z`` for the ECDF-difference plot).

    Example:
        >>> band = sbc_ecdf_bands(200, 99, points=20, n_sim=2000)
        >>> bool((band["lower"] < band["z"]).all() and (band["z"] < band["upper"]).all())
        True
    """
    from scipy.stats import binom

    m = _int("m", m)
    n_samples = _int("n_samples", n_samples)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    n_sim = _int("n_sim", n_sim, 100)
    c = _boundaries(n_samples, points)
    z = c / (n_samples + 1)
    gamma = float(np.quantile(_null_min_p(m, n_samples, c, n_sim, seed), 1 - confidence))
    lo = binom.ppf(gamma / 2, m, z) / m
    hi = binom.ppf(1 - gamma / 2, m, z) / m
    return {"z": torch.as_tensor(z), "lower": torch.as_tensor(lo), "upper": torch.as_tensor(hi), "gamma": gamma}


def sbc_ecdf_pvalues(ranks: Any, n_samples: int, *, points: int | None = None, n_sim: int = 5000,
                     seed: int = 0) -> Tensor:
    r"""Simultaneous ECDF test of SBC ranks, one p-value per parameter.

    The statistic is the smallest pointwise two-sided binomial p-value of the ECDF over the
    evaluation points; its null distribution is simulated from uniform ranks (as the band of
    :func:`sbc_ecdf_bands`: the ECDF leaves the band of confidence ``1 - a`` exactly when this p-value is
    below about ``a``).

    Arguments:
        ranks: ``(m, d)`` integer ranks in ``{0..n_samples}``.
        n_samples: posterior samples per pair.
        points, n_sim, seed: as for :func:`sbc_ecdf_bands`.

    Returns:
        ``(d,)`` float64 p-values (resolution ``1 / n_sim``); small values flag miscalibration.
    """
    r = _ranks(ranks, n_samples)
    n_sim = _int("n_sim", n_sim, 100)
    m = r.shape[0]
    c = _boundaries(n_samples, points)
    below = (r[None, :, :] < torch.as_tensor(c, dtype=torch.float64)[:, None, None]).sum(1).numpy().T  # (d, k)
    stat = _min_pointwise_p(below, m, c / (n_samples + 1))  # (d,)
    null = np.sort(_null_min_p(m, n_samples, c, n_sim, seed))
    # p-value: P_null[min p <= observed], with the observed set counted among the simulations
    p = (np.searchsorted(null, stat, side="right") + 1) / (n_sim + 1)
    return torch.as_tensor(np.minimum(p, 1.0), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# posterior predictive check


def _accepts_seed(simulator) -> bool:
    try:
        return "seed" in inspect.signature(simulator).parameters
    except (TypeError, ValueError):
        return False


def posterior_predictive_check(simulator: Any, samples: Any, x_o: Any, *, seed: int = 0,
                               batch_size: int = 10_000) -> dict:
    r"""Simulate from posterior draws and compare the replicates with the observation.

    Arguments:
        simulator: a :class:`telescope.Simulator` (called with ``seed=``) or any callable
            ``theta (n, d) -> x (n, *event)`` (run under a seeded torch random state).
        samples: ``(n, d)`` posterior samples for ``x_o`` (e.g. ``est.sample(x_o, 1000)``).
        x_o: the observation, ``(*event)`` or ``(1, *event)``.
        seed: seeds the replicate simulations.
        batch_size: posterior draws simulated per call.

    Returns:
        A dict with ``x_rep (n', k)`` (the replicates flattened to ``k`` coordinates, failed
        simulations dropped), ``n_failed``, ``mean``/``sd`` ``(k,)`` of the replicates,
        ``z = (x_o - mean) / sd`` ``(k,)``, ``p_values`` ``(k,)`` (two-sided marginal predictive
        p-values, mid-ranks for ties) and ``p_value`` (joint: the fraction of replicates whose
        Mahalanobis distance to the mean is at least that of ``x_o``).

    Example:
        >>> sim = lambda th: th + torch.randn_like(th)
        >>> out = posterior_predictive_check(sim, torch.randn(2000, 2), torch.zeros(2))
        >>> bool(out["p_value"] > 0.5) and out["x_rep"].shape == (2000, 2)
        True
    """
    if not callable(simulator):
        raise TypeError(f"simulator must be callable theta (n, d) -> x (n, *event), got {type(simulator).__name__}")
    s = _tensor("samples", samples)
    if s.dim() == 1:
        s = s.unsqueeze(-1)
    if s.dim() != 2 or s.shape[0] < 2 or not torch.isfinite(s).all():
        raise ValueError(f"samples must be a finite (n, d) array with n >= 2 posterior draws, got shape "
                         f"{tuple(s.shape)}")
    batch_size = _int("batch_size", batch_size)
    xo = _tensor("x_o", x_o)
    if xo.dim() >= 2 and xo.shape[0] == 1:
        xo = xo[0]
    xo = xo.reshape(-1)
    seeded = _accepts_seed(simulator)
    parts = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        for b, th in enumerate(s.float().split(batch_size)):
            x = simulator(th, seed=int(seed) * 1_000_003 + b) if seeded else simulator(th)
            x = torch.as_tensor(x).detach().cpu().double().reshape(th.shape[0], -1)
            parts.append(x)
    x_rep = torch.cat(parts)
    if x_rep.shape[1] != xo.numel():
        raise ValueError(f"x_o has {xo.numel()} values (shape {tuple(_tensor('x_o', x_o).shape)}) but the simulator "
                         f"returns {x_rep.shape[1]} per draw; expected one observation of the simulator's output shape")
    ok = torch.isfinite(x_rep).all(-1)
    n_failed = int((~ok).sum())
    x_rep = x_rep[ok]
    if x_rep.shape[0] < 2:
        raise ValueError(f"fewer than 2 of {s.shape[0]} replicate simulations are finite; cannot compare with x_o")
    n = x_rep.shape[0]
    mean, sd = x_rep.mean(0), x_rep.std(0)
    z = (xo - mean) / sd
    below = (x_rep < xo).double().mean(0) + 0.5 * (x_rep == xo).double().mean(0)
    above = (x_rep > xo).double().mean(0) + 0.5 * (x_rep == xo).double().mean(0)
    p_marg = torch.clamp(2 * torch.minimum(below, above), max=1.0)
    # joint: Mahalanobis distance in the replicates' own metric (pseudo-inverse for constant coordinates)
    cov = torch.cov(x_rep.T).reshape(x_rep.shape[1], x_rep.shape[1])
    prec = torch.linalg.pinv(cov, hermitian=True)
    dev = x_rep - mean
    d_rep = ((dev @ prec) * dev).sum(-1)
    d_obs = float((xo - mean) @ prec @ (xo - mean))
    p_joint = float(((d_rep >= d_obs - 1e-9 * max(1.0, abs(d_obs))).sum() + 1) / (n + 1))
    return {"x_rep": x_rep, "n_failed": n_failed, "mean": mean, "sd": sd, "z": z, "p_values": p_marg,
            "p_value": p_joint, "x_o": xo, "d_obs": d_obs, "d_rep": d_rep, "chi2_dof": int(torch.linalg.matrix_rank(cov))}

