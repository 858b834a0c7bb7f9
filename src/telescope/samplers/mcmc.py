"""MCMC from an unnormalised log density, vectorised over chains.

The sampler is coordinate-wise slice sampling (Neal, 2003: stepping out and shrinkage),
run for all chains at once: each sweep evaluates the log density on a ``(chains, d)``
batch, so a neural likelihood is called on large batches rather than one point at a time.

Chains start from sampling-importance-resampling (SIR) of prior draws: ``n_proposals``
points from the prior are weighted by the target and ``chains`` of them resampled.  This
places chains in every mode in proportion to its mass, which is what makes warm-up work on
multimodal posteriors such as two_moons.  Slice widths are set per dimension from the
spread of the initial chains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..utils import progress
from . import convergence

__all__ = ["slice_sample", "whitened_slice", "sir", "mcmc_posterior", "rhat"]

LogProb = Callable[[Tensor], Tensor]


def _eval(log_prob: LogProb, x: Tensor) -> Tensor:
    lp = log_prob(x)
    return torch.where(torch.isnan(lp), torch.full_like(lp, -float("inf")), lp)


@torch.no_grad()
def sir(log_prob: LogProb, proposals: Tensor, n: int, proposal_log_prob: Tensor | None = None,
        generator: torch.Generator | None = None, chunk: int = 4096) -> Tensor:
    """Sampling-importance-resampling: pick ``n`` rows of ``proposals`` with weights ``p / q``."""
    lw = torch.cat([_eval(log_prob, c) for c in proposals.split(chunk)])
    if proposal_log_prob is not None:
        lw = lw - proposal_log_prob
    if not torch.isfinite(lw).any():
        raise ValueError("no proposal has a finite log density; the target is -inf (or NaN) on all "
                         f"{proposals.shape[0]} prior draws — check the observation and the prior support")
    w = torch.softmax(lw.double(), 0)
    idx = torch.multinomial(w, n, replacement=True, generator=generator)
    return proposals[idx]


@torch.no_grad()
def _probe(log_prob: LogProb, x: Tensor, j: int, values: Tensor, idx: Tensor, chain_index: bool) -> Tensor:
    """Log density of the chains ``idx (m,)`` with coordinate ``j`` set to each of ``values (m, k)``: ``(m, k)``.

    All ``m * k`` points go to ``log_prob`` in one call: a neural density costs about as much for
    a few dozen rows as for one, so probing several points of a straggling chain at once saves calls.
    """
    m, k = values.shape
    rows = idx.repeat_interleave(k) if k > 1 else idx
    probe = x[rows].clone()
    probe[:, j] = values.reshape(-1)
    return _eval((lambda t: log_prob(t, rows)) if chain_index else log_prob, probe).reshape(m, k)


def _per_chain(active: int, budget: int = 64, most: int = 8) -> int:
    """Points probed per chain in one call when ``active`` chains are still working."""
    return 1 if active >= budget else min(most, max(1, budget // max(active, 1)))


def slice_sample(log_prob: LogProb, init: Tensor, n_samples: int, *, warmup: int = 50, thin: int = 1,
                 width: Tensor | float | None = None, max_steps: int = 20,
                 generator: torch.Generator | None = None, progress_bar: bool = False,
                 chain_index: bool = False, keep_warmup: int = 0) -> Tensor:
    """Coordinate-wise slice sampling of all chains in parallel.

    Each stepping-out and shrinking round evaluates the density only on the chains still
    working, so a sweep costs about ``chains * d * (evaluations per slice)`` rows, not
    ``chains * d * (max rounds)``.

    Arguments:
        log_prob: ``(m, d) -> (m,)`` unnormalised log density (``-inf`` outside the support).
        init: ``(chains, d)`` starting points with finite log density.
        n_samples: samples kept *per chain* (after warm-up and thinning).
        warmup: sweeps discarded at the start.
        thin: keep one sweep in ``thin``.
        width: initial slice width per dimension; default from the spread of ``init``.
        max_steps: cap on stepping-out steps each side.
        chain_index: ``log_prob`` depends on the chain (e.g. one observation per group of
            chains) and is called as ``log_prob(theta, idx)`` with the chains' indices ``idx``
            into ``init``; otherwise it must treat rows independently.
        keep_warmup: also return the last ``keep_warmup`` warm-up states (one every ``thin`` sweeps, at most
            ``warmup // thin``), before the samples: for convergence diagnostics of short chains.  The
            samples themselves do not change (recording draws no random numbers).

    Returns:
        ``(keep + n_samples, chains, d)`` samples, ``keep = min(keep_warmup, warmup // thin)``.
    """
    x = init.clone()
    c, d = x.shape
    dev = x.device
    if width is None:
        width = x.std(0) if c > 1 else torch.ones(d, device=dev)
        width = torch.where(torch.isfinite(width) & (width > 1e-6), width, torch.ones_like(width)) * 1.0
    width = torch.as_tensor(width, dtype=x.dtype, device=dev).expand(d).clone()
    lp = _probe(log_prob, x, 0, x[:, :1], torch.arange(c, device=dev), chain_index)[:, 0]
    if not torch.isfinite(lp).all():
        raise ValueError(f"{int((~torch.isfinite(lp)).sum())} of {c} initial chains have -inf log density")

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev, x.dtype)

    out = []
    total = warmup + n_samples * thin
    tail_from = warmup - min(max(0, int(keep_warmup)), warmup // thin) * thin
    with progress(total=total, desc="slice sampling", enabled=progress_bar) as bar:
        for it in range(total):
            for j in torch.randperm(d, generator=generator).tolist():
                log_y = lp + torch.log(rand(c))
                w = width[j]
                left = x[:, j] - w * rand(c)
                right = left + w
                _step_out(log_prob, x, j, left, right, log_y, w, max_steps, chain_index)
                x[:, j] = _shrink(log_prob, x, j, left, right, log_y, lp, rand, chain_index)
                if it < warmup:  # adapt the width to the typical slice size during warm-up
                    width[j] = 0.9 * width[j] + 0.1 * (right - left).mean().clamp_min(1e-6)
            if it >= tail_from and (it - tail_from) % thin == thin - 1:
                out.append(x.clone())
            bar.update(1)
    return torch.stack(out)


def _step_out(log_prob: LogProb, x: Tensor, j: int, left: Tensor, right: Tensor, log_y: Tensor, w: Tensor,
              max_steps: int, chain_index: bool) -> None:
    """Step the slice ends ``left``, ``right`` (``(chains,)``, changed in place) out along coordinate ``j``.

    Vectorised over both ends at once: only the chains whose end is still inside the slice are probed,
    several steps ahead when few remain, at most ``max_steps`` steps each side.
    """
    c, dev = x.shape[0], x.device
    active = [torch.arange(c, device=dev), torch.arange(c, device=dev)]  # stepping left, right
    used = 0
    while used < max_steps and (active[0].numel() or active[1].numel()):
        k = min(_per_chain(active[0].numel() + active[1].numel()), max_steps - used)
        steps = torch.arange(k, device=dev, dtype=x.dtype) * w
        rows = torch.cat(active)
        vals = torch.cat([left[active[0], None] - steps, right[active[1], None] + steps])
        inside = _probe(log_prob, x, j, vals, rows, chain_index) > log_y[rows, None]
        # steps taken: the position of the first probe outside the slice (k if none is)
        taken = torch.where(inside.all(1), k, (~inside).int().argmax(1))
        t_left, t_right = taken.split([active[0].numel(), active[1].numel()])
        left[active[0]] -= w * t_left.to(x.dtype)
        right[active[1]] += w * t_right.to(x.dtype)
        active = [active[0][t_left == k], active[1][t_right == k]]
        used += k


def _shrink(log_prob: LogProb, x: Tensor, j: int, left: Tensor, right: Tensor, log_y: Tensor, lp: Tensor,
            rand: Callable, chain_index: bool) -> Tensor:
    """Shrink the slices until every chain accepts; returns coordinate ``j`` of the new states ``(chains,)``.

    ``left``, ``right`` and the log densities ``lp`` are updated in place.  Only the chains still shrinking
    are probed, each at several points when few remain: a point outside the interval shrunk by the points
    before it is skipped, so every candidate used is uniform on the current interval.
    """
    dev = x.device
    new = x[:, j].clone()
    idx = torch.arange(x.shape[0], device=dev)
    for _ in range(100):
        m, k = idx.numel(), _per_chain(idx.numel())
        lo, hi, here = left[idx], right[idx], x[idx, j]
        cand = lo[:, None] + (hi - lo)[:, None] * rand(m, k)
        lp_c = _probe(log_prob, x, j, cand, idx, chain_index)
        acc = lp_c > log_y[idx, None]
        done = torch.zeros(m, dtype=torch.bool, device=dev)
        for t in range(k):
            ct = cand[:, t]
            valid = ~done & (ct > lo) & (ct < hi) if k > 1 else ~done
            a_t = valid & acc[:, t]
            new[idx[a_t]] = ct[a_t]
            lp[idx[a_t]] = lp_c[a_t, t]
            done |= a_t
            rej = valid & ~acc[:, t]
            lo = torch.where(rej & (ct < here), ct, lo)
            hi = torch.where(rej & (ct >= here), ct, hi)
        left[idx], right[idx] = lo, hi
        idx = idx[~done]
        if idx.numel() == 0:
            break
    return new


def rhat(chains: Tensor) -> Tensor:
    """Rank-normalised split-R-hat per dimension for samples ``(n, chains, d)`` (draws first, as
    :func:`slice_sample` returns them): :func:`telescope.samplers.convergence.rhat` (Vehtari et al., 2021),
    whose chains are ``(chains, n, d)``.  Chains of 2 or 3 draws fall back to the classic split-R-hat
    (Gelman et al., BDA3) of draws split in halves, as the rank-normalised version needs 4."""
    if chains.shape[0] < 4:
        n = chains.shape[0] // 2 * 2
        halves = torch.cat([chains[: n // 2], chains[n // 2 : n]], 1).double()  # (n/2, 2c, d)
        m = halves.shape[0]
        b, w = m * halves.mean(0).var(0), halves.var(0).mean(0)
        return (((m - 1) / m * w + b / m) / w).sqrt().float()
    return convergence.rhat(chains.transpose(0, 1)).float()


def _whitening(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and Cholesky factor ``(d, d)`` of the spread of the chains ``x (c, d)``."""
    mu = x.mean(0)
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    cov = cov + 1e-10 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    try:
        chol = torch.linalg.cholesky(cov)
    except RuntimeError:  # degenerate spread: scale only
        chol = torch.diag(cov.diagonal().clamp_min(1e-12).sqrt())
    return mu, chol


def whitened_slice(log_prob: LogProb, init: Tensor, per_chain: int, warmup: int, thin: int,
                   g: torch.Generator | None = None, progress_bar: bool = False, keep_warmup: int = 0) -> Tensor:
    """Slice sampling of ``init (chains, d)`` that whitens after half the warm-up: ``(per_chain, chains, d)``.

    After ``max(1, warmup // 2)`` sweeps the chains' mean ``mu`` and Cholesky factor ``L`` are estimated
    and sampling continues in ``z = L^{-1} (theta - mu)`` (a constant Jacobian), which removes linear
    correlations between the coordinates the slice sampler moves along.  ``keep_warmup`` prepends
    warm-up states of the whitened half as :func:`slice_sample` does.
    """
    first = max(1, warmup // 2)
    x = slice_sample(log_prob, init, 1, warmup=first - 1, generator=g)[-1]  # (chains, d)
    mu, chol = _whitening(x)
    z0 = torch.linalg.solve_triangular(chol, (x - mu).T, upper=False).T

    def log_prob_z(z: Tensor) -> Tensor:
        return log_prob(mu + z @ chol.T)

    s = slice_sample(log_prob_z, z0, per_chain, warmup=max(0, warmup - first), thin=thin, generator=g,
                     progress_bar=progress_bar, keep_warmup=keep_warmup)
    return mu + s @ chol.T


@torch.no_grad()
def mcmc_posterior(log_prob: LogProb, prior, n: int, *, chains: int = 100, warmup: int = 100, thin: int = 2,
                   n_proposals: int = 10_000, seed: int | None = None, device=None, whiten: bool = True,
                   progress_bar: bool = False, return_chains: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` posterior samples ``(n, d)`` from ``log_prob`` (which must include the prior).

    Chains are initialised by SIR of ``n_proposals`` prior draws, then slice-sampled; with
    ``whiten`` (default) the second half of the warm-up and the sampling run in coordinates
    whitened by the chains' covariance (:func:`whitened_slice`), which mixes much faster on
    correlated posteriors for the same number of sweeps.  The samples of all chains are pooled
    and shuffled.  With ``return_chains`` the chains are returned too, ``(chains, ceil(n / chains), d)``
    in ArviZ's layout (chain, draw, dimension), for :mod:`telescope.samplers.convergence`.
    """
    g = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
    torch_state = torch.random.fork_rng(devices=[])
    with torch_state:
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g).item()))
        props = prior.sample((n_proposals,)).float()
    if device is not None:
        props = props.to(device)
    chains = max(1, min(chains, n))
    init = sir(log_prob, props, chains, generator=g)
    per_chain = -(-n // chains)
    if whiten and warmup >= 2 and chains > init.shape[1]:
        s = whitened_slice(log_prob, init, per_chain, warmup, thin, g, progress_bar=progress_bar)
    else:
        s = slice_sample(log_prob, init, per_chain, warmup=warmup, thin=thin, generator=g,
                         progress_bar=progress_bar)
    flat = s.reshape(-1, s.shape[-1])
    out = flat[torch.randperm(flat.shape[0], generator=g)[:n].to(flat.device)]
    return (out, s.transpose(0, 1).contiguous()) if return_chains else out
