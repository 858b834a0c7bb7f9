r"""Simulation-based calibration: the rank of each coordinate of :math:`\theta^*_j` among ``n`` posterior
samples is uniform on ``{0, ..., n}`` when the posterior is exact.

References:
    Talts et al. (2018), "Validating Bayesian inference algorithms with simulation-based calibration",
    arXiv:1804.06788.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..calibration import check_ranks, lift_1d, posterior_draws
from ..utils import check_count
from ._checks import _as_tensor

__all__ = ["sbc", "sbc_ranks", "sbc_uniformity"]


def sbc(estimator: Any, theta: Any, x: Any, n_samples: int = 1000, *, batch_size: int = 256,
        seed: int | None = 0) -> Tensor:
    r"""Simulation-based-calibration ranks of an amortised estimator over ``m`` pairs :math:`(\theta^*_j, x_j)`.

    Arguments:
        estimator: an object with ``sample_batched(x, n) -> (n, m, d)`` (a telescope estimator), or an
            ``sbi`` posterior (wrapped by :func:`telescope.interop.sbi.from_sbi`).
        theta: ``(m, d)`` true parameters drawn from the prior; ``x``: ``(m, *event)`` their simulations.
        n_samples: posterior samples per observation.
        batch_size: observations per call to the estimator.
        seed: if not None, the torch random state is seeded for the sampling and restored after.

    Returns:
        ``(m, d)`` ranks as :func:`sbc_ranks`; test them with :func:`sbc_uniformity` (``n = n_samples``).
    """
    n_samples = check_count("n_samples", n_samples)
    batch_size = check_count("batch_size", batch_size)
    _, ranks = posterior_draws(estimator, theta, x, n_samples, batch_size, seed, lambda s, th: sbc_ranks(s.cpu(), th))
    return torch.cat(ranks)


def sbc_ranks(samples: Any, theta: Any) -> Tensor:
    r"""Simulation-based-calibration ranks.

    Arguments:
        samples: ``(n, m, d)`` posterior samples, ``n`` for each of ``m`` observations.
        theta: ``(m, d)`` true parameters of the observations.

    Returns:
        ``(m, d)`` int64 tensor: the number of samples below :math:`\theta^*` in each coordinate,
        in ``{0, ..., n}``; uniform when the posterior is exact.

    Example:
        >>> sbc_ranks(torch.tensor([[[0.0]], [[1.0]], [[2.0]]]), torch.tensor([[1.5]]))
        tensor([[2]])
    """
    s, th = lift_1d(_as_tensor("samples", samples), _as_tensor("theta", theta))
    if s.dim() != 3:
        raise ValueError(f"samples must have shape (n, m, d), got shape {tuple(s.shape)}")
    if th.dim() != 2:
        raise ValueError(f"theta must have shape (m, d), got shape {tuple(th.shape)}")
    if s.shape[0] == 0 or th.shape[0] == 0 or th.shape[1] == 0:
        raise ValueError(f"samples and theta must not be empty, got shapes {tuple(s.shape)} and {tuple(th.shape)}")
    if s.shape[1:] != th.shape:
        raise ValueError(f"samples of shape {tuple(s.shape)} do not match theta of shape {tuple(th.shape)}; "
                         f"expected samples (n, m, d) with theta (m, d)")
    if torch.isnan(s).any() or torch.isnan(th).any():
        raise ValueError("samples and theta must not contain NaN")
    return (s < th.unsqueeze(0)).sum(0)


def sbc_uniformity(ranks: Any, n: int, *, method: str = "ks", bins: int | None = None,
                   seed: int = 0) -> Tensor:
    r"""Per-dimension test that SBC ranks are uniform on ``{0, ..., n}``.

    Arguments:
        ranks: ``(m, d)`` ranks from :func:`sbc_ranks`.
        n: number of posterior samples the ranks were computed from.
        method: ``"ks"`` -- Kolmogorov-Smirnov test of the randomised PIT values
            ``(rank + V) / (n + 1)``, ``V ~ U(0, 1)``, which are exactly ``U(0, 1)`` under the
            null; ``"chi2"`` -- Pearson chi-square test on ``bins`` bins of ranks with exact
            expected counts.
        bins: bins for ``"chi2"``; default about ``m / 10`` (at least 2, at most ``n + 1``, 20).
        seed: seeds the jitter of ``"ks"``.

    Returns:
        ``(d,)`` float64 tensor of p-values; small values flag miscalibration.

    Example:
        >>> r = torch.arange(101).reshape(-1, 1)  # perfectly uniform ranks, n = 100
        >>> bool(sbc_uniformity(r, 100)[0] > 0.5)
        True
    """
    from scipy import stats

    n = check_count("n", n)
    r = check_ranks(_as_tensor("ranks", ranks), n, "n")
    m, d = r.shape
    out = []
    if method == "ks":
        g = torch.Generator().manual_seed(int(seed))
        u = (r + torch.rand(m, d, generator=g, dtype=torch.float64)) / (n + 1)
        for k in range(d):
            out.append(stats.kstest(u[:, k].numpy(), "uniform").pvalue)
    elif method == "chi2":
        if bins is None:
            bins = max(2, min(20, m // 10, n + 1))
        bins = check_count("bins", bins, 2)
        if bins > n + 1:
            raise ValueError(f"bins must be at most n + 1 = {n + 1} (the number of rank values), got {bins}")
        # bin b holds the rank values floor(b (n+1) / bins) ... floor((b+1)(n+1)/bins) - 1
        edges = (torch.arange(bins + 1, dtype=torch.float64) * (n + 1) / bins).floor()
        expected = (edges[1:] - edges[:-1]) / (n + 1) * m
        idx = torch.bucketize(r, edges[1:-1], right=True)
        for k in range(d):
            observed = torch.bincount(idx[:, k], minlength=bins).double()
            out.append(stats.chisquare(observed.numpy(), expected.numpy()).pvalue)
    else:
        raise ValueError(f"method must be 'ks' or 'chi2', got {method!r}")
    return torch.tensor(out, dtype=torch.float64)
