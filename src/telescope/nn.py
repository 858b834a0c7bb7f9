"""Network building blocks: MLPs, residual networks, a time-series embedding, standardisation layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ResidualNet", "SeriesEmbedding", "Standardize", "fit_standardize"]


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


class SeriesEmbedding(nn.Module):
    """1-D convolutional embedding of time series ``x (n, L)`` or ``(n, C, L)`` -> ``(n, out)``.

    A stack of ``Conv1d`` layers of stride 2 (one per entry of ``channels``, each followed by a
    GELU), then two pools over time concatenated: the average and the standard deviation of each
    channel (so the features see the amplitude of the oscillations as well as their level), and a
    final ``Linear`` to ``out`` features.  Any length ``L >= 1`` is accepted, and the pools make the
    number of parameters independent of ``L``.

    Arguments:
        out: number of output features.
        channels: output channels of the convolutional layers.
        kernel: kernel size of every convolution (padded to keep ``ceil(L / 2)`` steps per layer).
        in_channels: ``C`` of the input; an input ``(n, L)`` is read as one channel.

    Example:
        >>> SeriesEmbedding(out=8)(torch.randn(5, 128)).shape
        torch.Size([5, 8])
    """

    def __init__(self, out: int = 16, channels: Sequence[int] = (8, 16, 32), kernel: int = 7,
                 in_channels: int = 1):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or out < 1 or kernel < 1 or in_channels < 1:
            raise ValueError(f"out, kernel, in_channels and every entry of channels must be >= 1 (and channels "
                             f"non-empty), got out={out!r}, kernel={kernel!r}, in_channels={in_channels!r}, "
                             f"channels={channels!r}")
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        for a, b in zip([self.in_channels, *channels[:-1]], channels):
            layers += [nn.Conv1d(a, b, kernel, stride=2, padding=kernel // 2), nn.GELU()]
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels[-1], int(out))

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1) if x.dim() == 2 and self.in_channels == 1 else x
        if h.dim() != 3 or h.shape[1] != self.in_channels:
            one = "(n, L) or " if self.in_channels == 1 else ""
            raise ValueError(f"x must have shape {one}(n, {self.in_channels}, L) (series of length L), "
                             f"got shape {tuple(x.shape)}")
        h = self.conv(h)  # (n, channels[-1], L')
        mean = h.mean(-1)
        std = (h.var(-1, unbiased=False) + 1e-6).sqrt()  # the offset keeps the gradient finite for flat h
        return self.head(torch.cat([mean, std], -1))
