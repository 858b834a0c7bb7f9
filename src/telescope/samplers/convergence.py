r"""MCMC convergence diagnostics: rank-normalised split-R-hat, bulk and tail ESS.

The one implementation used everywhere in telescope (posterior sampling of NLE and NRE, the
reference posteriors of the benchmark tasks), following Vehtari, Gelman, Simpson, Carpenter &
Bürkner (2021), "Rank-normalization, folding, and localization: an improved R-hat for assessing
convergence of MCMC", Bayesian Analysis 16(2), arXiv:1903.08008.

Chains are given as ``(chains, draws, d)`` (ArviZ's layout, one chain per row).  Every chain is
split into halves (the middle draw of an odd length is dropped), giving ``M`` chains of ``N`` draws,
``S = M N`` in all.

* Rank normalisation: every draw is replaced by :math:`z = \Phi^{-1}((r - 3/8) / (S + 1/4))`, with
  ``r`` its rank among all ``S`` draws (ties get their average rank).
* Split-R-hat of draws :math:`\theta_{nm}`: with the within-chain variance ``W`` (the mean of the
  chains' sample variances) and the variance of the chain means ``B / N``,
  :math:`\hat R = \sqrt{((N - 1) W / N + B / N) / W}` (Gelman et al., BDA3, Sec. 11.4).
* :func:`rhat`: the larger of the split-R-hat of the rank-normalised draws (bulk) and of the
  rank-normalised folded draws :math:`|\theta - \mathrm{median}(\theta)|` (tails).  Values above 1.01
  mean the chains have not mixed.
* Effective sample size (Sec. 3.2 of the paper): the autocovariances :math:`c_{t,m}` of each chain
  (computed by FFT with the biased ``1 / N`` normalisation, as Stan and ArviZ do) are combined as
  :math:`\hat\rho_t = 1 - (W - \frac{1}{M}\sum_m c_{t,m}) / \widehat{\mathrm{var}}^+`, summed
  over Geyer's (1992) initial positive sequence of pair sums :math:`P_k = \hat\rho_{2k} + \hat\rho_{2k+1}`
  (lags below ``N - 2``) made monotone; the pair that ends the sequence adds its first term when positive
  (Stan's correction of the truncation): :math:`\hat\tau = -1 + 2 \sum_{k < K} P_k + \max(\hat\rho_{2K}, 0)`,
  and :math:`\mathrm{ESS} = S / \hat\tau`, capped at :math:`S \log_{10} S`.  Constant draws have ESS ``S``.
* :func:`ess_bulk`: the ESS of the rank-normalised draws; :func:`ess_tail`: the smaller ESS of the
  indicators :math:`I(\theta \le q_{0.05})` and :math:`I(\theta \le q_{0.95})`.  Vehtari et al.
  recommend R-hat below 1.01 and a bulk and tail ESS above 400 (100 per chain for 4 chains).

These follow the paper and the conventions of Stan and ArviZ, so ``arviz.rhat``, ``arviz.ess`` (and
``arviz.summary(..., round_to="none")``) give the same numbers on the same chains.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> chains = torch.randn(4, 500, 2, generator=g)     # independent draws: R-hat ~ 1, ESS ~ 2000
    >>> bool((rhat(chains) < 1.01).all()), bool((ess_bulk(chains) > 1500).all())
    (True, True)
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["rhat", "ess_bulk", "ess_tail", "ess", "split_rhat", "rank_normalize", "summary", "check_chains", "keep_chains"]


def _as_chains(chains, name: str = "chains") -> Tensor:
    """``(chains, draws)`` or ``(chains, draws, d)`` as float64 ``(chains, draws, d)``."""
    t = torch.as_tensor(chains).double() if not isinstance(chains, Tensor) else chains.detach().double().cpu()
    if t.dim() == 2:
        t = t.unsqueeze(-1)
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (chains, draws) or (chains, draws, d), got {tuple(t.shape)}")
    if t.shape[1] < 4:
        raise ValueError(f"{name} must hold at least 4 draws per chain for split diagnostics, got shape "
                         f"{tuple(t.shape)} (chains, draws, d)")
    return t


def _split(x: Tensor) -> Tensor:
    """``(c, n, d) -> (2c, n // 2, d)``: first halves, then second halves; an odd middle draw is dropped."""
    h = x.shape[1] // 2
    return torch.cat([x[:, :h], x[:, x.shape[1] - h:]], 0)


def _rank(x: Tensor) -> Tensor:
    """Average ranks (1-based) of all draws of ``x (c, n, d)``, per dimension."""
    c, n, d = x.shape
    flat = x.reshape(c * n, d)
    out = torch.empty_like(flat)
    for j in range(d):
        v = flat[:, j]
        order = torch.argsort(v, stable=True)
        sv = v[order]
        pos = torch.arange(1, v.numel() + 1, dtype=torch.float64)
        # average rank of each run of ties
        new = torch.ones_like(sv, dtype=torch.bool)
        new[1:] = sv[1:] != sv[:-1]
        group = torch.cumsum(new.long(), 0) - 1
        sums = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, pos)
        counts = torch.zeros_like(sums).index_add_(0, group, torch.ones_like(pos))
        r = torch.empty_like(v)
        r[order] = (sums / counts)[group]
        out[:, j] = r
    return out.reshape(c, n, d)


