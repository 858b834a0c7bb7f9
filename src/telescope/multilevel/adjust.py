r"""Gradient adjustment for the MLMC loss (Hikida et al., 2025, Section 3 "Optimisation" and Algorithm 1).

The gradient of :math:`h_l(\phi) = \frac{1}{n_l}\sum_i f^l_\phi(u^l_i, \theta^l_i) - f^{l-1}_\phi(u^l_i, \theta^l_i)`
splits into a positive part :math:`\zeta^{l,+} = \frac{1}{n_l}\sum_i \nabla f^l` and a negative part
:math:`\zeta^{l-1,-} = -\frac{1}{n_l}\sum_i \nabla f^{l-1}`.  With few expensive pairs the two do not
cancel: training ends up dominated by one of them and diverges.  Algorithm 1 fixes this with

1. **rescaling** —
   :math:`\zeta^{l-1,-} \leftarrow \frac{\|\zeta^{l,+}\|}{\|\zeta^{l-1,-}\| + \epsilon}\,\zeta^{l-1,-}`
   for :math:`l = 1..L`, so the correction :math:`\nabla h_c = \sum_l (\zeta^{l,+} + \zeta^{l-1,-})`
   stays a small difference of two equally long vectors;
2. **projection** (PCGrad, "Gradient surgery for multi-task learning", NeurIPS 2020) — when
   :math:`\nabla h_0 \cdot \nabla h_c < 0`, each is projected onto the normal plane of the other:
   :math:`\tilde\nabla h_0 = \nabla h_0 - \frac{\nabla h_0 \cdot \nabla h_c}{\|\nabla h_c\|^2}\nabla h_c` and
   :math:`\tilde\nabla h_c = \nabla h_c - \frac{\nabla h_0 \cdot \nabla h_c}{\|\nabla h_0\|^2}\nabla h_0`;

and the step uses :math:`\tilde\nabla h_0 + \tilde\nabla h_c`.  Either part can be switched off
(the ablation of Appendix B.6); with both off the gradient is the plain gradient of eq. (2).

The adjustment is a heuristic, not a gradient: rescaling changes the weight of the negative parts, so
the adjusted dynamics need not settle at the minimiser of eq. (2) (the projection keeps it stationary).
With few expensive pairs it stabilises training (the paper's Table 4; in our g-and-k NPE runs, too); with
many pairs plain training (``rescale=False, project=False``) reached lower error in our g-and-k NLE runs.

The ``2L + 1`` per-term gradients come from ONE call to :func:`torch.autograd.grad` over the
forward graph of all terms (vectorised over the terms with ``is_grads_batched``), so a step costs
about one forward and one backward pass over the step's simulations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["adjust_gradients", "GradientAdjustment"]


def adjust_gradients(g0: Tensor, plus: Tensor, minus: Tensor, *, rescale: bool = True, project: bool = True,
                     eps: float = 1e-8) -> tuple[Tensor, dict]:
    r"""Algorithm 1 on flat gradient vectors.

    Arguments:
        g0: ``(P,)`` gradient of :math:`h_0`.
        plus: ``(L, P)`` rows :math:`\zeta^{l,+}` for ``l = 1..L``.
        minus: ``(L, P)`` rows :math:`\zeta^{l-1,-}` for ``l = 1..L`` (already carrying their minus sign).
        rescale: rescale each :math:`\zeta^{l-1,-}` to the norm of :math:`\zeta^{l,+}`.
        project: project :math:`\nabla h_0` and :math:`\nabla h_c` onto each other's normal planes when they conflict.
        eps: the :math:`\epsilon` of Algorithm 1 (also guards the projections against zero vectors).

    Returns:
        ``(g, info)``: the adjusted gradient ``(P,)`` and a dict with the rescaling factors
        ``scales (L,)``, the adjusted parts ``g0``, ``gc`` and ``conflict`` (whether projection happened).

    Example:
        >>> g, info = adjust_gradients(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0]]),
        ...                            torch.tensor([[-1.0, -1.0]]))
        >>> bool(info["conflict"]), float(info["g0"] @ info["gc"]) >= 0
        (True, True)
    """
    if plus.dim() == 1:
        plus, minus = plus.unsqueeze(0), minus.unsqueeze(0)
    if plus.shape != minus.shape or plus.shape[-1:] != g0.shape:
        raise ValueError(f"plus and minus must have shape (L, P) with P = {g0.shape[0]}, got "
                         f"{tuple(plus.shape)} and {tuple(minus.shape)}")
    if rescale and plus.shape[0]:
        scales = plus.norm(dim=-1) / (minus.norm(dim=-1) + eps)
    else:
        scales = torch.ones(plus.shape[0], dtype=g0.dtype, device=g0.device)
    gc = (plus + scales.unsqueeze(-1) * minus).sum(0)
    conflict = torch.zeros((), dtype=torch.bool, device=g0.device)
    if project and plus.shape[0]:
        dot = g0 @ gc
        conflict = dot < 0
        d = torch.clamp(dot, max=0.0)  # zero unless conflicting: no branching on the device
        g0, gc = g0 - d / (gc @ gc + eps) * gc, gc - d / (g0 @ g0 + eps) * g0
    return g0 + gc, {"scales": scales, "g0": g0, "gc": gc, "conflict": conflict}


class GradientAdjustment:
    """``backward(terms, params)`` for :func:`telescope.train.train` applying Algorithm 1.

    ``terms`` is the dict made by :func:`telescope.multilevel.mlmc_terms`: ``"h0"`` first, then for
    each level ``l`` the positive part ``f^l`` and the negative part ``-f^{l-1}`` (any names, in this
    order).  The per-term gradients are computed with one vectorised ``torch.autograd.grad`` call
    (``batched=True``, best when all terms share one forward graph) or one call per term
    (``batched=False``, best when each term has its own graph).  Statistics of the adjustment
    (share of conflicting steps, mean rescaling factor per level) accumulate in :attr:`stats`.

    Arguments:
        rescale, project, eps: as in :func:`adjust_gradients`.
        batched: how to compute the per-term gradients (see above).
    """

    def __init__(self, *, rescale: bool = True, project: bool = True, eps: float = 1e-8, batched: bool = True,
                 top: bool = False):
        self.rescale, self.project, self.eps, self.batched = bool(rescale), bool(project), float(eps), bool(batched)
        self.top = bool(top)
        self._steps = 0
        self._conflicts = None
        self._scales = None

    @property
    def stats(self) -> dict:
        """``{"steps", "conflict_rate", "mean_scales"}`` over the steps so far."""
        if not self._steps:
            return {"steps": 0, "conflict_rate": None, "mean_scales": []}
        return {"steps": self._steps, "conflict_rate": float(self._conflicts) / self._steps,
                "mean_scales": (self._scales / self._steps).tolist()}

    def per_term_gradients(self, terms: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
        """``(K, P)`` gradients of the ``K`` scalar terms with respect to the flattened ``params``."""
        K = len(terms)
        sizes = [p.numel() for p in params]
        live = [i for i, t in enumerate(terms) if t.requires_grad]
        G = torch.zeros(K, sum(sizes), dtype=params[0].dtype, device=params[0].device)
        if not live:
            return G
        if self.batched and len(live) > 1:
            out = torch.stack([terms[i] for i in live])
            eye = torch.eye(len(live), dtype=out.dtype, device=out.device)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*performance drop.*")
                    grads = torch.autograd.grad(out, params, grad_outputs=eye, is_grads_batched=True,
                                                allow_unused=True)
            except RuntimeError:  # an op without a batching rule: fall back to one call per term
                self.batched = False
                return self.per_term_gradients(terms, params)
            G[live] = torch.cat([torch.zeros(len(live), n, dtype=G.dtype, device=G.device) if g is None
                                 else g.reshape(len(live), n) for g, n in zip(grads, sizes)], 1)
            return G
        for j, i in enumerate(live):
            grads = torch.autograd.grad(terms[i], params, retain_graph=j < len(live) - 1, allow_unused=True)
            G[i] = torch.cat([torch.zeros(n, dtype=G.dtype, device=G.device) if g is None else g.reshape(-1)
                              for g, n in zip(grads, sizes)])
        return G

    def __call__(self, terms: dict[str, Tensor], params: Sequence[Tensor]) -> None:
        values = list(terms.values())
        if len(values) % 2 != 1:
            raise ValueError(f"the MLMC terms must be h0 followed by (f^l, -f^(l-1)) pairs, got {list(terms)}")
        G = self.per_term_gradients(values, params)
        if self.top and len(values) > 3:  # the lower corrections join h0: adjust only against the top correction
            g, info = adjust_gradients(G[:-2].sum(0), G[-2:-1], G[-1:], rescale=self.rescale, project=self.project,
                                       eps=self.eps)
        else:
            g, info = adjust_gradients(G[0], G[1::2], G[2::2], rescale=self.rescale, project=self.project,
                                       eps=self.eps)
        self._steps += 1
        c, s = info["conflict"].detach().float(), info["scales"].detach()
        self._conflicts = c if self._conflicts is None else self._conflicts + c
        self._scales = s if self._scales is None else self._scales + s
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = g[offset:offset + n].view_as(p).clone()
            offset += n
