r"""Learned couplings between fidelities: lift cheap simulations to the top fidelity.

A level's seed-matched pairs :math:`(\theta_i, x^{l-1}_i, x^l_i)` show how the simulator's output at fidelity
``l`` follows from the one at fidelity ``l - 1`` with the same noise.  When the levels are strongly coupled
the conditional law of the step, :math:`p(x^l \mid x^{l-1}, \theta)`, is narrow and smooth, far easier to learn
from a few pairs than :math:`p(x^l \mid \theta)` itself.  A conditional flow :math:`c_l` on the residual
:math:`x^l - x^{l-1}` given :math:`(\theta, x^{l-1})` is fitted on each level's pairs (early-stopped on its
held-out pairs), and every cheaper simulation is lifted up the ladder,

.. math::
    \hat x^{l} = \hat x^{l-1} + r, \quad r \sim c_l(\cdot \mid \theta, \hat x^{l-1}), \qquad l = k+1, \dots, L,

from its own fidelity ``k``: a draw of :math:`\int \prod_l c_l \, p(x^k \mid \theta)`, which is
:math:`p(x^L \mid \theta)` when the couplings are exact.  Since :math:`p(x^{l-1}, x^l \mid \theta)` factorises
as :math:`p(x^{l-1} \mid \theta)\,p(x^l \mid x^{l-1}, \theta)`, a lifted cheap simulation is a draw of the top
level whenever each step's conditional is right; the chain of conditionals is learned from the pairs, the
marginal of the cheapest level from the many cheap simulations.  This is the idea of multi-fidelity
surrogates built from the discrepancy between fidelities (Kennedy & O'Hagan 2000, "Predicting the output
from a complex computer code when fast approximations are available", Biometrika 87(1)), here with the
discrepancy's whole conditional law learned by a flow (the "learned coupling").

The network trained on the lifted simulations (:func:`coupled_data`) and fine-tuned on the real expensive
ones is one more member of the multilevel mixture (:mod:`telescope.multilevel.ensemble`); the mixture
weights, fitted on held-out real expensive simulations, decide how far the lifted data is trusted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..estimators.flows import ConditionalFlow
from ..simulation.simulators import seeded
from ..training import train
from .levels import Level

__all__ = ["Coupling", "fit_couplings", "lift", "coupled_data"]


class Coupling(nn.Module):
    """``x^l ~ x^(l-1) + c_l(. | theta, x^(l-1))``: a conditional flow on the residual between two fidelities."""

    def __init__(self, theta: Tensor, x: Tensor, x_low: Tensor, *, transforms: int = 3,
                 hidden: Sequence[int] = (128, 128), bins: int = 8):
        super().__init__()
        self.flow = ConditionalFlow(*self.yc(theta, x, x_low), transforms=transforms, hidden=hidden, bins=bins)

    @staticmethod
    def yc(theta: Tensor, x: Tensor, x_low: Tensor) -> tuple[Tensor, Tensor]:
        low = x_low.flatten(1)
        return x.flatten(1) - low, torch.cat([theta, low], 1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        y, c = self.yc(batch["theta"], batch["x"], batch["x_low"])
        return -self.flow.log_prob(y, c).mean()

    @torch.no_grad()
    def step(self, theta: Tensor, x_low: Tensor) -> Tensor:
        """One draw of ``x^l`` for each row of ``x^(l-1)`` (same shape as ``x_low``)."""
        low = x_low.flatten(1)
        r = self.flow.sample(torch.cat([theta, low], 1), 1)[0]
        return (low + r).reshape(x_low.shape)


def fit_couplings(train_levels: Sequence[Level], val_levels: Sequence[Level], device, net_kwargs: dict | None = None,
                  kind: type[Coupling] | None = None, **train_kwargs) -> list[Coupling]:
    """One :class:`Coupling` (or subclass ``kind``) per level ``1..L``, trained on its pairs and early-stopped on
    its held-out pairs."""
    out = []
    for l in range(1, len(train_levels)):
        tr, va = train_levels[l], val_levels[l]
        net = (kind or Coupling)(tr["theta"], tr["x"], tr["x_low"], **(net_kwargs or {})).to(device)
        data = {k: tr[k].to(device) for k in ("theta", "x", "x_low")}
        val = {k: va[k].to(device) for k in ("theta", "x", "x_low")} if va.n else None
        train(net, lambda m, b: {"loss": m.loss(b)}, data, val_data=val, **{**train_kwargs,
              "desc": f"coupling of fidelities {l - 1} -> {l}"})
        out.append(net.eval())
    return out


def lift(couplings: Sequence[Coupling], theta: Tensor, x: Tensor, fidelity: int) -> Tensor:
    """Simulations ``x`` of ``fidelity`` lifted to the top fidelity through the couplings above it."""
    for net in couplings[fidelity:]:
        dev = next(net.parameters()).device
        x = net.step(theta.to(dev), x.to(dev)).cpu()
    return x


def coupled_data(couplings: Sequence[Coupling], levels: Sequence[Level]) -> tuple[Tensor, Tensor]:
    """Every simulation once at the top fidelity: each level's own ``x^l`` lifted from fidelity ``l`` (the top
    level's are real)."""
    theta = torch.cat([lv["theta"] for lv in levels])
    x = torch.cat([lift(couplings, lv["theta"], lv["x"], l) for l, lv in enumerate(levels)])
    return theta, x


def train_coupled(ml, net: nn.Module, pre: dict, tr: Sequence[Level], va: Sequence[Level], kwargs: dict,
                  vf: float, stream: int = 0) -> nn.Module:
    """The mixture member trained on lifted simulations: from the pre-trained weights, on every simulation lifted
    to the top fidelity (stopped on the held-out real expensive ones), then fine-tuned on the real expensive ones.

    The couplings' initial weights and the lifting draws come from the seed in ``kwargs`` (the estimator's) and
    ``stream`` (one per cross-fitting fold), so that a seeded fit does not depend on the global random state."""
    est = ml.estimator
    kw = {k: v for k, v in kwargs.items() if k not in ("desc", "device")}
    seed = kwargs.get("seed")
    with seeded(int(seed) * 1009 + stream) if seed is not None else contextlib.nullcontext():
        couplings = fit_couplings(tr, va, est.device, **kw, val_fraction=vf)
        theta, x = coupled_data(couplings, tr)
    member = ml._train_rival(net, pre, True, Level(theta=theta, x=x), va[-1], kwargs, vf, "lifted simulations")
    return ml._train_rival(net, member.state_dict(), True, tr[-1], va[-1], kwargs, vf, "lifted, fine-tuned")
