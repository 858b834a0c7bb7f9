r"""Neural ratio estimation: NRE-C, with NRE-A and NRE-B as corner cases.

A classifier :math:`h_w(\theta, x)` is trained to approximate the log likelihood-to-evidence ratio
:math:`\log r(x \mid \theta) = \log p(x \mid \theta) - \log p(x) = \log p(\theta \mid x) - \log p(\theta)`
(Miller, Weniger & Forré, 2022; equation and section numbers below are that paper's).

NRE-C poses a (K + 1)-way classification: given ``x`` and ``K`` candidate parameters
:math:`\Theta = (\theta_1, \dots, \theta_K)` drawn from the prior, was ``x`` drawn independently of
all of them (class 0) or jointly with :math:`\theta_k` (class k)?  With the odds
:math:`\gamma = K p_K / p_0` of "jointly" to "independently", the classifier (eq. 7) is

.. math::
    q_w(y = 0 \mid \Theta, x) = \frac{K}{K + \gamma \sum_i e^{h_w(\theta_i, x)}}, \qquad
    q_w(y = k \mid \Theta, x) = \frac{\gamma\, e^{h_w(\theta_k, x)}}{K + \gamma \sum_i e^{h_w(\theta_i, x)}},

and the loss on ``B`` pairs is the weighted cross-entropy of eq. (9),

.. math::
    \hat\ell_{\gamma, K} = -\frac{1}{B} \sum_b \Big[ \frac{1}{1 + \gamma} \log q_w(y = 0 \mid \Theta^{(b)}, x^{(b)})
        + \frac{\gamma}{1 + \gamma} \log q_w(y = K \mid \Theta^{(b')}, x^{(b)}) \Big],

where :math:`\Theta^{(b)}` holds ``K`` parameters independent of :math:`x^{(b)}`, and
:math:`\Theta^{(b')}` holds ``K - 1`` of them plus the parameter :math:`\theta^{(b)}` that simulated
:math:`x^{(b)}`.  At the optimum :math:`h_{w^*} = \log r` exactly, so the posterior
:math:`p(\theta) e^{h_w(\theta, x)}` is normalised (eq. 13).  Corner cases:

* ``gamma = 1, K = 1`` is NRE-A (Hermans et al., 2020): binary cross-entropy (eq. 10);
* ``gamma = inf`` is NRE-B (Durkan et al., 2020): K-way softmax cross-entropy (eq. 11), whose optimum
  is only defined up to an x-dependent constant :math:`c(x)` — its normalising constant
  :math:`Z(x) = \mathbb{E}_{p(\theta)}[e^{h_w(\theta, x)}]` can be far from 1.

Contrastive parameters (Section 3 of the paper's training regimes):

* ``contrastive="bootstrap"`` (default, Section 3.3): for each row of a minibatch, ``K`` *other*
  rows' parameters, chosen at random without replacement (so ``K <= B - 1``).  Both loss terms
  share them: term 0 uses all ``K``, term K the first ``K - 1`` and the row's own parameter, so one
  step evaluates the network on ``B (K + 1)`` pairs;
* ``contrastive="prior"`` (Section 3.2): ``K`` fresh prior draws per row and per step;
* :meth:`NRE.fit_online` (Section 3.1): every training batch is a fresh joint draw from the
  simulator (either contrastive option applies on top).

Posterior sampling targets :math:`p(\theta) \exp \sum_j h_w(\theta, x_j)` for one observation or an
iid set ``x_1..x_k`` (tall data): exact rejection from the prior when its acceptance rate is high
enough, slice-sampling MCMC otherwise (:mod:`telescope.samplers.mcmc`).

References:
    Miller, Weniger & Forré (2022), "Contrastive neural ratio estimation", NeurIPS 2022, arXiv:2210.06170.
    Hermans, Begy & Louppe (2020), "Likelihood-free MCMC with amortized approximate ratio estimators",
    ICML 2020, arXiv:1903.04057.
    Durkan, Murray & Papamakarios (2020), "On contrastive learning for likelihood-free inference", ICML 2020,
    arXiv:2002.03712.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..samplers.rejection import _LowAcceptance, rejection_sample  # noqa: F401 - importable from here as before
from ..simulation.simulators import as_simulator, seeded
from ..training import split
from ..utils import check_count
from . import nre_sampling
from .base import Estimator, _check_train_kwargs
from .nre_net import RatioNet, _mi_terms, _other_rows, nre_c_loss

__all__ = ["NRE", "RatioNet", "nre_c_loss", "rejection_sample"]

_CHUNK = 2**16  # pairs per network call at inference


class NRE(Estimator):
    r"""Neural ratio estimation with the contrastive NRE-C loss (NRE-A and NRE-B as corner cases).

    Arguments:
        prior: torch Distribution with event shape ``(d,)`` and a ``log_prob``.
        gamma: odds :math:`\gamma = K p_K / p_0 > 0` of the joint classes; ``math.inf`` is NRE-B.
        K: number of contrastive parameters per observation (``gamma=1, K=1`` is NRE-A).
        contrastive: ``"bootstrap"`` (from the minibatch; needs ``K <= batch - 1``) or ``"prior"``
            (fresh prior draws every step).
        width, blocks, batch_norm, dropout: the residual classifier (the paper's Small NN is width 50 with
            2 blocks, its Large NN width 128 with 3 blocks, both with batch norm).  Batch norm is off by
            default: its statistics mix each joint pair with its K contrastive pairs, and networks without it
            reached a better C2ST, faster (``benchmarks/README_defaults.md``).
        embedding: optional ``nn.Module`` for ``x`` (applied after standardisation).
        device, seed: as for every estimator.

    The defaults (``K=9``, width 50, 2 blocks, no batch norm; ``batch_size=256, lr=1e-3, patience=10``,
    ``ema=0.99``: validation and the returned network use a moving average of the weights, whose window is
    capped at 5 epochs of steps, ``ema_max_epochs=5``) were chosen with ``benchmarks/nre_c.py`` for
    accuracy per CPU second: the moving average gives a better C2ST for more epochs.  When training time
    matters more, cap the epochs and stop after 5 epochs without improvement,
    ``fit(theta, x, max_epochs=60, patience=5)`` (about as accurate as sbi's NRE_C in a fraction of its
    training time; a cosine schedule over 60 epochs was worse).  The measurements are in
    ``benchmarks/README_defaults.md``.  The paper's best C2ST used ``K`` up to half the batch (``K=99``,
    batch 1024), the Large NN and 1000 epochs: larger ``K`` costs ``K + 1`` network calls per simulation
    and step.

    Example:
        >>> import telescope as ts
        >>> task = ts.tasks.get("two_moons")
        >>> theta, x = ts.simulate(task.simulator, task.prior, 500, progress_bar=False)
        >>> est = NRE(task.prior, K=5).fit(theta, x, max_epochs=2, progress_bar=False)
        >>> est.log_ratio(theta[:3], x[:3]).shape
        torch.Size([3])
        >>> est.sample(task.observation(1), 10).shape
        torch.Size([10, 2])
    """

    train_defaults = {"batch_size": 256, "lr": 1e-3, "patience": 10, "ema": 0.99, "ema_max_epochs": 5}
    invalid_default = "refuse"

    def __init__(self, prior, *, gamma: float = 1.0, K: int = 9, contrastive: str = "bootstrap", width: int = 50,
                 blocks: int = 2, batch_norm: bool = False, dropout: float = 0.0, embedding: nn.Module | None = None,
                 device=None, seed: int | None = 0):
        try:
            gamma = float(gamma)
        except (TypeError, ValueError):
            raise TypeError(f"gamma must be a number > 0 (math.inf for NRE-B), got {gamma!r}") from None
        if not gamma > 0:  # also rejects NaN
            raise ValueError(f"gamma must be > 0 (1.0 for NRE-C/NRE-A, math.inf for NRE-B), got {gamma!r}")
        K = check_count("K", K)
        if contrastive not in ("bootstrap", "prior"):
            raise ValueError(f"contrastive must be 'bootstrap' or 'prior', got {contrastive!r}")
        width, blocks = check_count("width", width), check_count("blocks", blocks, 0)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        super().__init__(prior, embedding=embedding, device=device, seed=seed, gamma=gamma, K=K,
                         contrastive=contrastive, width=width, blocks=blocks, batch_norm=bool(batch_norm),
                         dropout=float(dropout))
        self.gamma, self.K, self.contrastive = gamma, K, contrastive
        self.acceptance_rate: float | None = None
        self.method: str | None = None
        self._online: dict | None = None
        self._mi_batches: list[tuple[int, float, float, float]] = []
        self._mi_epochs: dict[str, list[float]] = {"I0": [], "I1": []}

    def __repr__(self) -> str:
        kind = "NRE-B" if math.isinf(self.gamma) else ("NRE-A" if self.gamma == 1 and self.K == 1 else "NRE-C")
        return f"NRE({kind}, gamma={self.gamma}, K={self.K}, contrastive={self.contrastive!r})"

    # -- network and loss -------------------------------------------------------------------
    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        c = self.config
        return RatioNet(theta, x, width=c["width"], blocks=c["blocks"], batch_norm=c["batch_norm"],
                        dropout=c["dropout"], embedding=self.embedding)

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        theta, x = batch["theta"], batch["x"]
        if self._online is not None and net.training:
            theta, x = self._online_batch(theta, x)
        B, K = theta.shape[0], self.K
        # validation: the same contrastive sets every epoch, so validation losses are comparable
        g = None if net.training else torch.Generator().manual_seed(0)
        if self.contrastive == "bootstrap":
            if K > B - 1:
                raise ValueError(f"K={K} contrastive parameters need minibatches of at least K + 1 = {K + 1} rows "
                                 f"when bootstrapped from the batch, got a batch of {B}; lower K, raise batch_size, "
                                 f"or use contrastive='prior'")
            theta_c = theta[_other_rows(B, K, g, theta.device)]  # (B, K, d)
        else:
            with seeded(0) if g is not None else contextlib.nullcontext():
                theta_c = self.prior.sample((B, K)).float().to(theta.device)
        feats = net.embed(x)  # (B, e)
        h = net(torch.cat([theta[:, None], theta_c], 1), feats[:, None].expand(-1, K + 1, -1))  # (B, K + 1)
        if net.training:
            self._flush_mi()
        else:  # validation: the same forward pass gives the MI bounds of eqs. (48), (61) with M = K
            self._mi_batches.append(_mi_terms(h[:, 0].detach(), h[:, 1:].detach()))
        return nre_c_loss(h[:, 0], h[:, 1:], self.gamma)

    def _flush_mi(self) -> None:
        """Close one epoch's validation pass: append its MI bounds to ``history['mi_per_epoch']``."""
        if not self._mi_batches:
            return
        n, s_h, s_logz, s_r = (sum(t[i] for t in self._mi_batches) for i in range(4))
        self._mi_batches = []
        i1 = (s_h - s_r) / n
        self._mi_epochs["I0"].append((s_h - s_logz) / n)
        self._mi_epochs["I1"].append(i1 if math.isfinite(i1) else -math.inf)

    def _online_batch(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Section 3.1: replace a training batch by a fresh joint draw (after the initial simulations are used)."""
        o = self._online
        if o["left"] > 0:  # the first epoch trains on the simulations drawn up front
            o["left"] -= theta.shape[0]
            return theta, x
        B = theta.shape[0]
        th = self.prior.sample((B,)).float()
        xs = o["simulator"](th, seed=int(torch.randint(2**62, ()).item()))
        xs = torch.as_tensor(xs).float()
        if tuple(xs.shape[1:]) != self.x_shape:
            raise ValueError(f"simulator returned x of shape {tuple(xs.shape)}, expected (n, "
                             f"{', '.join(map(str, self.x_shape))}) as the x simulated up front")
        ok = torch.isfinite(xs.reshape(B, -1)).all(-1)
        o["dropped"] += int((~ok).sum())
        o["simulated"] += B
        return th[ok].to(theta.device), xs[ok].to(x.device)

    # -- training -----------------------------------------------------------------------------
    def _check_batches(self, n: int, kwargs: dict) -> None:
        """``K <= B - 1`` for every training and validation batch the train loop will make."""
        if self.contrastive != "bootstrap":
            return
        vf = kwargs.get("val_fraction", 0.1)
        tr, va = split({"i": torch.arange(n)}, vf, torch.Generator().manual_seed(0))
        n_tr, n_va = tr["i"].numel(), va["i"].numel()
        bs = kwargs.get("batch_size")
        bs = min(512, max(50, n_tr // 20)) if bs is None else check_count("batch_size", bs)  # train()'s auto rule
        smallest_train = n_tr // max(1, math.ceil(n_tr / bs))
        smallest_val = n_va // max(1, math.ceil(n_va / 4096)) if n_va else None
        if self.K > smallest_train - 1:
            raise ValueError(f"K={self.K} is too large: contrastive parameters are bootstrapped from minibatches "
                             f"of about {smallest_train} rows (batch_size={bs}, {n_tr} training simulations), "
                             f"so K must be <= {smallest_train - 1}; lower K, raise batch_size, or use "
                             f"contrastive='prior'")
        if smallest_val is not None and self.K > smallest_val - 1:
            raise ValueError(f"K={self.K} is too large for the validation split of {n_va} simulations "
                             f"(val_fraction={vf}); K must be <= {smallest_val - 1}: lower K, simulate more, "
                             f"or raise val_fraction")

    def fit_store(self, store, *, mi_samples: int = 100, invalid: str | None = None, **train_kwargs) -> NRE:
        """:meth:`Estimator.fit_store` (train from a store without loading it), with the NRE extras of
        :meth:`fit`: per-epoch MI bounds, and ``history["mi"]`` on up to 10 000 validation rows."""
        kwargs = {**self.train_defaults, **train_kwargs}
        if kwargs.get("seed", self.seed) is None:
            kwargs["seed"] = int(torch.randint(2**62, ()).item())
        seed = kwargs.get("seed", self.seed)
        self._mi_batches, self._mi_epochs = [], {"I0": [], "I1": []}
        super().fit_store(store, invalid=invalid, **kwargs)
        self._flush_mi()
        if self._mi_epochs["I0"]:
            self.history["mi_per_epoch"] = self._mi_epochs
        self.history["regime"] = "fixed" if self.contrastive == "bootstrap" else "prior"
        theta_v, x_v = self._store_val
        if mi_samples and theta_v.shape[0] > 0:
            from ..diagnostics import mutual_information

            self.history["mi"] = mutual_information(self, theta_v[:10_000].clone(), x_v[:10_000].clone(),
                                                    n_contrast=check_count("mi_samples", mi_samples),
                                                    seed=int(seed))
        return self

    def fit(self, theta, x, *, mi_samples: int = 100, invalid: str | None = None, **train_kwargs) -> NRE:
        r"""Train on simulations ``theta (n, d)``, ``x (n, *event)``; returns ``self``.

        Keyword arguments go to :func:`telescope.training.train`.  After training, the mutual-information
        bounds :math:`\hat I^{(0)}`, :math:`\hat I^{(1)}` (Miller et al., 2022, eqs. 48, 61) are computed on the
        validation split with ``mi_samples`` prior draws per observation and stored in
        ``history["mi"]`` (``mi_samples=0`` skips them).  Compare them across estimators for model
        selection (:func:`telescope.diagnostics.select`).

        During training, every validation pass also logs both bounds, from the same forward pass as the
        validation loss, with the ``K`` contrastive parameters as the ``M = K`` prior draws:
        ``history["mi_per_epoch"] = {"I0": [...], "I1": [...]}``, one value per epoch.  With small ``K``,
        :math:`\hat I^{(0)}` is biased upwards (the log of a mean of ``K`` terms underestimates
        :math:`\log Z`), so use ``history["mi"]`` to compare estimators trained with different ``K``.

        Failed simulations (NaN/inf in ``x``) are refused by default: dropping them conditions the ratio on
        the simulation succeeding and biases the posterior; ``invalid="drop"`` drops them with a warning.
        """
        _check_train_kwargs(train_kwargs)
        theta, x = self._prepare(theta, x, invalid)
        kwargs = {**self.train_defaults, **train_kwargs}
        if kwargs.get("seed", self.seed) is None:
            kwargs["seed"] = int(torch.randint(2**62, ()).item())
        seed = kwargs.get("seed", self.seed)
        self._check_batches(theta.shape[0], kwargs)
        self._mi_batches, self._mi_epochs = [], {"I0": [], "I1": []}
        super().fit(theta, x, **kwargs)
        self._flush_mi()
        if self._mi_epochs["I0"]:
            self.history["mi_per_epoch"] = self._mi_epochs
        self.history["regime"] = ("online" if self._online is not None else
                                  "fixed" if self.contrastive == "bootstrap" else "prior")
        vf = kwargs.get("val_fraction", 0.1)
        if mi_samples and vf > 0:
            from ..diagnostics import mutual_information

            # the validation split of train(): same function, same seed
            _, val = split({"theta": theta, "x": x}, vf, torch.Generator().manual_seed(int(seed)))
            if val["theta"].shape[0] > 0:
                self.history["mi"] = mutual_information(self, val["theta"], val["x"],
                                                        n_contrast=check_count("mi_samples", mi_samples),
                                                        seed=int(seed))
        return self

    def fit_online(self, simulator, n_per_epoch: int = 10_000, *, simulation_seed: int = 0,
                   mi_samples: int = 100, **train_kwargs) -> NRE:
        """Train with unlimited simulations (Miller et al., 2022, Section 3.1): every training batch is a fresh joint draw.

        ``n_per_epoch`` pairs are simulated up front: a ``val_fraction`` of them is the fixed validation set
        (early stopping, mutual-information bounds), the rest is the first epoch; every later training batch
        is drawn anew from ``prior`` and ``simulator``.  An epoch is ``n_per_epoch * (1 - val_fraction)``
        training pairs.  ``history["simulations"]`` counts all simulations used.
        """
        from ..simulation.simulate import simulate

        n_per_epoch = check_count("n_per_epoch", n_per_epoch, 2)
        sim = as_simulator(simulator)
        theta, x = simulate(sim, self.prior, n_per_epoch, seed=simulation_seed, progress_bar=False)
        ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)
        vf = {**self.train_defaults, **train_kwargs}.get("val_fraction", 0.1)
        tr, _ = split({"i": torch.arange(int(ok.sum()))}, vf, torch.Generator())
        self._online = {"simulator": sim, "left": tr["i"].numel(), "simulated": 0, "dropped": 0}
        try:
            self.fit(theta, x, mi_samples=mi_samples, **train_kwargs)
            self.history["simulations"] = n_per_epoch + self._online["simulated"]
            self.history["dropped"] = self._online["dropped"]
        finally:
            self._online = None
        return self

    # -- ratios and densities -----------------------------------------------------------------
    def _features(self, x: Tensor) -> Tensor:
        net = self._trained()
        return torch.cat([net.embed(c) for c in x.split(_CHUNK)])

    @torch.no_grad()
    def log_ratio(self, theta, x, *, grid: bool = False) -> Tensor:
        r"""Estimated :math:`\log r(x \mid \theta) = h_w(\theta, x)`.

        Arguments:
            theta: ``(n, d)`` or ``(d,)``.
            x: ``(n, *event)`` or one observation ``(*event)``; a single row broadcasts against the other.
            grid: evaluate every pair instead: ``theta (p, d)``, ``x (m, *event)`` -> ``(p, m)``.

        Returns:
            ``(n,)`` log ratios (``(p, m)`` with ``grid=True``).
        """
        net = self._trained().eval()
        theta = self._check_theta(theta).to(self.device)
        x = self._check_x(x).to(self.device)
        feats = self._features(x)
        if grid:
            return self._grid(theta, feats).cpu()
        if theta.shape[0] != x.shape[0] and 1 not in (theta.shape[0], x.shape[0]):
            raise ValueError(f"theta and x must have the same number of rows (or one of them one row), got "
                             f"{theta.shape[0]} and {x.shape[0]}; use grid=True for all pairs")
        n = max(theta.shape[0], x.shape[0])
        theta, feats = theta.expand(n, -1), feats.expand(n, -1)
        return torch.cat([net(t, f) for t, f in zip(theta.split(_CHUNK), feats.split(_CHUNK))]).cpu()

    def _grid(self, theta: Tensor, feats: Tensor) -> Tensor:
        """``h`` for all pairs of ``theta (p, d)`` and embedded ``feats (m, e)``: ``(p, m)`` (on device)."""
        net = self._trained()
        m = feats.shape[0]
        step = max(1, _CHUNK // m)
        return torch.cat([net(t[:, None].expand(-1, m, -1), feats[None].expand(t.shape[0], -1, -1))
                          for t in theta.split(step)])

    def _x_set(self, x_o) -> Tensor:
        """One observation ``(*event)`` or an iid set ``(k, *event)`` as ``(k, *event)``."""
        return self._check_x(x_o, "x_o")

    def _log_weight(self, x_set: Tensor) -> Callable[[Tensor], Tensor]:
        """``theta (p, d) -> sum_j h(theta, x_j)`` ``(p,)`` for an iid set of observations."""
        self._trained().eval()
        feats = self._features(x_set.to(self.device))

        @torch.no_grad()
        def log_w(theta: Tensor) -> Tensor:
            return self._grid(theta.to(self.device), feats).sum(-1)

        return log_w

    @torch.no_grad()
    def log_prob(self, theta, x_o) -> Tensor:
        """Unnormalised log posterior ``log p(theta) + sum_j h(theta, x_j)``: ``(n,)``.

        ``x_o`` is one observation or an iid set ``(k, *event)``.  For one observation and a well-trained
        NRE-C the normalising constant is close to 1 (check with :func:`telescope.diagnostics.log_normalizer`).
        """
        theta = self._check_theta(theta)
        lw = self._log_weight(self._x_set(x_o))(theta).cpu()
        return self.prior.log_prob(theta) + lw

    @torch.no_grad()
    def log_prob_batched(self, theta: Tensor, x) -> Tensor:
        """Unnormalised log posterior for ``theta (n, m, d)`` and single observations ``x (m, *event)``: ``(n, m)``."""
        net = self._trained().eval()
        x = self._check_x(x).to(self.device)
        theta = torch.as_tensor(theta, dtype=torch.float32)
        if theta.dim() != 3 or theta.shape[1:] != (x.shape[0], self.dim_theta):
            raise ValueError(f"theta must have shape (n, {x.shape[0]}, {self.dim_theta}), got {tuple(theta.shape)}")
        feats = self._features(x)
        step = max(1, _CHUNK // x.shape[0])
        h = torch.cat([net(t.to(self.device), feats.expand(t.shape[0], -1, -1)) for t in theta.split(step)])
        return self.prior.log_prob(theta) + h.cpu()

    # -- sampling -------------------------------------------------------------------------------
    def _auto_min_acceptance(self, n: int, chains: int, warmup: int, thin: int) -> float:
        """Acceptance rate below which MCMC is expected to be cheaper than rejection.

        Rejection needs about ``n / rate`` network calls per observation, in large batches; slice sampling about
        ``chains * (warmup + n / chains * thin) * d * 8`` in small ones, counted 10 times as expensive.
        """
        sweeps = warmup + math.ceil(n / chains) * thin
        return n / (80.0 * chains * sweeps * self.dim_theta)

    def sample(self, x_o, n: int, *, method: str = "auto", min_acceptance: float | None = None, chunk: int = 20_000,
               chains: int = 100, warmup: int = 100, thin: int = 2, seed: int | None = None,
               max_time: float = 600.0, progress_bar: bool = False,
               return_chains: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``n`` posterior samples ``(n, d)`` for one observation ``(*event)`` or an iid set ``(k, *event)``.

        Arguments:
            method: ``"rejection"`` (exact, proposals from the prior), ``"mcmc"`` (slice sampling from
                SIR-initialised chains), or ``"auto"``: rejection when the acceptance rate estimated on the
                first ``chunk`` prior draws is at least ``min_acceptance``, MCMC otherwise.
            min_acceptance: default: the rate below which MCMC is expected to be cheaper (about 0.002 for
                ``n = 10_000`` in 2 dimensions with the default chains).
            chains, warmup, thin: MCMC settings.
            seed: seeds the sampler.
            max_time: rejection sampling gives up after this many seconds.

        The method used and the acceptance rate are stored in ``self.method`` and ``self.acceptance_rate``.
        After MCMC the chains ``(chains, ceil(n / chains), d)`` are in ``self.chains`` and their R-hat and
        bulk/tail ESS in ``self.mcmc_diagnostics`` (:mod:`telescope.samplers.convergence`); ``return_chains=True``
        uses MCMC, returns ``(samples, chains)`` and warns when the check fails.
        """
        return nre_sampling.sample(self, x_o, n, method=method, min_acceptance=min_acceptance, chunk=chunk,
                                   chains=chains, warmup=warmup, thin=thin, seed=seed, max_time=max_time,
                                   progress_bar=progress_bar, return_chains=return_chains)

    @torch.no_grad()
    def sample_batched(self, x, n: int, *, method: str = "auto", min_acceptance: float | None = None,
                       chunk: int = 10_000, chains: int = 20, warmup: int = 100, thin: int = 2, seed: int | None = None,
                       max_time: float = 600.0) -> Tensor:
        """``n`` samples for each of ``m`` single observations ``x (m, *event)``: ``(n, m, d)``.

        ``method`` as in :meth:`sample`, plus ``"sir"`` (sampling-importance-resampling of ``chunk`` prior
        draws: fast, approximate).  Rejection shares one stream of prior draws between observations; MCMC
        runs all ``m * chains`` slice-sampling chains at once.
        """
        return nre_sampling.sample_batched(self, x, n, method=method, min_acceptance=min_acceptance, chunk=chunk,
                                           chains=chains, warmup=warmup, thin=thin, seed=seed,
                                           max_time=max_time)
