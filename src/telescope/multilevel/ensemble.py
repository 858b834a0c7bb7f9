r"""A mixture of the networks a multilevel fit trains, with weights fitted on held-out expensive simulations.

The staged multilevel fit (:mod:`telescope.multilevel.wrapper`) trains three conditional density
networks on the same split: the multilevel network, the network fine-tuned from the pre-trained weights
on the expensive simulations alone (transfer learning, Krouglova et al. 2025, arXiv 2502.08416) and the
network trained on the expensive simulations from scratch.  Each over-fits the few expensive simulations
in its own way; their mixture

.. math::
    q_w(y \mid c) = \sum_k w_k \, q_k(y \mid c), \qquad w \in \Delta^{K-1},

is a proper conditional density whose held-out negative log-likelihood is never above the weighted mean
of its members' (Jensen), and is usually below the best member's when their errors differ (stacking of
predictive distributions: Yao, Vehtari, Simpson & Gelman 2018, "Using stacking to average Bayesian
predictive distributions", Bayesian Analysis 13(3)).

:func:`stack` fits ``w`` by maximising the held-out log-likelihood with EM under a symmetric Dirichlet
prior (``concentration`` pseudo-observations per member), so that a handful of held-out points cannot put
all the weight on one member by chance.  :class:`Mixture` is a drop-in network for every estimator whose
network exposes ``log_prob(y, c)`` and ``sample(c, n)`` (NPE and NLE flows).

Example:
    >>> import torch
    >>> lp = torch.tensor([[0.0, -5.0], [0.0, -5.0], [-1.0, -1.0]])  # held-out log q_k, 3 points x 2 members
    >>> w = stack(lp, concentration=0.0)
    >>> bool(w[0] > 0.9)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Mixture", "stack"]


def stack(log_probs: Tensor, *, concentration: float = 1.0, iters: int = 500, tol: float = 1e-10) -> Tensor:
    """Mixture weights maximising ``sum_i log sum_k w_k exp(log_probs[i, k])`` plus a Dirichlet log-prior.

    Arguments:
        log_probs: ``(n, K)`` held-out log densities of ``n`` points under ``K`` members.
        concentration: pseudo-points per member of a symmetric Dirichlet(1 + concentration) prior (0: maximum
            likelihood).
        iters, tol: EM iterations and the stopping tolerance on the weights.

    Returns:
        ``(K,)`` weights on the simplex (float64).
    """
    lp = torch.as_tensor(log_probs, dtype=torch.float64)
    if lp.dim() != 2 or lp.shape[1] < 1:
        raise ValueError(f"log_probs must have shape (n, K) with K >= 1, got {tuple(lp.shape)}")
    if concentration < 0:
        raise ValueError(f"concentration must be >= 0, got {concentration}")
    lp = torch.nan_to_num(lp, nan=-1e30, neginf=-1e30, posinf=1e30)
    n, k = lp.shape
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(iters):
        r = torch.softmax(lp + w.clamp_min(1e-300).log(), dim=1)  # responsibilities (n, K)
        new = (r.sum(0) + concentration) / (n + k * concentration)
        if float((new - w).abs().max()) < tol:
            w = new
            break
        w = new
    return w


class Mixture(nn.Module):
    """``q(y | c) = sum_k w_k q_k(y | c)`` over networks with ``log_prob(y, c)`` and ``sample(c, n)``.

    Members with zero weight are dropped.  ``sample`` draws each member's share by one multinomial per
    context, so the draws are exact samples of the mixture.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | Tensor):
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if len(members) != w.numel() or len(members) == 0:
            raise ValueError(f"need one weight per member: {len(members)} members, {w.numel()} weights")
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be non-negative and not all zero, got {w.tolist()}")
        keep = [i for i in range(len(members)) if float(w[i]) > 0]
        self.members = nn.ModuleList([members[i] for i in keep])
        self.register_buffer("log_weights", (w[keep] / w[keep].sum()).log().float())

    @property
    def weights(self) -> list[float]:
        return self.log_weights.exp().tolist()

    def log_prob(self, y: Tensor, c: Tensor) -> Tensor:
        lp = torch.stack([m.log_prob(y, c) for m in self.members], dim=-1)
        return torch.logsumexp(lp + self.log_weights.to(lp.dtype), dim=-1)

    def sample(self, c: Tensor, n: int) -> Tensor:
        draws = torch.stack([m.sample(c, n) for m in self.members])  # (K, n, m, d)
        m = draws.shape[2]
        which = torch.multinomial(self.log_weights.exp().expand(m, -1), n, replacement=True).T  # (n, m)
        idx = which.to(draws.device)[None, :, :, None].expand(1, *draws.shape[1:])
        return draws.gather(0, idx)[0]
