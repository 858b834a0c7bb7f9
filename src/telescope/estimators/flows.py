"""Conditional normalising flows ``q(y | c)`` on zuko, with standardisation built in.

Both NPE (``y = theta``, ``c = x``) and NLE (``y = x``, ``c = theta``) use :class:`ConditionalFlow`:
``y`` and ``c`` are z-scored with statistics of the training data (stored as buffers), ``c`` may
pass through an embedding network, and the flow is a neural spline flow (Durkan et al., 2019;
default) or a masked autoregressive flow (Papamakarios et al., 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import zuko
from torch import Tensor, nn

from ..nn import Standardize, fit_standardize

__all__ = ["ConditionalFlow", "make_flow", "FLOWS"]

FLOWS = ("nsf", "maf")


def check_flow_args(flow, transforms, hidden, bins) -> None:
    """Check a flow's settings up front, naming the argument (not an error from deep inside the optimiser)."""
    from ..utils import check_count

    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    check_count("transforms", transforms)
    check_count("bins", bins)
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"hidden must be a sequence of layer widths such as (64, 64), got {hidden!r}")
    for i, h in enumerate(hidden):
        check_count(f"hidden[{i}]", h)


def make_flow(kind: str, features: int, context: int, transforms: int = 5, hidden: Sequence[int] = (64, 64),
              bins: int = 8) -> nn.Module:
    """A zuko flow over ``features`` conditioned on ``context`` features."""
    if kind == "nsf":
        return zuko.flows.NSF(features, context, bins=bins, transforms=transforms, hidden_features=tuple(hidden),
                              randperm=False)
    if kind == "maf":
        return zuko.flows.MAF(features, context, transforms=transforms, hidden_features=tuple(hidden))
    raise ValueError(f"flow must be one of {FLOWS}, got {kind!r}")


class ConditionalFlow(nn.Module):
    """``log q(y | c)`` and samples ``y ~ q(. | c)`` in the original units of ``y``."""

    def __init__(self, y: Tensor, c: Tensor, *, flow: str = "nsf", transforms: int = 5,
                 hidden: Sequence[int] = (64, 64), bins: int = 8, embedding: nn.Module | None = None):
        super().__init__()
        self.y_std = fit_standardize(y)
        self.c_std = fit_standardize(c)
        self.embedding = embedding if embedding is not None else nn.Flatten(1) if c.dim() > 2 else nn.Identity()
        with torch.no_grad():
            k = self.embedding(self.c_std(c[:2])).shape[-1]
        self.flow = make_flow(flow, y.shape[-1], k, transforms, hidden, bins)

    def context(self, c: Tensor) -> Tensor:
        return self.embedding(self.c_std(c))

    def log_prob(self, y: Tensor, c: Tensor) -> Tensor:
        """``y (*, m, d)`` and ``c (m, *)`` -> ``(*, m)``."""
        return self.flow(self.context(c)).log_prob(self.y_std(y)) + self.y_std.log_abs_det()

    def sample(self, c: Tensor, n: int) -> Tensor:
        """``n`` samples for each of the ``m`` contexts: ``(n, m, d)``."""
        return self.y_std.inverse(self.flow(self.context(c)).sample((n,)))

    @staticmethod
    def standardizers(net: ConditionalFlow) -> tuple[Standardize, Standardize]:
        return net.y_std, net.c_std
