r"""NRE-C's pieces: the loss of eq. (9), the classifier network, the contrastive sets, the MI-bound sums.

The loss and its corner cases (NRE-A, NRE-B) are stated in :mod:`telescope.estimators.nre` (Miller,
Weniger & Forré, 2022, "Contrastive neural ratio estimation", arXiv:2210.06170).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import ResidualNet, fit_standardize

__all__ = ["RatioNet", "nre_c_loss"]


def nre_c_loss(log_r_joint: Tensor, log_r_marginal: Tensor, gamma: float) -> Tensor:
    r"""The NRE-C loss of eq. (9) from classifier logits.

    Arguments:
        log_r_joint: ``(B,)`` logits :math:`h(\theta^{(b)}, x^{(b)})` of the jointly drawn pairs.
        log_r_marginal: ``(B, K)`` logits :math:`h(\theta_i^{(b)}, x^{(b)})` of ``K`` parameters drawn
            independently of :math:`x^{(b)}`.  Term 0 uses all ``K`` columns; term K uses the first
            ``K - 1`` columns together with the joint pair.
        gamma: odds :math:`\gamma > 0` of the joint class; ``math.inf`` gives NRE-B (eq. 11).

    Returns:
        The scalar loss.  With ``gamma = 1`` and ``K = 1`` it equals the NRE-A loss (eq. 10).

    Example:
        >>> h_joint, h_marg = torch.tensor([2.0, 1.0]), torch.tensor([[-1.0], [0.5]])
        >>> nre_a = -0.5 * (torch.nn.functional.logsigmoid(h_joint)
        ...                 + torch.nn.functional.logsigmoid(-h_marg[:, 0])).mean()
        >>> torch.allclose(nre_c_loss(h_joint, h_marg, 1.0), nre_a)
        True
    """
    if log_r_marginal.dim() != 2 or log_r_joint.shape != log_r_marginal.shape[:1]:
        raise ValueError(f"log_r_joint must have shape (B,) and log_r_marginal (B, K), got "
                         f"{tuple(log_r_joint.shape)} and {tuple(log_r_marginal.shape)}")
    gamma = float(gamma)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 (math.inf for NRE-B), got {gamma!r}")
    K = log_r_marginal.shape[1]
    joint_classes = torch.cat([log_r_joint[:, None], log_r_marginal[:, : K - 1]], 1)  # (B, K): theta_b first
    if math.isinf(gamma):  # NRE-B: p0 = 0, pK = 1, softmax over the K candidates
        return -(log_r_joint - torch.logsumexp(joint_classes, 1)).mean()
    log_K, log_g = math.log(K), math.log(gamma)
    pad = torch.full_like(log_r_joint[:, None], log_K)
    log_q0 = log_K - torch.logsumexp(torch.cat([pad, log_g + log_r_marginal], 1), 1)
    log_qK = log_g + log_r_joint - torch.logsumexp(torch.cat([pad, log_g + joint_classes], 1), 1)
    p0, pK = 1.0 / (1.0 + gamma), gamma / (1.0 + gamma)
    return -(p0 * log_q0.mean() + pK * log_qK.mean())


class RatioNet(nn.Module):
    r"""The classifier :math:`h_w(\theta, x)`: standardise both, embed ``x``, concatenate, residual network.

    Arguments:
        theta, x: training data ``(n, d)`` and ``(n, *event)`` (for the standardisation statistics and shapes).
        width, blocks: residual network size (the paper's Small NN is 50 / 2, Large NN 128 / 3).
        batch_norm: batch normalisation inside the residual blocks (used by the paper).
        dropout: dropout probability inside the blocks.
        embedding: optional ``nn.Module`` mapping standardised ``x (n, *event)`` to ``(n, e)``.
    """

    def __init__(self, theta: Tensor, x: Tensor, *, width: int = 50, blocks: int = 2, batch_norm: bool = False,
                 dropout: float = 0.0, embedding: nn.Module | None = None):
        super().__init__()
        self.std_theta = fit_standardize(theta)
        self.std_x = fit_standardize(x)
        self.embedding = embedding if embedding is not None else nn.Flatten()
        with torch.no_grad():
            was = self.embedding.training
            self.embedding.eval()
            e = self.embedding(self.std_x(x[:2].float())).shape[-1]
            self.embedding.train(was)
        self.net = ResidualNet(theta.shape[-1] + e, 1, width=width, blocks=blocks, batch_norm=batch_norm,
                               dropout=dropout)

    def embed(self, x: Tensor) -> Tensor:
        """``(n, *event) -> (n, e)`` features of standardised ``x``."""
        return self.embedding(self.std_x(x))

    def forward(self, theta: Tensor, features: Tensor) -> Tensor:
        """Logits ``(*,)`` for ``theta (*, d)`` and embedded ``features (*, e)`` (same leading shape)."""
        return self.net(torch.cat([self.std_theta(theta), features], -1)).squeeze(-1)


def _other_rows(B: int, K: int, generator: torch.Generator | None, device) -> Tensor:
    """``(B, K)`` indices: row ``b`` gets ``K`` distinct rows other than ``b``, chosen at random.

    A random ``K``-subset of the offsets ``1..B-1`` is shared by all rows (row ``b`` takes
    ``b + offset mod B``); within a shuffled minibatch each row's set is a uniform random subset.
    """
    offsets = torch.randperm(B - 1, generator=generator)[:K] + 1
    return ((torch.arange(B)[:, None] + offsets[None, :]) % B).to(device)


def _mi_terms(h_joint: Tensor, h_marg: Tensor) -> tuple[int, float, float, float]:
    """Sums over a batch for the MI bounds: ``(B, sum h_joint, sum log mean exp h_marg, sum mean (exp h_marg - 1))``."""
    hj, hm = h_joint.double(), h_marg.double()
    log_z = torch.logsumexp(hm, 1) - math.log(hm.shape[1])
    return hj.shape[0], float(hj.sum()), float(log_z.sum()), float((hm.exp().mean(1) - 1).sum())
