r"""The MLMC training loss, eq. (2) of Hikida et al. (2025).

For any neural estimator whose loss is a Monte Carlo average :math:`\frac1n\sum_i f_\phi(u_i, \theta_i)`
of per-simulation terms (NLE: :math:`-\log q(x|\theta)`, NPE: :math:`-\log q(\theta|x)`, ratio and
score losses alike), simulators :math:`G^0, \dots, G^L` of rising fidelity give the telescoping estimate

.. math::
    \ell_{\mathrm{MLMC}}(\phi) = \underbrace{\frac{1}{n_0}\sum_{i=1}^{n_0} f^0_\phi(u^0_i, \theta^0_i)}_{h_0}
      + \sum_{l=1}^{L} \underbrace{\frac{1}{n_l}\sum_{i=1}^{n_l} \big(f^l_\phi(u^l_i, \theta^l_i)
      - f^{l-1}_\phi(u^l_i, \theta^l_i)\big)}_{h_l},

where :math:`f^l` evaluates the loss on :math:`x = G^l_\theta(u)` and each level's pairs are
seed-matched (same :math:`\theta` and :math:`u`).  It is unbiased for the high-fidelity loss
:math:`\mathbb{E}[f^L]` and has small variance when the pairs are strongly coupled (eq. 3).

Terms are returned as a dict ``{"h0", "f1@1", "-f0@1", ..., "fL@L", "-f(L-1)@L"}`` — the positive
and negative parts of each :math:`h_l` separately, since the gradient adjustment (Algorithm 1,
:mod:`telescope.multilevel.adjust`) treats them separately; their sum is :math:`\ell_{\mathrm{MLMC}}`.

Any randomness of the loss itself (dropout, diffusion times and noises, contrastive sets) must be
shared by the two members of a pair too: :func:`mlmc_terms` evaluates them under identical random
states unless the loss is declared row-wise deterministic (``per_sample=True``), in which case all
terms are computed in ONE forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["mlmc_terms", "mlmc_loss", "term_names"]

Batch = dict[str, Tensor]


def term_names(L: int) -> list[str]:
    """``["h0", "f1@1", "-f0@1", ..., f"f{L}@{L}", f"-f{L-1}@{L}"]``."""
    names = ["h0"]
    for l in range(1, L + 1):
        names += [f"f{l}@{l}", f"-f{l - 1}@{l}"]
    return names


def _rows(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


class _SameRandomness:
    """Save the random state once, restore it before each evaluation: both pair members draw the same numbers."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)


def _members_and_weights(batches: Sequence, weights: Sequence[float] | None,
                         coefficients: Sequence[float] | None) -> tuple[list[Batch], list[int], list[float]]:
    """Checked member batches ``[b_0, b_1_high, b_1_low, ...]``, their row counts and each member's weight
    (level weight times its control-variate coefficient)."""
    if not batches:
        raise ValueError("batches must hold at least the level-0 batch")
    members: list[Batch] = [batches[0]]
    for l, pair in enumerate(batches[1:], 1):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"batches[{l}] must be a pair (high, low) of seed-matched batches")
        if _rows(pair[0]) != _rows(pair[1]):
            raise ValueError(f"batches[{l}]: the high and low members have {_rows(pair[0])} and {_rows(pair[1])} rows; "
                             f"seed-matched pairs must be row-aligned")
        members += [pair[0], pair[1]]
    L = len(batches) - 1
    n = [_rows(b) for b in members]
    if weights is None:
        w = [1.0 / max(n[0], 1)] + [1.0 / max(n[2 * l - 1], 1) for l in range(1, L + 1) for _ in (0, 1)]
    else:
        if len(weights) != L + 1:
            raise ValueError(f"weights must have one entry per level ({L + 1}), got {len(weights)}")
        w = [float(weights[0])] + [float(weights[l]) for l in range(1, L + 1) for _ in (0, 1)]
    if coefficients is not None:
        a = [float(c) for c in coefficients]
        if len(a) != L:
            raise ValueError(f"coefficients must have one entry per level below the top ({L}), got {len(a)}")
        a = a + [1.0]
        w[0] *= a[0]
        for l in range(1, L + 1):
            w[2 * l - 1] *= a[l]
            w[2 * l] *= a[l - 1]
    return members, n, w


