"""Shared helper for tasks whose reference posterior is computed by MCMC.

Chains start from sampling-importance-resampling (SIR) of proposals (usually prior draws)
and are advanced by the vectorised coordinate-wise slice sampler of
:mod:`telescope.samplers.mcmc`.  Warm-up has two halves: after the first, the chains' mean
``mu`` and covariance ``L L^T`` define an affine map ``theta = mu + L z`` and the second half
and the sampling run on ``z`` (the Jacobian is constant, so the target is unchanged).
Coordinate-wise slice sampling mixes far faster on the decorrelated ``z`` when the posterior
has strong linear correlations.  Split-R-hat over all chains is returned with the samples and
a ``RuntimeWarning`` is raised when it exceeds :data:`RHAT_WARN`.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

from ..samplers.mcmc import rhat, sir, slice_sample

__all__ = ["mcmc_reference", "RHAT_WARN"]

RHAT_WARN = 1.05


@torch.no_grad()
def mcmc_reference(log_prob: Callable[[Tensor], Tensor], proposals: Tensor, n: int, *, seed: int,
                   chains: int = 1000, warmup: int = 200, thin: int = 2, whiten: bool = True,
                   proposal_log_prob: Tensor | None = None, name: str = "task") -> tuple[Tensor, Tensor]:
    """``n`` samples ``(n, d)`` of the density ``exp(log_prob)`` and their split-R-hat ``(d,)``.

    Arguments:
        log_prob: ``(m, d) -> (m,)`` unnormalised log posterior (prior included, ``-inf`` outside).
        proposals: ``(p, d)`` draws resampled by SIR into the initial chains.
        proposal_log_prob: ``(p,)`` log density of the proposals (up to a constant); omit it when
            the proposals are uniform on the target's support (e.g. draws from a uniform prior).
        n: samples returned, pooled over chains and shuffled.
        seed: seed of everything random here.
        chains, warmup, thin: slice-sampler settings (``warmup`` sweeps are discarded).
        whiten: sample the second half of warm-up and the kept sweeps in whitened coordinates.
    """
    g = torch.Generator().manual_seed(int(seed))
    proposals = proposals.double()
    chains = max(2, min(chains, n))
    init = sir(log_prob, proposals, chains, proposal_log_prob=proposal_log_prob, generator=g)
    per_chain = max(2, -(-n // chains))
    if whiten and warmup >= 2:
        first = warmup // 2
        x = slice_sample(log_prob, init, 1, warmup=first - 1, generator=g)[-1]  # (chains, d)
        mu = x.mean(0)
        cov = torch.cov(x.T) + 1e-9 * torch.eye(x.shape[1], dtype=x.dtype)
        try:
            chol = torch.linalg.cholesky(cov)
        except RuntimeError:  # degenerate spread: fall back to scaling only
            chol = torch.diag(cov.diagonal().clamp_min(1e-12).sqrt())
        z0 = torch.linalg.solve_triangular(chol, (x - mu).T, upper=False).T

        def log_prob_z(z: Tensor) -> Tensor:
            return log_prob(mu + z @ chol.T)

        s = slice_sample(log_prob_z, z0, per_chain, warmup=warmup - first, thin=thin, generator=g)
        s = mu + s @ chol.T
    else:
        s = slice_sample(log_prob, init, per_chain, warmup=warmup, thin=thin, generator=g)  # (per_chain, chains, d)
    r = rhat(s)
    if not torch.isfinite(r).all() or r.max() > RHAT_WARN:
        warnings.warn(f"{name} reference MCMC may not have converged: split-R-hat = "
                      f"{[round(v, 3) for v in r.tolist()]} (> {RHAT_WARN}); increase warm-up or thinning",
                      RuntimeWarning, stacklevel=3)
    flat = s.reshape(-1, s.shape[-1])
    return flat[torch.randperm(flat.shape[0], generator=g)[:n]], r
