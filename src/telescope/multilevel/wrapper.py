r"""Multilevel estimators: any Monte Carlo-loss estimator trained with the MLMC loss (Hikida et al., 2025).

``Multilevel(estimator).fit(levels)`` trains ``estimator``'s network on the output of
:func:`telescope.simulate_levels` with the MLMC loss of eq. (2) and the gradient adjustment of
Algorithm 1; afterwards the estimator is used as usual (``sample``, ``log_prob``, ..., reached through
the wrapper).  ``fit(ladder, budget=C)`` also chooses the allocation and simulates
(:mod:`telescope.multilevel.budget`).

**Staged training (default).**  Minimised from scratch with a few expensive pairs, eq. (2) over-fits
them: the loss is not bounded below (it rewards making the pairs' cheap members improbable), and its
validation estimate on a handful of held-out pairs is so noisy that early stopping picks a lucky epoch
(measured in ``benchmarks/README_multilevel.md``).  So by default:

1. one train/validation split of every level (pairs stay whole) serves all stages;
2. **pre-training** on every cheap simulation (level 0 and the cheap members of level 1's pairs) with
   the ordinary loss (the transfer-learning idea of Krouglova et al. 2025, arXiv 2502.08416); with more
   than two levels, then on every simulation of each intermediate fidelity in turn, up the ladder;
3. **fine-tuning** with the multilevel loss — eq. (2), or its control-variate form with coefficients
   ``weights`` (:mod:`telescope.multilevel.weights`) — and Algorithm 1;
4. **validation** by the multilevel estimate of the held-out high-fidelity loss plus ``val_se`` standard
   errors (over-fitting shows as a growing spread of the held-out corrections), with the pre-trained
   network itself as the first candidate, so fine-tuning that does not help is undone;
5. a **safeguard** (:meth:`_safeguard`): the same network trained on the top level's expensive
   simulations alone, and fine-tuned on them from the pre-trained weights, are compared out of sample
   (:mod:`telescope.multilevel.safeguard`), with a warning and the numbers when the multilevel one is not
   the best;
6. an **ensemble** (``ensemble=True``, NPE and NLE): the estimator's network becomes the mixture of the
   multilevel and transfer networks (and the expensive-only one where it wins clearly), with weights
   stacked on the held-out expensive simulations
   (:mod:`telescope.multilevel.ensemble`).  Each network over-fits the few expensive simulations
   differently, and the mixture's held-out loss is below the weighted mean of theirs; where the cheap
   level misleads, the weights move to the networks trained on expensive simulations, so cheap
   simulations do not make the estimator worse.  With ``ensemble=False`` the safeguard instead switches
   to a rival that wins by more than ``switch_se`` standard errors (``safeguard="fallback"``);
7. a member trained on **lifted simulations** (``couple=True``): conditional flows learned on each level's
   pairs carry every cheaper simulation up to the top fidelity (:mod:`telescope.multilevel.coupling`);
8. **cross-fitting** (``folds=5``): steps 3, 5 and 7 run once per fold of every level, so every expensive
   simulation trains four fifths of the networks and judges the rest; the comparisons and mixture weights
   use all of them out of fold, and the mixture holds every fold's networks
   (:mod:`telescope.multilevel.crossfit`; one split as above when a level has fewer than
   ``2 * folds`` pairs).

``staged=False`` is the procedure of Hikida et al. (2025) exactly (eq. 2 from scratch, the split and early stopping of
:func:`telescope.train.train`).  :class:`MultilevelNLE` and :class:`MultilevelNPE` are the paper's
ML-NLE and ML-NPE.  It works for every estimator whose loss is a Monte Carlo average over
simulations — NLE, NPE, and equally ratio (NRE) or score (NPSE) estimators, whose loss randomness
(contrastive sets, diffusion times and noise) is replayed identically for the two members of a pair.

* **Shared standardisation.**  The network is built once on all levels' simulations pooled, so its
  standardisation statistics are ONE statistic applied to every level — never each tensor with its
  own mean and scale, which would change the differences :math:`f^l - f^{l-1}` and break the coupling.
* **Minibatches.**  Every epoch has the same number of steps in each level (:func:`telescope.train.train`);
  a level with fewer pairs than steps has empty batches in some steps.  Each level's term is its sum
  over the batch divided by its *expected* batch size, so the epoch's gradient is exactly the
  gradient of eq. (2) whatever the batch sizes.
* **Checks.**  Pairs whose parameters differ, levels whose ``x`` shapes differ, levels without any
  valid simulation: errors.  ``n_l`` not decreasing, weakly or negatively correlated pairs: warnings.
  Failed simulations (NaN/inf, in either member of a pair) are dropped with a warning.

References:
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
    Krouglova et al. (2025), "Multifidelity simulation-based inference for computationally expensive
    simulators", arXiv:2502.08416.

Example:
    >>> import torch, telescope as ts
    >>> from telescope.multilevel import MultilevelNLE
    >>> noise = lambda n, g: torch.randn(n, 1, generator=g)
    >>> ladder = ts.FidelityLadder([lambda th, u: th + 1.1 * u, lambda th, u: th + u], noise=noise, costs=[1, 10])
    >>> prior = ts.BoxUniform([-1.0], [1.0])
    >>> levels = ts.simulate_levels(ladder, prior, n=[400, 40], progress_bar=False)
    >>> ml = MultilevelNLE(prior, transforms=1, hidden=(16,)).fit(levels, max_epochs=3, progress_bar=False)
    >>> ml.log_likelihood(torch.zeros(1, 1), torch.zeros(1, 1)).shape
    torch.Size([1, 1])
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..estimators.base import Estimator
from ..estimators.nle import NLE
from ..estimators.npe import NPE
from ..priors import in_support
from ..simulation.ladder import FidelityLadder
from ..simulation.simulators import seeded
from ..training import train
from .adjust import GradientAdjustment
from .budget import plan_and_fit
from .coupling import train_coupled
from .crossfit import crossfit
from .ensemble import Mixture, stack
from .levels import Level, as_levels, at_fidelity, cheap, check_coupling, pair_members, pooled, split_level
from .loss import mlmc_terms
from .persist import load_multilevel, save_multilevel
from .plain import fit_plain
from .safeguard import compare, pair_losses, per_sample_losses, verdict
from .weights import coefficients, weighted_mean

__all__ = ["Multilevel", "MultilevelNLE", "MultilevelNPE"]

#: keyword arguments of :class:`Multilevel` (the rest go to the wrapped estimator)
_ML_OPTIONS = ("rescale", "project", "eps", "min_correlation", "pretrain", "weights", "safeguard", "staged",
                "val_se", "finetune_lr", "ensemble", "folds", "couple")

_TRAIN_DEFAULTS = {k: v.default for k, v in inspect.signature(train).parameters.items()
                   if v.default is not inspect.Parameter.empty}


class Multilevel:
    r"""Train any Monte Carlo-loss estimator with the multilevel loss (Hikida et al., 2025, eq. 2 and Algorithm 1).

    Arguments:
        estimator: an untrained telescope estimator instance, e.g. ``NLE(prior)``, ``NPE(prior)``, ``NRE(prior)``.
        rescale: Algorithm 1's rescaling of each :math:`\zeta^{l-1,-}` to the norm of :math:`\zeta^{l,+}`.
        project: Algorithm 1's projection of :math:`\nabla h_0` and :math:`\nabla h_c` when they conflict.
        eps: the :math:`\epsilon` of Algorithm 1.
        min_correlation: warn when a level's pairs are less correlated than this (MLMC cannot help then).
        pretrain: pre-train on the cheap level before the multilevel fine-tuning (staged training).
        weights: ``"mlmc"`` (eq. 2, default), ``"auto"`` (control-variate coefficients estimated from the
            pairs at the pre-trained network) or a list ``[a_0, ..., a_(L-1)]``.
        safeguard: ``"fallback"`` (train the transfer and expensive-only networks, compare them with the
            multilevel one on held-out data and warn; without ``ensemble``, keep the best), ``"warn"`` (compare
            and warn only) or ``False`` (neither, and no ensemble).
        staged: ``False`` for the training of Hikida et al. (2025) (no pre-training, split and stopping inside ``train``).
        val_se: standard errors added to the held-out multilevel loss in the stopping criterion.
        finetune_lr: factor on the learning rate of the fine-tuning stage.
        ensemble: with the safeguard's networks trained (NPE, NLE), end with their stacked mixture
            (:mod:`telescope.multilevel.ensemble`) instead of one network.
        folds: cross-fit the fine-tuning and the mixture's members over this many folds (1: one split).
        couple: add the member trained on cheap simulations lifted to the top fidelity.

    After :meth:`fit`, attributes and methods of the estimator (``sample``, ``log_prob``, ``net``,
    ``history``, ...) are reached through the wrapper; ``history["multilevel"]`` records the level
    sizes, pair correlations, pre-training, weights, the safeguard's comparisons and statistics of the
    gradient adjustment.

    Supported estimators: every estimator whose ``_loss(net, batch)`` is a Monte Carlo mean over the
    batch's simulations.  NLE and NPE also give per-simulation losses (``loss_terms``), so all terms of
    a step come from one forward pass.  Others (NRE, NPSE) are evaluated once per pair member with the
    random state replayed, so contrastive sets, diffusion times and noises are the same for ``x_l`` and
    ``x_{l-1}``; NRE with ``contrastive="bootstrap"`` needs every level's batch to hold more than ``K``
    pairs — use ``contrastive="prior"`` when a level has few pairs.  ``estimator.fit``-specific extras
    (e.g. NRE's mutual-information bounds) are not computed.
    """

    #: standard errors by which a rival must beat the multilevel network before the safeguard switches to it
    switch_se: float = 1.0

    #: staged fit with more than two levels: Algorithm 1 between the top correction and the rest
    adjust_top: bool = False


    #: train() settings for multilevel fits (over the estimator's own defaults); fit(**kwargs) overrides
    train_defaults: dict[str, Any] = {}

    def __init__(self, estimator: Estimator, *, rescale: bool = True, project: bool = True, eps: float = 1e-8,
                 min_correlation: float = 0.1, pretrain: bool = True, weights="mlmc", safeguard="fallback",
                 staged: bool = True, val_se: float = 1.0, finetune_lr: float = 1.0, ensemble: bool = True,
                 folds: int = 5, couple: bool = True):
        if isinstance(estimator, type):
            raise TypeError(f"estimator must be an estimator instance such as {estimator.__name__}(prior), "
                            f"got the class {estimator.__name__}")
        if not isinstance(estimator, Estimator):
            raise TypeError(f"estimator must be a telescope Estimator (NLE, NPE, NRE, NPSE, ...), "
                            f"got {type(estimator).__name__}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.estimator = estimator
        self.rescale, self.project, self.eps = bool(rescale), bool(project), float(eps)
        self.min_correlation = float(min_correlation)
        if not (weights in ("auto", "mlmc") or isinstance(weights, (list, tuple))):
            raise ValueError(f"weights must be 'auto', 'mlmc' or a list of coefficients [a_0, ..., a_(L-1)], "
                             f"got {weights!r}")
        if safeguard not in (False, "warn", "fallback"):
            raise ValueError(f"safeguard must be 'fallback', 'warn' or False, got {safeguard!r}")
        self.pretrain, self.weights, self.safeguard, self.staged = bool(pretrain), weights, safeguard, bool(staged)
        self.val_se, self.finetune_lr, self.ensemble = float(val_se), float(finetune_lr), bool(ensemble)
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
            raise ValueError(f"folds must be an integer >= 1, got {folds!r}")
        self.folds, self.couple = folds, bool(couple)
        self.allocation: dict | None = None
        self.adjustment: GradientAdjustment | None = None

    def __getattr__(self, name: str):
        if name.startswith("__") or "estimator" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["estimator"], name)

    def __repr__(self) -> str:
        return (f"Multilevel({type(self.estimator).__name__}, rescale={self.rescale}, project={self.project})")

    # -- training -------------------------------------------------------------------------------
    def _check_levels(self, levels) -> list[Level]:
        est = self.estimator
        lv = as_levels(levels, est.dim_theta, stacklevel=4)
        for l, level in enumerate(lv):
            inside = in_support(est.prior, level["theta"])
            if not inside.all():
                i = int(torch.nonzero(~inside)[0])
                raise ValueError(f"levels[{l}] theta has {int((~inside).sum())} rows outside the prior support "
                                 f"(first: row {i}, {level['theta'][i].tolist()}); expected draws from the prior")
        if sum(level.n for level in lv) < 2:
            raise ValueError("need at least 2 valid simulations in all to train")
        return lv

    def _groups(self, lv: list[Level]) -> list[dict[str, Tensor]]:
        est = self.estimator
        groups = [est.training_data(lv[0]["theta"], lv[0]["x"])]
        for level in lv[1:]:
            hi = est.training_data(level["theta"], level["x"])
            lo = est.training_data(level["theta"], level["x_low"])
            groups.append({**{f"hi/{k}": v for k, v in hi.items()}, **{f"lo/{k}": v for k, v in lo.items()}})
        return groups

    def options(self) -> dict[str, Any]:
        """The multilevel settings (keyword arguments of the constructor other than the estimator)."""
        return {k: getattr(self, k) for k in _ML_OPTIONS}

    def fit(self, levels, budget: float | None = None, *, seed: int = 0, store=None, pilot: float = 0.15,
            **train_kwargs) -> Multilevel:
        """Train on seed-matched level data, or on a ladder and a budget; returns ``self``.

        Arguments:
            levels: ``[(theta_0, x_0), (theta_1, x_1, x_0'), ..., (theta_L, x_L, x_{L-1}')]`` from
                :func:`telescope.simulate_levels`, or a :class:`telescope.FidelityLadder` with ``budget``.
            budget: total simulation cost (the ladder's cost units) to spend: a pilot run, Theorem 2's
                allocation (possibly all on the expensive level), simulation and training — see
                :mod:`telescope.multilevel.budget`; the plan is recorded as ``self.allocation``.
            seed, store, pilot: with ``budget``: the campaigns' seed, a store folder (sub-folders ``pilot/``,
                ``levels/``, ``high/``; a crash loses nothing) and the budget share of the pilot.
            train_kwargs: for :func:`telescope.train.train` (``max_epochs``, ``batch_size``, ``lr``,
                ``val_fraction``, ``patience``, ``max_time``, ``progress_bar``, ...).  ``batch_size`` is the
                level-0 batch; every level gets the same number of steps per epoch.
        """
        if isinstance(levels, FidelityLadder) or budget is not None:
            if budget is None:
                raise ValueError("fit(ladder) needs budget=: the total simulation cost to spend, in the ladder's "
                                 "cost units")
            return plan_and_fit(self, levels, budget, seed=seed, store=store, pilot=pilot, **train_kwargs)
        est = self.estimator
        lv = self._check_levels(levels)
        correlations = check_coupling(lv, self.min_correlation, stacklevel=3)
        theta_all, x_all = pooled(lv)
        est.x_shape = tuple(x_all.shape[1:])
        seed = est.seed if est.seed is not None else int(torch.randint(2**62, ()).item())
        with seeded(seed):
            net = est.build_net(theta_all, x_all).to(est.device)  # ONE standardisation for every level
        est.net = net
        kwargs = {"seed": est.seed, "device": est.device, "desc": f"train ML-{type(est).__name__}",
                  **est.train_defaults, **self.train_defaults, **train_kwargs}
        vf = float(kwargs.pop("val_fraction", _TRAIN_DEFAULTS["val_fraction"]))
        L = len(lv) - 1
        per_sample = callable(est.loss_terms)
        if not self.staged or L == 0:
            return self._fit_plain(lv, net, kwargs, vf, correlations, per_sample)
        gen = torch.Generator().manual_seed(int(seed))
        tr, va = zip(*(split_level(level, vf, gen) for level in lv))
        tr, va = list(tr), list(va)
        self._held_out = va  # the validation split, for diagnostics (benchmarks/ml_ensemble.py)
        record: dict[str, Any] = {"n": [level.n for level in lv], "n_train": [level.n for level in tr],
                                  "n_val": [level.n for level in va], "pair_correlations": correlations}
        init = copy.deepcopy(net.state_dict())
        if self.pretrain:
            record.update(self._pretrain(net, tr, va, kwargs, vf))
        pre = copy.deepcopy(net.state_dict())
        a = [1.0] * L
        if isinstance(self.weights, (list, tuple)):
            a = [float(c) for c in self.weights]
        elif self.weights == "auto" and per_sample:
            a, info = coefficients(pair_losses(est, net, tr), [level.n for level in tr], stacklevel=3)
            record["weights_info"] = info
        record["weights"] = a
        if self._crossfits(net, per_sample, lv):
            history = crossfit(self, net, init, pre, lv, gen, kwargs, vf, a, record)
            record.update(rescale=self.rescale, project=self.project)
            history["multilevel"] = record
            est.history = history
            return self
        history = self._finetune(net, tr, va, kwargs, vf, a, per_sample)
        record["adjustment"] = self.adjustment.stats if self.adjustment is not None else None
        if self.safeguard and per_sample:
            mix = self.ensemble and self._mixable(net)
            record["safeguard"], rivals = self._safeguard(net, init, pre, tr, va, kwargs, vf, switch=not mix)
            if mix:
                clear = {k: v["difference"] > self.switch_se * v["se"] for k, v in record["safeguard"].items()
                         if isinstance(v, dict)}
                record["ensemble"] = self._mix(net, rivals, va[-1], clear)
        record.update(rescale=self.rescale, project=self.project)
        history["multilevel"] = record
        est.history = history
        return self

    def _finetune(self, net: nn.Module, tr: list[Level], va: list[Level], kwargs: dict, vf: float,
                  a: Sequence[float], per_sample: bool) -> dict:
        """Fine-tune ``net`` with the (weighted) multilevel loss and Algorithm 1; returns the training history."""
        val_fn = (self._val_fn(a) if per_sample and self.val_se
                  else self._loss_fn(lv_sizes=[level.n for level in va], a=a, per_sample=per_sample))
        self.adjustment = None
        if self.rescale or self.project:
            self.adjustment = GradientAdjustment(rescale=self.rescale, project=self.project, eps=self.eps,
                                                 batched=per_sample, top=self.adjust_top and self.pretrain)
        loss_fn = self._loss_fn(lv_sizes=[level.n for level in tr], a=a, per_sample=per_sample)
        return train(net, loss_fn, self._groups(tr), val_data=self._groups(va), val_fraction=vf,
                     val_loss_fn=val_fn, backward=self.adjustment, val_initial=self.pretrain,
                     **{**kwargs, "lr": kwargs.get("lr", 1e-3) * self.finetune_lr})

    def _train_rival(self, net: nn.Module, state: dict, from_pre: bool, top_tr: Level, top_va: Level, kwargs: dict,
                     vf: float, name: str) -> nn.Module:
        """A copy of ``net`` from ``state`` trained and stopped on the top level's expensive members alone."""
        est = self.estimator
        rival = copy.deepcopy(net)
        rival.load_state_dict(state)
        # validated like a single-level fit: on the held-out expensive members (the multilevel estimate of
        # the held-out loss mixes in cheap simulations that a network trained without them fits badly)
        train(rival, est.loss, est.training_data(top_tr["theta"], top_tr["x"]),
              val_data=est.training_data(top_va["theta"], top_va["x"]), val_fraction=vf, val_initial=from_pre,
              **{**kwargs, "desc": f"safeguard: {name}"})
        return rival

    def _pretrain(self, net: nn.Module, tr: list[Level], va: list[Level], kwargs: dict, vf: float) -> dict:
        """Train ``net`` on every cheap simulation, then (more than two levels) on each intermediate fidelity in
        turn, up the ladder; returns what to record."""
        est, name = self.estimator, type(self.estimator).__name__
        h = train(net, est.loss, est.training_data(*cheap(tr)), val_data=est.training_data(*cheap(va)), val_fraction=vf,
                  **{**kwargs, "desc": f"pre-train ML-{name} on level 0"})
        out = {"pretrain": {"epochs": h["epochs"], "best_epoch": h["best_epoch"], "seconds": h["seconds"]}}
        for l in range(1, len(tr) - 1):
            h = train(net, est.loss, est.training_data(*at_fidelity(tr, l)), val_data=est.training_data(*at_fidelity(va, l)),
                      val_fraction=vf, val_initial=True, **{**kwargs, "desc": f"pre-train ML-{name} on fidelity {l}"})
            out[f"pretrain_{l}"] = {"epochs": h["epochs"], "best_epoch": h["best_epoch"]}
        return out

    def _loss_fn(self, lv_sizes: Sequence[int], a: Sequence[float], per_sample: bool):
        """``loss_fn(net, groups)``: the weighted MLMC loss of one pass over groups of these sizes."""
        est = self.estimator

        def loss_fn(module: nn.Module, batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
            batches: list[Any] = [batch[0]]
            for g in batch[1:]:
                batches.append(pair_members(g))
            fn = (lambda b: est.loss_terms(module, b)) if per_sample else (lambda b: est.loss(module, b))
            rows = [next(iter(g.values())).shape[0] for g in batch]
            big = max(range(len(lv_sizes)), key=lambda i: lv_sizes[i])
            per_row = max(rows[big], 1) / lv_sizes[big]
            w = [1.0 / max(n * per_row, 1e-12) for n in lv_sizes]
            return mlmc_terms(fn, batches, w, per_sample=per_sample, coefficients=a)
        return loss_fn

    def _val_fn(self, a: Sequence[float]):
        """Validation criterion: the weighted MLMC estimate of the held-out loss plus ``val_se`` standard errors.

        Over-fitting the few pairs shows first as a growing spread of ``f^l - a f^(l-1)`` over held-out
        pairs; penalising the standard error keeps a noisy minimum of a handful of pairs from being chosen.
        """
        est, c = self.estimator, self.val_se

        def val_fn(module: nn.Module, batch: list[dict[str, Tensor]]) -> Tensor:
            f0 = est.loss_terms(module, batch[0])
            pairs = [tuple(est.loss_terms(module, m) for m in pair_members(g)) for g in batch[1:]]
            value, se = weighted_mean(f0, pairs, a)
            return torch.tensor(value + c * se)
        return val_fn

    def _crossfits(self, net: nn.Module, per_sample: bool, lv: list[Level]) -> bool:
        """Cross-fit (:mod:`telescope.multilevel.crossfit`) when asked and possible: an ensemble of NPE/NLE networks
        and at least two simulations (pairs) of every level per fold."""
        return (self.folds > 1 and bool(self.safeguard) and per_sample and self.ensemble and self._mixable(net)
                and min(level.n for level in lv) >= 2 * self.folds)

    def _mixable(self, net: nn.Module) -> bool:
        """A mixture needs per-simulation losses that are negative log densities: NPE and NLE networks."""
        return isinstance(self.estimator, (NPE, NLE)) and all(callable(getattr(net, a, None))
                                                              for a in ("log_prob", "sample"))

    def _mix(self, net: nn.Module, rivals: dict[str, nn.Module], held_out: Level, clear: dict[str, bool]) -> dict:
        """Replace the estimator's network by the stacked mixture of the multilevel network and the rivals.

        Members: the multilevel and transfer networks (both learn from the cheap simulations), and the
        network trained on the expensive simulations alone only where it beats the multilevel one clearly
        (``clear``: by more than ``switch_se`` standard errors, a misleading cheap level).  It was stopped on
        the same held-out simulations the weights are fitted on, so its held-out likelihood flatters it;
        admitting it always gives it weight it does not earn (`benchmarks/README_multilevel.md`).
        The weights maximise the log-likelihood of the held-out expensive simulations of the top level
        (:func:`telescope.multilevel.ensemble.stack`, with one Dirichlet pseudo-point per member).
        """
        est = self.estimator
        rivals = {k: v for k, v in rivals.items() if k in ("transfer", "coupled") or clear.get(k)}
        names = ["multilevel", *rivals]
        nets = [net, *rivals.values()]
        if len(nets) == 1:
            return {"members": names, "weights": [1.0], "held_out": held_out.n}
        lp = torch.stack([-per_sample_losses(est, m, held_out["theta"], held_out["x"]) for m in nets], dim=1)
        w = stack(lp)
        est.net = Mixture(nets, w).to(est.device)
        return {"members": names, "weights": w.tolist(), "held_out": int(lp.shape[0])}

    def _safeguard(self, net, init, pre, tr, va, kwargs, vf, switch: bool = True) -> tuple[dict, dict]:
        """Compare the multilevel network out of sample with two alternatives trained on the same split.

        The alternatives are trained and stopped on the top level's expensive members only (training and
        held-out), as a single-level fit would be.

        * ``"expensive level alone"``: the network trained from scratch on the top level's expensive members;
        * ``"transfer"`` (with pre-training): the pre-trained network fine-tuned on those members alone (TL,
          Krouglova et al. 2025), validated like the multilevel fine-tuning.

        Each difference of held-out loss (:func:`telescope.multilevel.safeguard.compare`) is recorded; with
        ``safeguard="fallback"`` a rival replaces the multilevel network when its held-out loss is lower by more
        than ``switch_se`` standard errors of the difference (with a handful of held-out pairs the comparison is
        noisy, and switching on noise loses more than it saves), and a warning says so.
        """
        top = tr[-1]
        rivals = {"expensive level alone": (init, False)}
        if self.pretrain:
            rivals["transfer"] = (pre, True)
        comparisons, nets = {}, {}
        for name, (state, from_pre) in rivals.items():
            nets[name] = self._train_rival(net, state, from_pre, top, va[-1], kwargs, vf, name)
            comparisons[name] = compare(self.estimator, net, nets[name], va)
        if self.couple and self.pretrain:
            nets["coupled"] = train_coupled(self, net, pre, tr, va, kwargs, vf)
            comparisons["coupled"] = compare(self.estimator, net, nets["coupled"], va)
        return self._verdict(net, comparisons, nets, top.n, switch), nets

    def _verdict(self, net: nn.Module, comparisons: dict[str, tuple[float, float]], nets: dict[str, nn.Module],
                 n_top: int, switch: bool) -> dict:
        """:func:`telescope.multilevel.safeguard.verdict` with this estimator's settings."""
        return verdict(net, comparisons, nets, n_top, switch=switch, switch_se=self.switch_se,
                       fallback=self.safeguard == "fallback")

    def _fit_plain(self, lv, net, kwargs, vf, correlations, per_sample) -> Multilevel:
        """Paper 1's training: eq. (2) from scratch with Algorithm 1, split and stopping by :func:`train`."""
        return fit_plain(self, lv, net, kwargs, vf, correlations, per_sample)

    # -- save / load ------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Save the trained estimator (:meth:`Estimator.save`) plus the multilevel settings in ``config.json``;
        a mixture's members other than the first go in ``path/member_<k>``."""
        return save_multilevel(self, path)

    @classmethod
    def load(cls, path, prior, **kwargs) -> Multilevel:
        """Load a multilevel estimator saved with :meth:`save` (the wrapped estimator's class is read from disk)."""
        return load_multilevel(Multilevel, _ML_OPTIONS, path, prior, **kwargs)


class MultilevelNLE(Multilevel):
    """ML-NLE (Hikida et al., 2025): :class:`telescope.NLE` trained with the MLMC loss and gradient adjustment.

    Keyword arguments of :class:`Multilevel` (``rescale``, ``project``, ``eps``, ``min_correlation``,
    ``pretrain``, ``weights``, ``safeguard``, ``staged``, ``val_se``, ``finetune_lr``, ``ensemble``, ``folds``,
    ``couple``); the others go to
    :class:`telescope.NLE` (``flow``, ``transforms``, ``hidden``, ``bins``, ``device``, ``seed``).

    Example:
        >>> import telescope as ts
        >>> ml = MultilevelNLE(ts.BoxUniform([0.0], [1.0]), transforms=1)
        >>> ml
        Multilevel(NLE, rescale=True, project=True)
    """

    def __init__(self, prior, **kwargs):
        ml = {k: kwargs.pop(k) for k in _ML_OPTIONS if k in kwargs}
        super().__init__(NLE(prior, **kwargs), **ml)


class MultilevelNPE(Multilevel):
    """ML-NPE (Hikida et al., 2025): :class:`telescope.NPE` trained with the MLMC loss and gradient adjustment.

    Keyword arguments of :class:`Multilevel` as for :class:`MultilevelNLE`; the others go to
    :class:`telescope.NPE` (``flow``, ``transforms``, ``hidden``, ``bins``, ``embedding``, ``device``, ``seed``).
    """

    def __init__(self, prior, **kwargs):
        ml = {k: kwargs.pop(k) for k in _ML_OPTIONS if k in kwargs}
        super().__init__(NPE(prior, **kwargs), **ml)