def mlmc_terms(loss: Callable[[Batch], Tensor], batches: Sequence, weights: Sequence[float] | None = None, *,
               per_sample: bool = False, coefficients: Sequence[float] | None = None) -> dict[str, Tensor]:
    r"""The terms of the MLMC loss (eq. 2) on one batch of every level.

    Arguments:
        loss: with ``per_sample=True``, ``loss(batch) -> (n,)`` per-simulation losses, row-wise independent
            and deterministic (all terms then come from ONE call on the concatenated batches); otherwise
            ``loss(batch) -> ()``, the mean loss over the batch (any randomness inside is replayed
            identically for the two members of a pair).
        batches: ``[batch_0, (batch_1_high, batch_1_low), ..., (batch_L_high, batch_L_low)]``; each batch a dict
            of tensors with the same keys (e.g. ``theta``, ``x``), the two members of a pair row-aligned.
        weights: per-level weights ``w_l`` multiplying the *sum* over the level's rows; default ``1 / n_l`` (the
            level's batch mean, eq. 2).  Training with minibatches of unequal sizes uses ``1 / E[n_l]``.
        coefficients: control-variate coefficients ``[a_0, ..., a_{L-1}]`` (``a_L = 1``): the loss becomes
            :math:`a_0 \bar f^0 + \sum_l (a_l \bar f^l - a_{l-1} \bar f^{l-1})` over each level's own rows, unbiased for
            :math:`\mathbb{E} f^L` for any coefficients (the sum telescopes); all ones (default) is eq. (2).

    Returns:
        ``{"h0": ..., "f1@1": ..., "-f0@1": ..., ...}`` scalar tensors whose sum is :math:`\ell_{\mathrm{MLMC}}`.
        A level with no rows in this batch contributes zeros.

    Example:
        >>> f = lambda b: (b["x"] - b["theta"]).pow(2).sum(-1)          # per-sample loss
        >>> b0 = {"theta": torch.zeros(4, 1), "x": torch.ones(4, 1)}
        >>> b1 = ({"theta": torch.zeros(2, 1), "x": 2 * torch.ones(2, 1)}, {"theta": torch.zeros(2, 1),
        ...       "x": torch.ones(2, 1)})
        >>> {k: float(v) for k, v in mlmc_terms(f, [b0, b1], per_sample=True).items()}
        {'h0': 1.0, 'f1@1': 4.0, '-f0@1': -1.0}
    """
    members, n, w = _members_and_weights(batches, weights, coefficients)
    L = len(batches) - 1
    signs = [1.0] + [1.0, -1.0] * L
    names = term_names(L)
    ref = next(iter(members[0].values()))
    zero = torch.zeros((), dtype=torch.float32, device=ref.device)
    terms: dict[str, Tensor] = {}
    if per_sample:
        live = [i for i, k in enumerate(n) if k > 0]
        cat = {key: torch.cat([members[i][key] for i in live]) for key in members[live[0]]} if live else None
        f = loss(cat) if cat is not None else None
        if f is not None and f.shape != (sum(n),):
            raise ValueError(f"a per-sample loss must return shape ({sum(n)},), got {tuple(f.shape)}")
        parts = iter(f.split([n[i] for i in live])) if f is not None else iter(())
        for i, name in enumerate(names):
            terms[name] = signs[i] * w[i] * next(parts).sum() if n[i] > 0 else zero
        return terms
    terms[names[0]] = w[0] * n[0] * loss(members[0]) if n[0] > 0 else zero
    for l in range(1, L + 1):
        hi, lo = members[2 * l - 1], members[2 * l]
        if n[2 * l - 1] == 0:
            terms[names[2 * l - 1]] = terms[names[2 * l]] = zero
            continue
        same = _SameRandomness(ref.device)
        a = loss(hi)
        same.restore()
        b = loss(lo)
        terms[names[2 * l - 1]] = w[2 * l - 1] * n[2 * l - 1] * a
        terms[names[2 * l]] = -w[2 * l] * n[2 * l] * b
    return terms


def mlmc_loss(loss: Callable[[Batch], Tensor], batches: Sequence, weights: Sequence[float] | None = None, *,
              per_sample: bool = False, coefficients: Sequence[float] | None = None) -> Tensor:
    """The MLMC loss of eq. (2): the sum of :func:`mlmc_terms`."""
    terms = mlmc_terms(loss, batches, weights, per_sample=per_sample, coefficients=coefficients)
    return sum(terms.values())  # type: ignore[return-value]
