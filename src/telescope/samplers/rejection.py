r"""Rejection sampling from a prior reweighted by ``exp(log_weight)``, for several targets at once.

Used for ratio posteriors :math:`p(\theta) e^{h(\theta, x)}` (:class:`telescope.estimators.NRE`): exact up
to the supremum of the weights being estimated by the largest one seen.  :class:`_LowAcceptance` lets a
caller fall back to MCMC when the acceptance rate is too low.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["rejection_sample"]


def rejection_sample(log_weight: Callable[..., Tensor], prior, n: int, m: int = 1, *,
                     chunk: int = 10_000, max_time: float = 600.0, min_acceptance: float = 0.0,
                     device=None, subsets: bool = False) -> tuple[Tensor, float]:
    r"""Rejection sampling from ``prior(theta) * exp(log_weight(theta))`` for ``m`` targets at once.

    Proposals come from the prior in chunks; a proposal is accepted for target ``j`` with probability
    :math:`\exp(w_j(\theta) - M_j)`, where :math:`M_j` is the largest log weight seen so far.  When a
    chunk raises :math:`M_j`, earlier accepted samples are thinned with probability
    :math:`\exp(M_j^{old} - M_j^{new})`, so every sample kept is accepted with probability
    :math:`\exp(w_j - M_j)` for the final :math:`M_j` (exact, up to the supremum being estimated by a maximum).

    Arguments:
        log_weight: ``theta (P, d) -> (P, m)`` log weights (or ``(P,)`` when ``m = 1``), e.g. log ratios.
            With ``subsets=True`` it is called as ``log_weight(theta, targets)`` with the indices ``(a,)`` of
            the targets that still need samples and returns ``(P, a)``: finished targets cost nothing.
        prior: proposal distribution (a torch Distribution).
        n: samples wanted per target.
        m: number of targets.
        chunk: proposals per round (the first round sets the acceptance estimate).
        max_time: raise a RuntimeError after this many seconds.
        min_acceptance: raise a RuntimeError (with the estimate) when the lowest acceptance rate is below this
            after the first round (estimated from the weights) or any later one (accepted / proposed), so the
            caller can switch to MCMC.

    Returns:
        ``(n, m, d)`` samples and the acceptance rate (accepted / proposed, averaged over targets).

    Example:
        >>> prior = torch.distributions.Normal(torch.zeros(1), torch.ones(1))
        >>> s, rate = rejection_sample(lambda t: -0.5 * t[:, 0] ** 2, prior, 100)  # target N(0, 1/2)
        >>> s.shape
        torch.Size([100, 1, 1])
    """
    t0 = time.perf_counter()
    kept: list[list[Tensor]] = [[] for _ in range(m)]  # accepted thetas per target
    kept_lw: list[list[Tensor]] = [[] for _ in range(m)]
    M = torch.full((m,), -math.inf, dtype=torch.float64)
    counts = torch.zeros(m, dtype=torch.long)
    proposed = torch.zeros(m, dtype=torch.long)
    first = True
    while True:
        active = torch.nonzero(counts < n).reshape(-1)
        props = prior.sample((chunk,)).float()
        t = props.to(device) if device is not None else props
        lw = (log_weight(t, active) if subsets else log_weight(t)).detach().cpu().double().reshape(chunk, -1)
        if not subsets:
            lw = lw[:, active]
        lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
        proposed[active] += chunk
        old_M = M[active]
        new_M = torch.maximum(old_M, lw.max(0).values)
        if not torch.isfinite(new_M).all():
            raise ValueError("every proposal has log weight -inf (or NaN) for some target; check the observation")
        for a, j in enumerate(active.tolist()):
            if new_M[a] > old_M[a] and kept[j]:  # thin the earlier acceptances to the new bound
                lw_old, th_old = torch.cat(kept_lw[j]), torch.cat(kept[j])
                keep = torch.rand(lw_old.shape[0], dtype=torch.float64) < torch.exp(old_M[a] - new_M[a])
                kept[j], kept_lw[j] = [th_old[keep]], [lw_old[keep]]
        M[active] = new_M
        acc = torch.rand(lw.shape, dtype=torch.float64) < torch.exp(lw - new_M)
        for a, j in enumerate(active.tolist()):
            kept[j].append(props[acc[:, a]])
            kept_lw[j].append(lw[acc[:, a], a])
            counts[j] = sum(t.shape[0] for t in kept[j])
        # the first round estimates the rate from the weights; later rounds check the realised rate, which
        # falls when a new largest weight thins the earlier acceptances (heavy-tailed weights in many dimensions)
        rate = (float(torch.exp(lw - new_M).mean(0).min()) if first else
                float((counts[active].double() / proposed[active]).min()))
        first = False
        if rate < min_acceptance:
            raise _LowAcceptance(rate)
        if bool((counts >= n).all()):
            break
        if time.perf_counter() - t0 > max_time:
            raise RuntimeError(f"rejection sampling got only {int(counts.min())} of {n} samples within "
                               f"max_time={max_time}s after {int(proposed.max())} prior draws (acceptance rate "
                               f"{float((counts / proposed).min()):.2e}); use method='mcmc' or raise max_time")
    out = torch.stack([torch.cat(kept[j])[:n] for j in range(m)], 1)
    return out, float((counts.double() / proposed).mean())


class _LowAcceptance(RuntimeError):
    def __init__(self, rate: float):
        super().__init__(f"acceptance rate {rate:.2e} is below min_acceptance")
        self.rate = rate
