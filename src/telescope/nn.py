"""Network building blocks: MLPs, residual networks, standardisation layers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ResidualNet", "Standardize", "fit_standardize"]


class MLP(nn.Sequential):
    """Multi-layer perceptron ``(*, in) -> (*, out)``.

    Arguments:
        in_features, out_features: sizes of input and output.
        hidden: sizes of the hidden layers.
        activation: activation class.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64, 64),
                 activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0):
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)


class _Block(nn.Module):
    def __init__(self, width: int, activation: type[nn.Module], dropout: float, batch_norm: bool):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(width) if batch_norm else nn.Identity(), activation(), nn.Linear(width, width),
            nn.BatchNorm1d(width) if batch_norm else nn.Identity(), activation(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(width, width),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class ResidualNet(nn.Module):
    """Residual network ``(*, in) -> (*, out)`` of ``blocks`` pre-activation blocks of ``width`` units."""

    def __init__(self, in_features: int, out_features: int, width: int = 64, blocks: int = 2,
                 activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[_Block(width, activation, dropout, batch_norm) for _ in range(blocks)])
        self.out = nn.Sequential(activation(), nn.Linear(width, out_features))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        h = self.blocks(self.inp(x.reshape(-1, x.shape[-1])))
        return self.out(h).reshape(*shape, -1)


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics stored as buffers (saved with the state dict)."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean

    def log_abs_det(self) -> Tensor:
        """``log |d forward / dx|`` summed over the last dimension."""
        return -torch.log(self.std).sum()


def fit_standardize(t: Tensor, min_std: float = 1e-6) -> Standardize:
    """A :class:`Standardize` with the mean and std of ``t`` ``(n, *shape)`` over the first dimension."""
    mean = t.mean(0)
    std = t.std(0) if t.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(torch.isfinite(std) & (std > min_std), std, torch.ones_like(std))
    return Standardize(mean, std)