def rank_normalize(x: Tensor) -> Tensor:
    r"""Rank-normalised draws :math:`\Phi^{-1}((r - 3/8) / (S + 1/4))`, same shape ``(c, n, d)``."""
    s = x.shape[0] * x.shape[1]
    p = (_rank(x) - 0.375) / (s + 0.25)
    return math.sqrt(2.0) * torch.special.erfinv(2 * p - 1)


def _rhat_basic(x: Tensor) -> Tensor:
    """R-hat of ``x (M, N, d)`` taken as ``M`` chains (no further splitting): ``(d,)``."""
    n = x.shape[1]
    w = x.var(1, unbiased=True).mean(0)
    b_over_n = x.mean(1).var(0, unbiased=True)
    out = ((n - 1) / n * w + b_over_n) / w
    return torch.where(w > 0, out.sqrt(), torch.full_like(w, float("nan")))


def split_rhat(chains) -> Tensor:
    """Classic split-R-hat (BDA3, Sec. 11.4) of ``chains (c, n, d)``: ``(d,)``, without rank normalisation."""
    return _rhat_basic(_split(_as_chains(chains)))


def rhat(chains) -> Tensor:
    """Rank-normalised split-R-hat of ``chains (c, n, d)`` (Vehtari et al. 2021): ``(d,)`` float64."""
    x = _split(_as_chains(chains))
    bulk = _rhat_basic(rank_normalize(x))
    folded = (x - _median(x)).abs()
    tail = _rhat_basic(rank_normalize(folded))
    return torch.maximum(bulk, tail)


def _median(x: Tensor) -> Tensor:
    """Median per dimension over all draws (the mean of the two middle values for an even count)."""
    flat = x.reshape(-1, x.shape[-1])
    return torch.quantile(flat, 0.5, dim=0)


