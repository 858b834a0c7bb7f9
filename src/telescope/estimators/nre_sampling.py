r"""NRE's posterior sampling: rejection from the prior, slice-sampling MCMC when the acceptance rate is too low.

The target is :math:`p(\theta) \exp \sum_j h_w(\theta, x_j)` for one observation or an iid set (tall data);
:meth:`telescope.estimators.NRE.sample` and :meth:`~telescope.estimators.NRE.sample_batched` document the
options and call these functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..samplers.convergence import keep_chains
from ..samplers.mcmc import mcmc_posterior, sir, slice_sample
from ..samplers.rejection import _LowAcceptance, rejection_sample
from ..simulation.simulators import seeded
from ..utils import check_count

__all__: list[str] = []


def sample(est, x_o, n: int, *, method: str, min_acceptance: float | None, chunk: int, chains: int, warmup: int,
           thin: int, seed: int | None, max_time: float, progress_bar: bool,
           return_chains: bool) -> Tensor | tuple[Tensor, Tensor]:
    """:meth:`NRE.sample <telescope.estimators.NRE.sample>` of the trained ratio estimator ``est``."""
    n = check_count("n", n)
    if method not in ("auto", "rejection", "mcmc"):
        raise ValueError(f"method must be 'auto', 'rejection' or 'mcmc', got {method!r}")
    if return_chains:
        if method == "rejection":
            raise ValueError("return_chains=True needs method='mcmc' (or 'auto'); rejection sampling has no chains")
        method = "mcmc"
    x_set = est._x_set(x_o)
    log_w = est._log_weight(x_set)
    if min_acceptance is None:
        min_acceptance = est._auto_min_acceptance(n, chains, warmup, thin)
    seed = seed if seed is not None else int(torch.randint(2**62, ()).item())
    with seeded(seed):
        if method != "mcmc":
            try:
                s, rate = rejection_sample(log_w, est.prior, n, 1, chunk=chunk, max_time=max_time,
                                           min_acceptance=min_acceptance if method == "auto" else 0.0,
                                           device=est.device)
                est.method, est.acceptance_rate = "rejection", rate
                return s[:, 0]
            except _LowAcceptance as e:
                est.acceptance_rate = e.rate
        est.method = "mcmc"
        prior = est.prior

        def potential(theta: Tensor) -> Tensor:
            lp = prior.log_prob(theta.cpu()).to(theta.device)
            return lp + log_w(theta).to(lp)

        s, ch = mcmc_posterior(potential, prior, n, chains=chains, warmup=warmup, thin=thin,
                               n_proposals=chunk, seed=seed, progress_bar=progress_bar, return_chains=True)
        return keep_chains(est, s, ch, return_chains, "NRE")


def sample_batched(est, x, n: int, *, method: str, min_acceptance: float | None, chunk: int, chains: int,
                   warmup: int, thin: int, seed: int | None, max_time: float) -> Tensor:
    """:meth:`NRE.sample_batched <telescope.estimators.NRE.sample_batched>` of the trained ratio estimator ``est``."""
    net = est._trained().eval()
    n = check_count("n", n)
    if method not in ("auto", "rejection", "mcmc", "sir"):
        raise ValueError(f"method must be 'auto', 'rejection', 'mcmc' or 'sir', got {method!r}")
    x = est._check_x(x).to(est.device)
    m, d = x.shape[0], est.dim_theta
    feats = est._features(x)
    if min_acceptance is None:
        min_acceptance = est._auto_min_acceptance(n, chains, warmup, thin)
    seed = seed if seed is not None else int(torch.randint(2**62, ()).item())
    g = torch.Generator().manual_seed(int(seed))
    with seeded(seed):
        if method in ("auto", "rejection"):
            try:
                s, rate = rejection_sample(lambda t, j: est._grid(t.to(est.device), feats[j.to(est.device)]),
                                           est.prior, n, m, chunk=chunk, max_time=max_time, subsets=True,
                                           min_acceptance=min_acceptance if method == "auto" else 0.0)
                est.method, est.acceptance_rate = "rejection", rate
                return s
            except _LowAcceptance as e:
                est.acceptance_rate = e.rate
        props = est.prior.sample((chunk,)).float().to(est.device)
    h = est._grid(props, feats)  # (chunk, m): log weights of prior draws towards each posterior
    if method == "sir":
        est.method = "sir"
        return torch.stack([sir(lambda t, _w=h[:, j]: _w, props, n, generator=g, chunk=chunk)
                            for j in range(m)], 1).cpu()
    est.method = "mcmc"
    init = torch.cat([sir(lambda t, _w=h[:, j]: _w, props, chains, generator=g, chunk=chunk)
                      for j in range(m)])
    feats_rep = feats.repeat_interleave(chains, 0)  # chains of observation j are contiguous

    def potential(theta: Tensor, idx: Tensor) -> Tensor:
        lp = est.prior.log_prob(theta.cpu()).to(theta.device)
        return lp + net(theta, feats_rep[idx])

    per_chain = -(-n // chains)
    s = slice_sample(potential, init, per_chain, warmup=warmup, thin=thin, generator=g, chain_index=True)
    s = s.reshape(per_chain, m, chains, d).permute(0, 2, 1, 3).reshape(per_chain * chains, m, d)
    return s[:n].cpu()
