"""Neural likelihood estimation (NLE).

A conditional flow ``q_phi(x | theta)`` is trained on simulations by minimising
``-1/n sum_i log q_phi(x_i | theta_i)`` (Papamakarios et al., 2019; Section 2.1 of Hikida et al., 2025).
The posterior is then sampled by MCMC on ``log p(theta) + sum_j log q_phi(x_j | theta)``, which
also gives tall-data posteriors for a set of iid observations ``x_1..x_k`` (shape ``(k, d_x)``).

MCMC is vectorised over chains (:mod:`telescope.samplers.mcmc`): chains start from
sampling-importance-resampling of prior draws — so every mode of a multimodal posterior gets
chains in proportion to its mass — and run coordinate-wise slice sampling in parallel.

References:
    Papamakarios, Sterratt & Murray (2019), "Sequential neural likelihood: fast likelihood-free inference with
    autoregressive flows", AISTATS 2019, arXiv:1805.07226.
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..samplers.convergence import keep_chains
from ..samplers.mcmc import mcmc_posterior, sir, slice_sample
from ..simulation.simulators import seeded
from ..utils import check_count
from .base import Estimator
from .flows import ConditionalFlow, check_flow_args

__all__ = ["NLE"]


class NLE(Estimator):
    """Neural likelihood estimation with a zuko flow over ``x`` conditioned on ``theta``.

    Arguments:
        prior: torch Distribution with event shape ``(d,)``.
        flow, transforms, hidden, bins: flow architecture (``"nsf"`` default, or ``"maf"``).  Five spline
            transforms by default: on the hardest two_moons observations they beat three transforms (also
            with a longer patience at the same training time) and MAF.
        device, seed: as for every estimator.

    Training keeps an exponential moving average of the weights (``ema=0.99``, its window capped at 5
    epochs of steps, ``ema_max_epochs=5``, which only matters on small data sets) and validates and
    returns the averaged network, with early stopping after 10 epochs without improvement (better than
    without the average, for a few more epochs).  Pass ``ema=None, patience=20`` to ``fit`` for the plain
    loop.  When training time matters more than the last bit of accuracy,
    ``fit(theta, x, schedule="cosine", max_epochs=50, patience=50)`` and ``sample(x_o, n, warmup=10)``
    train in 50 epochs instead of ~140 and sample faster, for a slightly worse C2ST.  The measurements
    behind these defaults are in ``benchmarks/README_defaults.md``.

    ``sample`` runs many short chains (500 chains, 20 warm-up sweeps after SIR initialisation, no
    thinning): each sweep evaluates the flow on all chains at once, so chains are nearly free while
    sweeps are not.

    Example:
        >>> import telescope as ts
        >>> task = ts.tasks.get("two_moons")
        >>> theta, x = ts.simulate(task.simulator, task.prior, 500, progress_bar=False)
        >>> est = ts.NLE(task.prior).fit(theta, x, max_epochs=2, progress_bar=False)
        >>> est.sample(task.observation(1), 20, warmup=5).shape
        torch.Size([20, 2])
    """

    train_defaults = {"lr": 1e-3, "patience": 10, "ema": 0.99, "ema_max_epochs": 5}
    invalid_default = "refuse"  # dropping failed simulations would learn p(x | theta, simulation succeeded)

    def __init__(self, prior, *, flow: str = "nsf", transforms: int = 5, hidden: Sequence[int] = (64, 64),
                 bins: int = 8, device=None, seed: int | None = 0, embedding=None):
        if embedding is not None:
            raise ValueError("NLE models x itself, so it takes no embedding network; use NPE for learned summaries")
        check_flow_args(flow, transforms, hidden, bins)
        super().__init__(prior, device=device, seed=seed, flow=flow, transforms=transforms, hidden=list(hidden),
                         bins=bins)

    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        if x.dim() != 2:
            raise ValueError(f"NLE needs flat observations x of shape (n, d_x), got {tuple(x.shape)}")
        c = self.config
        return ConditionalFlow(x, theta, flow=c["flow"], transforms=c["transforms"], hidden=c["hidden"],
                               bins=c["bins"])

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self._loss_terms(net, batch).mean()

    def _loss_terms(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Per-simulation losses ``-log q(x_i | theta_i)``, shape ``(n,)``; ``_loss`` is their mean.

        Rows are independent and deterministic given the network, so a multilevel loss may
        evaluate all its terms in one forward pass (:mod:`telescope.multilevel`).
        """
        return -net.log_prob(batch["x"], batch["theta"])

    # -- densities --------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, theta, x) -> Tensor:
        """``log q(x_j | theta_i)`` for ``theta (m, d)`` and ``x (k, d_x)``: ``(m, k)``."""
        net = self._trained()
        theta = self._check_theta(theta).to(self.device)
        x = self._check_x(x).to(self.device)
        k = x.shape[0]
        out = []
        step = max(1, 2**18 // k)
        for th in theta.split(step):
            pairs_t = th.repeat_interleave(k, 0)
            pairs_x = x.repeat(th.shape[0], 1)
            out.append(net.log_prob(pairs_x, pairs_t).reshape(th.shape[0], k))
        return torch.cat(out)

    def _x_set(self, x_o) -> Tensor:
        """One observation ``(d_x,)`` or an iid set ``(k, d_x)`` as ``(k, d_x)``."""
        return self._check_x(x_o, "x_o")

    def log_prob(self, theta, x_o) -> Tensor:
        """Unnormalised log posterior ``log p(theta) + sum_j log q(x_j | theta)``: ``(n,)``.

        ``x_o`` is one observation ``(d_x,)`` or a set of iid observations ``(k, d_x)``.
        """
        theta = self._check_theta(theta)
        return self._potential(self._x_set(x_o))(theta.to(self.device)).cpu()

    def _potential(self, x_set: Tensor):
        net, prior = self._trained(), self.prior
        x_set = x_set.to(self.device)

        @torch.no_grad()
        def potential(theta: Tensor) -> Tensor:
            lp = prior.log_prob(theta.cpu()).to(theta.device)
            out = torch.full_like(lp, -float("inf"))
            ok = torch.isfinite(lp)
            if ok.any():
                th = theta[ok]
                k = x_set.shape[0]
                ll = net.log_prob(x_set.repeat(th.shape[0], 1), th.repeat_interleave(k, 0)).reshape(-1, k).sum(-1)
                out[ok] = lp[ok] + ll
            return out

        return potential

    @torch.no_grad()
    def log_prob_batched(self, theta: Tensor, x) -> Tensor:
        """Unnormalised log posterior for ``theta (n, m, d)`` and single observations ``x (m, d_x)``: ``(n, m)``."""
        net = self._trained()
        x = self._check_x(x).to(self.device)
        theta = torch.as_tensor(theta, dtype=torch.float32).to(self.device)
        if theta.dim() != 3 or theta.shape[1:] != (x.shape[0], self.dim_theta):
            raise ValueError(f"theta must have shape (n, {x.shape[0]}, {self.dim_theta}), got {tuple(theta.shape)}")
        lp = self.prior.log_prob(theta.cpu()).to(self.device)
        ll = net.log_prob(x.expand(theta.shape[0], *x.shape), theta)
        return lp + ll

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, x_o, n: int, *, chains: int = 500, warmup: int = 20, thin: int = 1,
               n_proposals: int = 10_000, seed: int | None = None, progress_bar: bool = False,
               return_chains: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``n`` posterior samples ``(n, d)`` by MCMC; ``x_o`` is ``(d_x,)`` or an iid set ``(k, d_x)``.

        The chains ``(chains, ceil(n / chains), d)`` are kept in ``self.chains`` and their rank-normalised
        R-hat and bulk/tail ESS in ``self.mcmc_diagnostics`` (:mod:`telescope.samplers.convergence`); with
        ``return_chains`` the result is ``(samples, chains)`` and a failed check warns.  The default many short
        chains suit pooled samples; for diagnostics worth reading, ask for at least 4 draws per chain (e.g.
        ``chains=20, warmup=100, thin=2``).
        """
        n = check_count("n", n)
        potential = self._potential(self._x_set(x_o))
        s, ch = mcmc_posterior(potential, self.prior, n, chains=chains, warmup=warmup, thin=thin,
                               n_proposals=n_proposals, seed=seed, device=self.device,
                               progress_bar=progress_bar, return_chains=True)
        return keep_chains(self, s, ch, return_chains, "NLE")

    @torch.no_grad()
    def sample_batched(self, x, n: int, *, chains: int = 20, warmup: int = 100, thin: int = 2,
                       n_proposals: int = 2_000, seed: int | None = None, progress_bar: bool = False) -> Tensor:
        """``n`` samples for each of ``m`` single observations ``x (m, d_x)``: ``(n, m, d)``.

        All ``m * chains`` chains run in one vectorised slice sampler.
        """
        net = self._trained()
        n = check_count("n", n)
        x = self._check_x(x).to(self.device)
        m, d = x.shape[0], self.dim_theta
        g = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
        with seeded(int(torch.randint(2**62, (1,), generator=g).item())):
            props = self.prior.sample((n_proposals,)).float().to(self.device)
        lp_props = self.prior.log_prob(props.cpu()).to(self.device)
        init = []
        for j in range(m):  # SIR per observation, on one shared set of prior draws
            ll = net.log_prob(x[j : j + 1].expand(n_proposals, -1), props)
            init.append(sir(lambda t, _ll=ll + lp_props: _ll, props, chains, generator=g))
        init = torch.cat(init)  # (m * chains, d), chains of observation j contiguous
        x_rep = x.repeat_interleave(chains, 0)

        def potential(theta: Tensor, idx: Tensor) -> Tensor:
            lp = self.prior.log_prob(theta.cpu()).to(theta.device)
            ok = torch.isfinite(lp)
            safe = torch.where(ok.unsqueeze(-1), theta, init[idx])
            return torch.where(ok, lp + net.log_prob(x_rep[idx], safe), torch.full_like(lp, -float("inf")))

        per_chain = -(-n // chains)
        s = slice_sample(potential, init, per_chain, warmup=warmup, thin=thin, generator=g,
                         progress_bar=progress_bar, chain_index=True)  # (per_chain, m * chains, d)
        s = s.reshape(per_chain, m, chains, d).permute(0, 2, 1, 3).reshape(per_chain * chains, m, d)
        return s[:n].cpu()