def _autocov(x: Tensor) -> Tensor:
    """Biased autocovariance of each chain, ``x (M, N, d) -> (M, N, d)``, by FFT."""
    n = x.shape[1]
    xc = x - x.mean(1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    f = torch.fft.rfft(xc, n=size, dim=1)
    ac = torch.fft.irfft(f * f.conj(), n=size, dim=1)[:, :n]
    return ac / n


def _ess(x: Tensor) -> Tensor:
    """ESS of ``x (M, N, d)`` taken as ``M`` chains: ``(d,)``."""
    m, n, d = x.shape
    s = m * n
    acov = _autocov(x).mean(0)  # (N, d): biased autocovariances averaged over chains
    w = acov[0] * n / (n - 1)  # W: the mean of the chains' sample variances
    var_plus = w * (n - 1) / n + (x.mean(1).var(0, unbiased=True) if m > 1 else 0.0)
    out = torch.empty(d, dtype=torch.float64)
    for j in range(d):
        col = x[..., j]
        if float(col.max() - col.min()) < 1e-15:  # constant draws: nothing to correlate
            out[j] = float(s)
            continue
        vp = float(var_plus[j])
        rho = (1.0 - (float(w[j]) - acov[:, j]) / vp).tolist()
        rho[0] = 1.0
        # pair sums P_k = rho_2k + rho_2k+1 while positive (Geyer's initial positive sequence), looking at lags
        # below N - 2; the pair that ends the sequence (or the last one looked at) adds only its first term,
        # when positive
        kept, t = [], 1
        even, odd = rho[0], rho[1]
        pairs = [(even, odd)]
        while t < n - 3 and even + odd > 0:
            even, odd = rho[t + 1], rho[t + 2]
            if even + odd >= 0:
                pairs.append((even, odd))
            t += 2
        kept = pairs[: (t - 1) // 2]
        total, prev = 0.0, math.inf
        for e, o in kept:  # made monotone: a pair sum never exceeds the one before
            p = min(e + o, prev)
            total, prev = total + p, p
        tau = -1.0 + 2.0 * total + (even if even > 0 else 0.0)
        if any(math.isnan(v) for v in rho):
            out[j] = float("nan")
            continue
        out[j] = s / max(tau, 1.0 / math.log10(s))
    return out


def ess_bulk(chains) -> Tensor:
    """Bulk effective sample size of ``chains (c, n, d)``: ESS of the rank-normalised split chains, ``(d,)``."""
    return _ess(rank_normalize(_split(_as_chains(chains))))


def ess_tail(chains, prob: float = 0.05) -> Tensor:
    """Tail ESS of ``chains (c, n, d)``: the smaller ESS of ``I(theta <= q_prob)`` and ``I(theta <= q_{1-prob})``."""
    x = _as_chains(chains)
    flat = x.reshape(-1, x.shape[-1])  # quantiles of all draws (with an odd middle draw), then split
    out = []
    for q in (prob, 1.0 - prob):
        qv = torch.quantile(flat, q, dim=0)
        out.append(_ess(_split((x <= qv).double())))
    return torch.minimum(out[0], out[1])


def ess(chains) -> Tensor:
    """Classic (not rank-normalised) ESS of the split chains ``(c, n, d)``: ``(d,)``, for means of smooth functions."""
    return _ess(_split(_as_chains(chains)))


def summary(chains) -> dict[str, Tensor]:
    """``{"rhat", "ess_bulk", "ess_tail"}`` of ``chains (c, n, d)``, each ``(d,)`` float64."""
    return {"rhat": rhat(chains), "ess_bulk": ess_bulk(chains), "ess_tail": ess_tail(chains)}


def check_chains(chains, *, rhat_max: float = 1.01, min_ess: float | None = None, warn: bool = True,
                 what: str = "MCMC", stacklevel: int = 2) -> dict[str, Tensor]:
    """:func:`summary` of ``chains (c, n, d)``, warning (``RuntimeWarning``) when a check fails.

    Fails when R-hat is at least ``rhat_max`` or not finite, or when the bulk or tail ESS is below
    ``min_ess`` (default 400, Vehtari et al.'s recommendation, or a quarter of the draws when there are
    fewer than 1600).  The returned dict has an extra ``"ok"`` entry (a bool) and ``"problems"`` (a list
    of strings).
    """
    x = _as_chains(chains)
    out = summary(x)
    min_ess = min(400.0, x.shape[0] * x.shape[1] / 4) if min_ess is None else float(min_ess)
    problems = []
    r = out["rhat"]
    if not torch.isfinite(r).all() or (r >= rhat_max).any():
        problems.append(f"R-hat {[round(v, 3) for v in r.tolist()]} (want < {rhat_max})")
    for key in ("ess_bulk", "ess_tail"):
        e = out[key]
        if not torch.isfinite(e).all() or (e < min_ess).any():
            problems.append(f"{key.replace('_', ' ')} {[round(v) for v in e.nan_to_num(0).tolist()]} "
                            f"(want >= {min_ess:.0f})")
    out["ok"], out["problems"] = not problems, problems
    if problems and warn:
        warnings.warn(f"{what} chains ({x.shape[0]} x {x.shape[1]} draws) may not have converged: "
                      f"{'; '.join(problems)}. Run longer chains (more warmup or thinning) before trusting the "
                      f"samples", RuntimeWarning, stacklevel=stacklevel)
    return out


def keep_chains(owner, samples: Tensor, chains: Tensor, return_chains: bool, what: str):
    """Store an MCMC run on ``owner`` and return what its ``sample`` returns.

    ``owner.chains`` gets the chains ``(chains, draws, d)`` and ``owner.mcmc_diagnostics`` their
    :func:`check_chains` summary (``None`` when the chains hold fewer than 4 draws each, too few for split
    diagnostics).  With ``return_chains`` the check warns when it fails and ``(samples, chains)`` is returned,
    else ``samples``.
    """
    chains = chains.cpu()
    owner.chains = chains
    owner.mcmc_diagnostics = None
    if chains.shape[1] >= 4:
        owner.mcmc_diagnostics = check_chains(chains, warn=return_chains, what=what, stacklevel=4)
    elif return_chains:
        warnings.warn(f"{what}: {chains.shape[0]} chains of {chains.shape[1]} draws are too short for R-hat and ESS "
                      f"(4 draws per chain at least): ask for more samples or fewer chains", RuntimeWarning,
                      stacklevel=3)
    return (samples.cpu(), chains) if return_chains else samples.cpu()
