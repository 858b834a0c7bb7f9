"""Neural posterior estimation (NPE).

A conditional flow ``q_phi(theta | x)`` is trained on simulations ``(theta_i, x_i) ~ p(theta) p(x | theta)``
by maximum likelihood, i.e. minimising the Monte Carlo loss ``-1/n sum_i log q_phi(theta_i | x_i)``
(Papamakarios & Murray, 2016; the single-level loss of Section 2.1 of Hikida et al., 2025).  With enough data
and capacity ``q_phi(theta | x)`` approaches the posterior ``p(theta | x)``.

Sampling respects the prior support: draws outside it are rejected (the flow may leak mass
outside a bounded prior), the acceptance rate is recorded in ``acceptance_rate``, and sampling
gives up with a clear error after ``max_time`` seconds instead of hanging.

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with Bayesian conditional
    density estimation", NeurIPS 2016, arXiv:1605.06376.
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..priors import in_support
from ..simulation.simulators import seeded
from ..utils import check_count
from .base import Estimator
from .flows import ConditionalFlow, check_flow_args

__all__ = ["NPE"]

_ROUND = 2**14  # flow draws per rejection round (all observations together): inverting a spline flow takes
# tens of KB per draw, so larger rounds cost GBs and run no faster (measured: benchmarks/README_defaults.md)


class NPE(Estimator):
    """Neural posterior estimation with a zuko flow.

    Arguments:
        prior: torch Distribution with event shape ``(d,)``.
        flow: ``"nsf"`` (neural spline flow, default) or ``"maf"``.
        transforms, hidden, bins: flow architecture.  Three spline transforms by default: on two_moons and
            gaussian_linear at 10^4 simulations, a better validation loss than five in less time per epoch.
            For accuracy over speed, use ``NPE(prior, transforms=5).fit(theta, x, ema=0.99, patience=10)``
            (a moving average of the weights): a slightly better C2ST at about twice the training time.  The
            measurements are in ``benchmarks/README_defaults.md``.
        embedding: optional ``nn.Module`` mapping standardised ``x (n, *event)`` to ``(n, k)``.
        device: where to train and sample.
        seed: seeds initialisation, data split and shuffling.

    Example:
        >>> import telescope as ts
        >>> task = ts.tasks.get("gaussian_linear")
        >>> theta, x = ts.simulate(task.simulator, task.prior, 500, progress_bar=False)
        >>> est = ts.NPE(task.prior).fit(theta, x, max_epochs=2, progress_bar=False)
        >>> est.sample(task.observation(1), 10).shape
        torch.Size([10, 10])
    """

    train_defaults = {"lr": 1e-3, "patience": 20}

    def __init__(self, prior, *, flow: str = "nsf", transforms: int = 3, hidden: Sequence[int] = (64, 64),
                 bins: int = 8, embedding: nn.Module | None = None, device=None, seed: int | None = 0):
        check_flow_args(flow, transforms, hidden, bins)
        super().__init__(prior, embedding=embedding, device=device, seed=seed, flow=flow, transforms=transforms,
                         hidden=list(hidden), bins=bins)
        self.acceptance_rate: float | None = None

    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        c = self.config
        return ConditionalFlow(theta, x, flow=c["flow"], transforms=c["transforms"], hidden=c["hidden"],
                               bins=c["bins"], embedding=self.embedding)

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self._loss_terms(net, batch).mean()

    def _loss_terms(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Per-simulation losses ``-log q(theta_i | x_i)``, shape ``(n,)``; ``_loss`` is their mean.

        Rows are independent and deterministic given the network, so a multilevel loss may
        evaluate all its terms in one forward pass (:mod:`telescope.multilevel`).
        """
        return -cast(ConditionalFlow, net).log_prob(batch["theta"], batch["x"])

    # -- densities --------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, theta, x_o) -> Tensor:  # type: ignore[override]  # sbi's extra keywords are not taken
        """``log q(theta | x_o)`` for ``theta (n, d)`` and one observation ``x_o``: ``(n,)``.

        ``-inf`` outside the prior support (the density is not renormalised for the rejected mass).
        """
        net = cast(ConditionalFlow, self._trained())
        theta = self._check_theta(theta).to(self.device)
        x = self._check_x(x_o, "x_o", single=True).to(self.device)
        lp = net.log_prob(theta, x)
        return torch.where(in_support(self.prior, theta.cpu()).to(lp.device), lp, torch.full_like(lp, -float("inf")))

    @torch.no_grad()
    def log_prob_batched(self, theta: Tensor, x) -> Tensor:
        """``theta (n, m, d)`` and observations ``x (m, *event)`` -> ``(n, m)``."""
        net = cast(ConditionalFlow, self._trained())
        x = self._check_x(x).to(self.device)
        theta = torch.as_tensor(theta, dtype=torch.float32).to(self.device)
        if theta.dim() != 3 or theta.shape[1:] != (x.shape[0], self.dim_theta):
            raise ValueError(f"theta must have shape (n, {x.shape[0]}, {self.dim_theta}), got {tuple(theta.shape)}")
        return torch.cat([net.log_prob(t, x) for t in theta.split(max(1, 2**20 // max(1, x.shape[0])))])

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, x_o, n: int, *, seed: int | None = None, max_time: float = 60.0) -> Tensor:
        """``n`` posterior samples ``(n, d)`` for one observation ``x_o`` (shape as one x at fit)."""
        x = self._check_x(x_o, "x_o", single=True)
        return self.sample_batched(x, n, seed=seed, max_time=max_time)[:, 0]

    @torch.no_grad()
    def sample_batched(self, x, n: int, *, seed: int | None = None, max_time: float = 60.0) -> Tensor:
        """``n`` samples for each of ``m`` observations ``x (m, *event)``: ``(n, m, d)``.

        Samples outside the prior support are rejected and redrawn; raises a RuntimeError when
        ``n`` accepted samples per observation cannot be had within ``max_time`` seconds.
        """
        net = cast(ConditionalFlow, self._trained())
        n = check_count("n", n)
        x = self._check_x(x).to(self.device)
        m = x.shape[0]
        out = torch.empty(n, m, self.dim_theta, device=self.device)
        count = torch.zeros(m, dtype=torch.long, device=self.device)
        acc_col = torch.zeros(m, device=self.device)  # accepted draws per observation
        drawn = 0  # draws per observation (every round draws k for each)
        t0 = time.perf_counter()
        with seeded(seed if seed is not None else int(torch.randint(2**62, ()).item())):
            while True:
                todo = count < n
                rate = ((acc_col + 1) / (drawn + 1))[todo].min().item()  # worst unfinished observation
                need = int((n - count).max())
                k = min(max(int(need / rate * 1.1) + 16, 64), max(64, _ROUND // m))
                s = net.sample(x, k)  # (k, m, d)
                ok = in_support(self.prior, s.reshape(-1, self.dim_theta).cpu()).reshape(k, m).to(self.device)
                drawn += k
                acc_col += ok.sum(0)
                rank = torch.cumsum(ok.long(), 0) - 1 + count  # slot of each accepted draw
                keep = ok & (rank < n)
                cols = torch.arange(m, device=self.device).expand(k, m)
                out[rank[keep], cols[keep]] = s[keep]
                count = torch.clamp(count + ok.sum(0), max=n)
                if bool((count >= n).all()):
                    break
                if time.perf_counter() - t0 > max_time:
                    j = int(torch.argmin(count))
                    which = f"observation {j} of {m}" if m > 1 else "the observation"
                    raise RuntimeError(
                        f"NPE rejection sampling got only {int(count[j])} of {n} samples inside the prior support "
                        f"for {which} within max_time={max_time}s (acceptance rate "
                        f"{float(acc_col[j]) / drawn:.2e}); the estimator puts almost no mass inside the prior "
                        f"there — train longer or on more simulations, check that the observation is plausible "
                        f"under the simulator, or raise max_time")
        accepted = float(acc_col.sum())
        drawn = drawn * m
        self.acceptance_rate = accepted / drawn
        if self.acceptance_rate < 0.01:
            warnings.warn(f"NPE acceptance rate inside the prior support is low ({self.acceptance_rate:.2%})",
                          stacklevel=2)
        return out
