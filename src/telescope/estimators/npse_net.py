r"""NPSE's noise-prediction network :math:`\epsilon_\psi(z_t, x, t)` (Linhart et al., 2024, Appendix E).

``z`` (the standardised, possibly log-transformed parameters) and the standardised ``x`` each pass through
an MLP, ``t`` through the embedding :math:`(\cos(i\pi t), \sin(i\pi t))_{i \le F}`, and their
concatenation through an MLP with layer normalisation; the first layer of that head is split into a
``z``, an ``x`` and a ``t`` part, so the ``x`` part is computed once per observation when sampling.
:mod:`telescope.estimators.npse` states the loss and the sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ScoreNet", "TimeEmbedding"]


class TimeEmbedding(nn.Module):
    r"""``t (*,) -> (*, 2F)``: :math:`(\cos(i\pi t), \sin(i\pi t))_{1 \le i \le F}` (Appendix E)."""

    def __init__(self, frequencies: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, frequencies + 1, dtype=torch.float32) * math.pi)

    def forward(self, t: Tensor) -> Tensor:
        a = t.unsqueeze(-1) * self.freqs
        return torch.cat([a.cos(), a.sin()], -1)


def _mlp(n_in: int, n_out: int, hidden: Sequence[int], layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip([n_in, *hidden[:-1]], hidden):
        layers += [nn.Linear(a, b)] + ([nn.LayerNorm(b)] if layer_norm else []) + [nn.SiLU()]
    layers.append(nn.Linear(hidden[-1] if hidden else n_in, n_out))
    return nn.Sequential(*layers)


class ScoreNet(nn.Module):
    r"""The noise-prediction network :math:`\epsilon_\psi(z_t, x, t)` of Appendix E.

    Holds the standardisation of ``theta`` (after the log transform) and of ``x`` as buffers.
    ``forward(z, t, x)`` takes ``z (*, d)``, ``t`` (a number or ``(*,)``) and ``x (*, *x_shape)``;
    :meth:`encode_x` and :meth:`eps_codes` split it so that the ``x`` code is computed once.
    """

    def __init__(self, dim: int, x_shape: tuple[int, ...], *, theta_loc: Tensor, theta_scale: Tensor,
                 log_dims: Tensor, x_loc: Tensor, x_scale: Tensor, z_precision: Tensor, z_range: Tensor,
                 embedding: nn.Module | None = None, hidden: Sequence[int] = (128, 256, 128), embed: int = 64,
                 embed_hidden: Sequence[int] = (64, 64, 64), frequencies: int = 32):
        super().__init__()
        self.dim, self.x_shape = dim, tuple(x_shape)
        self.register_buffer("theta_loc", theta_loc.float())
        self.register_buffer("theta_scale", theta_scale.float())
        self.register_buffer("log_dims", log_dims.bool())
        self.register_buffer("x_loc", x_loc.float())
        self.register_buffer("x_scale", x_scale.float())
        self.register_buffer("z_precision", z_precision.float())
        self.register_buffer("z_range", z_range.float())  # (2, d): min and max of the training z
        self.embedding = embedding if embedding is not None else nn.Identity()
        with torch.no_grad():
            n_x = int(self.embedding(torch.zeros(2, *self.x_shape)).reshape(2, -1).shape[1])
        self.theta_net = _mlp(dim, embed, list(embed_hidden))
        self.x_net = _mlp(n_x, embed, list(embed_hidden))
        self.time = TimeEmbedding(frequencies)
        self.null = nn.Parameter(torch.zeros(embed))  # the "no observation" code (learned prior score)
        hidden = list(hidden)
        self.in_theta = nn.Linear(embed, hidden[0])
        self.in_x = nn.Linear(embed, hidden[0], bias=False)
        self.in_t = nn.Linear(2 * frequencies, hidden[0], bias=False)
        layers: list[nn.Module] = [nn.LayerNorm(hidden[0]), nn.SiLU()]
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
        layers.append(nn.Linear(hidden[-1], dim))
        self.head = nn.Sequential(*layers)

    # -- the working space ----------------------------------------------------------------------
    def to_working(self, theta: Tensor) -> Tensor:
        """``theta (*, d) -> z (*, d)``: log on ``log_dims``, then standardise."""
        u = torch.where(self.log_dims, torch.log(theta.clamp_min(1e-38)), theta) if bool(self.log_dims.any()) \
            else theta
        return (u - self.theta_loc) / self.theta_scale

    def from_working(self, z: Tensor) -> Tensor:
        """``z (*, d) -> theta (*, d)``, the inverse of :meth:`to_working`."""
        u = z * self.theta_scale + self.theta_loc
        return torch.where(self.log_dims, torch.exp(u), u) if bool(self.log_dims.any()) else u

    def clip_range(self, margin: float = 0.25) -> tuple[Tensor, Tensor]:
        """Bounds ``(lo, hi)`` for denoised estimates: the training range of ``z`` widened by margin x width."""
        lo, hi = self.z_range[0], self.z_range[1]
        w = (hi - lo).clamp_min(1e-6)
        return lo - margin * w, hi + margin * w

    # -- the network ----------------------------------------------------------------------------
    def encode_x(self, x: Tensor) -> Tensor:
        """``x (m, *x_shape) -> (m, embed)``."""
        h = self.embedding((x - self.x_loc) / self.x_scale)
        return self.x_net(h.reshape(h.shape[0], -1))

    def eps_codes(self, z: Tensor, t, hx: Tensor) -> Tensor:
        """Noise prediction from ``z (*, d)``, ``t`` (number or ``(*,)``) and an ``x`` code ``(*, embed)``."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        a = self.in_theta(self.theta_net(z)) + self.in_x(hx) + self.in_t(self.time(t))
        return self.head(a)

    def forward(self, z: Tensor, t, x: Tensor) -> Tensor:
        return self.eps_codes(z, t, self.encode_x(x))
