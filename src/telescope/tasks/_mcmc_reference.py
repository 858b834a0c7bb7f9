"""Shared helper for tasks whose reference posterior is computed by MCMC.

Chains start from sampling-importance-resampling (SIR, :func:`telescope.samplers.mcmc.sir`) of
proposals (usually prior draws), so that every mode gets chains in proportion to its mass.
Two vectorised kernels advance all chains at once:

* ``"slice"`` — the coordinate-wise slice sampler of :mod:`telescope.samplers.mcmc`;
* ``"rwm"`` — random-walk Metropolis with a Gaussian proposal ``N(theta, s^2 L L^T)``: one
  log-density evaluation per iteration for all chains, which is what an expensive likelihood
  (e.g. the g-and-k density by numerical inversion) needs.  The scale ``s`` is adapted during
  warm-up towards an acceptance rate of 0.3 and is then frozen.

Warm-up has two halves.  After the first, the chains' mean ``mu`` and covariance ``L L^T`` are
estimated; the slice kernel then samples ``z`` with ``theta = mu + L z`` (a constant Jacobian,
so the target is unchanged) and the RWM kernel uses ``L`` for its proposal.  Both mix far faster
on posteriors with strong linear correlations.  Split-R-hat over all chains is returned with the
samples and a ``RuntimeWarning`` is raised when it exceeds :data:`RHAT_WARN`.

Where no kernel mixes well in the time available (posteriors concentrated on thin curved sheets
with singular densities, as for the non-monotone g-and-k), :func:`mixture_importance_resampling`
turns short chains into exact-in-the-limit samples: a Gaussian mixture fitted to the chains is
refined by population Monte Carlo and used as an importance proposal, with its effective sample
size as the diagnostic.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..samplers.mcmc import _whitening, rhat, sir, slice_sample, whitened_slice

__all__ = ["mcmc_reference", "random_walk_metropolis", "mixture_importance_resampling", "RHAT_WARN"]

RHAT_WARN = 1.05
#: Draws per chain that split-R-hat is computed on at least (the warm-up tail makes up the difference).
RHAT_DRAWS = 20

LogProb = Callable[[Tensor], Tensor]


def _eval(log_prob: LogProb, x: Tensor) -> Tensor:
    lp = log_prob(x)
    return torch.where(torch.isnan(lp), torch.full_like(lp, -float("inf")), lp)


@torch.no_grad()
def random_walk_metropolis(log_prob: LogProb, init: Tensor, n_samples: int, *, warmup: int = 200,
                           thin: int = 10, chol: Tensor | None = None, target_accept: float = 0.3,
                           generator: torch.Generator | None = None, keep_warmup: int = 0) -> Tensor:
    """Random-walk Metropolis on all chains in parallel.

    Arguments:
        log_prob: ``(m, d) -> (m,)`` unnormalised log density (``-inf`` outside the support).
        init: ``(chains, d)`` starting points with finite log density.
        n_samples: samples kept per chain after ``warmup`` iterations, one every ``thin``.
        chol: ``(d, d)`` proposal shape ``L`` (default: from the spread of ``init``; re-estimated
            from the chains halfway through warm-up).
        target_accept: acceptance rate the scale is adapted to during warm-up.
        keep_warmup: also return the last ``keep_warmup`` warm-up states of the second half of the warm-up
            (one every ``thin``), before the samples, for diagnostics; the samples do not change.

    Returns:
        ``(keep + n_samples, chains, d)`` samples.
    """
    x = init.clone()
    c, d = x.shape
    lp = _eval(log_prob, x)
    if not torch.isfinite(lp).all():
        raise ValueError(f"{int((~torch.isfinite(lp)).sum())} of {c} initial chains have -inf log density")
    if chol is None:
        chol = _whitening(x)[1]
    log_s = math.log(2.38 / math.sqrt(d))
    out = []
    tail_from = warmup - min(max(0, int(keep_warmup)), (warmup - warmup // 2 - 1) // thin) * thin
    for it in range(warmup + n_samples * thin):
        eps = torch.randn(c, d, generator=generator, dtype=x.dtype)
        prop = x + math.exp(log_s) * eps @ chol.T
        lp_p = _eval(log_prob, prop)
        acc = torch.log(torch.rand(c, generator=generator, dtype=x.dtype)) < lp_p - lp
        x = torch.where(acc[:, None], prop, x)
        lp = torch.where(acc, lp_p, lp)
        if it < warmup:
            log_s += (acc.double().mean().item() - target_accept) / math.sqrt(1 + it / 10)
            if it == warmup // 2:
                chol = _whitening(x)[1]
        if it >= tail_from and (it - tail_from) % thin == thin - 1:
            out.append(x.clone())
    return torch.stack(out)


@torch.no_grad()
def mcmc_reference(log_prob: LogProb, proposals: Tensor, n: int, *, seed: int, chains: int = 1000,
                   warmup: int = 200, thin: int = 2, kernel: str = "slice",
                   proposal_log_prob: Tensor | None = None, warn: bool = True,
                   name: str = "task") -> tuple[Tensor, Tensor]:
    """``n`` samples ``(n, d)`` of the density ``exp(log_prob)`` and their split-R-hat ``(d,)``.

    Arguments:
        log_prob: ``(m, d) -> (m,)`` unnormalised log posterior (prior included, ``-inf`` outside).
        proposals: ``(p, d)`` draws resampled by SIR into the initial chains.
        n: samples returned, pooled over chains and shuffled.
        seed: seed of everything random here.
        chains, warmup, thin: sampler settings (``warmup`` iterations or sweeps are discarded).
        kernel: ``"slice"`` or ``"rwm"`` (see the module docstring).
        proposal_log_prob: ``(p,)`` log density of the proposals (up to a constant); omit it when
            the proposals are uniform on the target's support (e.g. draws from a uniform prior).
        warn: warn when split-R-hat exceeds :data:`RHAT_WARN`.
    """
    if kernel not in ("slice", "rwm"):
        raise ValueError(f"kernel must be 'slice' or 'rwm', got {kernel!r}")
    g = torch.Generator().manual_seed(int(seed))
    proposals = proposals.double()
    chains = max(2, min(chains, n))
    init = sir(log_prob, proposals, chains, proposal_log_prob=proposal_log_prob, generator=g)
    per_chain = max(2, -(-n // chains))
    # split-R-hat needs draws per chain: with many chains and few kept draws each (1000 chains, n <= 3000),
    # the diagnostic also uses the tail of the warm-up (after whitening); the samples returned do not change
    keep = max(0, RHAT_DRAWS - per_chain)
    if kernel == "rwm":
        s = random_walk_metropolis(log_prob, init, per_chain, warmup=warmup, thin=thin, generator=g, keep_warmup=keep)
    elif warmup >= 2:
        s = whitened_slice(log_prob, init, per_chain, warmup, thin, g, keep_warmup=keep)
    else:
        s = slice_sample(log_prob, init, per_chain, warmup=warmup, thin=thin, generator=g, keep_warmup=keep)
    r = rhat(s)
    s = s[s.shape[0] - per_chain :]
    if warn and not torch.isfinite(r).all():
        warnings.warn(f"{name} reference MCMC: split-R-hat could not be computed ({r.tolist()}) from "
                      f"{s.shape[0]} draws per chain; the convergence of these samples is unchecked",
                      RuntimeWarning, stacklevel=3)
    elif warn and r.max() > RHAT_WARN:
        warnings.warn(f"{name} reference MCMC may not have converged: split-R-hat = "
                      f"{[round(v, 3) for v in r.tolist()]} (> {RHAT_WARN}); increase warm-up or thinning",
                      RuntimeWarning, stacklevel=3)
    flat = s.reshape(-1, s.shape[-1])
    return flat[torch.randperm(flat.shape[0], generator=g)[:n]], r


def _fit_mixture(points: Tensor, components: int, inflate: float, seed: int):
    """Gaussian mixture (log-weights, means, inverse Cholesky factors, log-determinants) fitted by EM."""
    from sklearn.mixture import GaussianMixture

    try:
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    except ImportError:  # pragma: no cover
        threadpool_limits = contextlib.nullcontext

    k = max(1, min(components, points.shape[0] // (10 * points.shape[1])))
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-9, random_state=seed % (2**31), max_iter=300)
    with threadpool_limits(1):  # BLAS threads only oversubscribe the cores for such small fits
        gm.fit(points.numpy())
    w = torch.as_tensor(gm.weights_, dtype=torch.float64)
    mu = torch.as_tensor(gm.means_, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.as_tensor(gm.covariances_, dtype=torch.float64) * inflate)
    return w, mu, chol


def _mixture_log_prob(x: Tensor, w: Tensor, mu: Tensor, chol: Tensor) -> Tensor:
    eye = torch.eye(mu.shape[1], dtype=mu.dtype).expand_as(chol)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (k, d, d)
    logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    sol = torch.einsum("kij,pkj->pki", inv, x[:, None, :] - mu[None])
    comp = -0.5 * (sol**2).sum(-1) - logdet - 0.5 * mu.shape[1] * math.log(2 * math.pi)
    return torch.logsumexp(comp + torch.log(w), -1)


@torch.no_grad()
def mixture_importance_resampling(log_prob: LogProb, population: Tensor, n: int, *, prior, seed: int,
                                  n_proposals: int = 100_000, max_proposals: int = 1_000_000,
                                  rounds: int = 2, round_size: int = 50_000, components: int = 30,
                                  inflate: float = 1.3, defensive: float = 0.02, min_ess: float = 2.0,
                                  chunk: int = 20_000,
                                  name: str = "task") -> tuple[Tensor, dict]:
    """Posterior samples by adaptive importance resampling (population Monte Carlo).

    A Gaussian mixture is fitted to ``population`` (e.g. MCMC chains, which locate the posterior
    but may mix slowly); its covariances are inflated by ``inflate`` and a ``defensive`` share of
    the prior is added, ``q = (1 - defensive) GMM + defensive * prior``, which keeps the weights
    ``p / q`` bounded wherever the mixture is too narrow.  For ``rounds`` rounds, ``round_size``
    draws of ``q`` are weighted and the mixture is refitted to a weighted resample of them.  Then
    draws of the final ``q`` are added, ``n_proposals`` at a time up to ``max_proposals``, until
    their effective sample size reaches ``min_ess * n`` (else a ``RuntimeWarning``), and ``n`` of
    them are resampled with replacement.  The weights are truncated at ``sqrt(N)`` times their mean
    (truncated importance sampling, Ionides 2008) against the heavy tails of singular targets;
    the result is exact as the number ``N`` of proposals grows.

    Returns:
        samples ``(n, d)`` and diagnostics ``{"ess", "n_proposals", "unique_fraction", "max_weight"}``.
    """
    g = torch.Generator().manual_seed(int(seed))
    dtype = prior.sample((1,)).dtype

    def draw(mix, size):
        w, mu, chol = mix
        n_prior = int(torch.binomial(torch.tensor(float(size)), torch.tensor(defensive), generator=g).item())
        comp = torch.multinomial(w, size - n_prior, replacement=True, generator=g)
        eps = torch.randn(size - n_prior, mu.shape[1], generator=g, dtype=torch.float64)
        x_mix = mu[comp] + (chol[comp] @ eps.unsqueeze(-1)).squeeze(-1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g).item()))
            x_prior = prior.sample((n_prior,)).double()
        x = torch.cat([x_mix, x_prior])
        lp_prior = prior.log_prob(x.to(dtype)).double()
        log_q = torch.logaddexp(math.log1p(-defensive) + _mixture_log_prob(x, w, mu, chol),
                                math.log(defensive) + lp_prior)
        lp = torch.full((size,), -float("inf"), dtype=torch.float64)
        ok = torch.isfinite(lp_prior)
        if ok.any():
            lp[ok] = _eval(log_prob, x[ok])
        return x, lp - log_q

    def batch(mix, size):
        parts = [draw(mix, c) for c in [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def ess_of(log_w):
        wn = torch.softmax(log_w, 0)
        return float(1 / (wn**2).sum()), wn

    points = population.double()
    for r in range(rounds):
        mix = _fit_mixture(points, components, inflate, seed + r)
        x, log_w = batch(mix, round_size)
        if not torch.isfinite(log_w).any():
            raise RuntimeError(f"{name}: no importance proposal has a finite posterior density")
        _, wn = ess_of(log_w)
        points = x[torch.multinomial(wn, min(10_000, x.shape[0]), replacement=True, generator=g)]
    mix = _fit_mixture(points, components, inflate, seed + rounds)
    xs, lws, total = [], [], 0
    while True:
        x, log_w = batch(mix, min(n_proposals, max_proposals - total))
        xs.append(x), lws.append(log_w)
        total += x.shape[0]
        log_w = torch.cat(lws)
        # truncated importance sampling (Ionides, 2008): cap the weights at sqrt(N) times their mean,
        # which tames the heavy tail that singular densities give p / q at a vanishing bias
        cap = torch.logsumexp(log_w, 0) - math.log(total) + 0.5 * math.log(total)
        ess, wn = ess_of(torch.minimum(log_w, cap))
        if ess >= min_ess * n or total >= max_proposals:
            break
    if ess < min_ess * n:
        warnings.warn(f"{name} reference: importance sampling effective sample size {ess:.0f} < {min_ess} x {n} "
                      f"after {total} proposals; the samples contain many repeats", RuntimeWarning, stacklevel=3)
    idx = torch.multinomial(wn, n, replacement=True, generator=g)
    return torch.cat(xs)[idx], {"ess": ess, "n_proposals": total, "unique_fraction": idx.unique().numel() / n,
                                "max_weight": float(wn.max())}
