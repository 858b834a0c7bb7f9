r"""Multilevel training from a ladder and a budget: pilot, allocation (Theorem 2), simulation, training.

``Multilevel(est).fit(ladder, budget=C)`` spends a total simulation cost ``C`` (in the unit of
``ladder.costs``) as follows:

1. **Pilot.**  A share ``pilot`` of the budget (default 15%) is split evenly, by cost, over the levels
   (at least 50 cheap simulations and 20 pairs per level; at most half the budget) and simulated with
   :func:`telescope.simulate_levels`.  On it, the multilevel network and a network trained on the pilot's
   expensive simulations alone are compared out of sample (:mod:`telescope.multilevel.safeguard`) —
   cross-fitted when the fit is (``folds > 1``; :mod:`telescope.multilevel.crossfit`), so that every pilot pair
   is judged, not a validation tenth of twenty.  If neither the multilevel network nor (cross-fitted) the
   transfer-learning one is better, the ladder does not pay and the rest of the budget goes to the expensive
   level (a single-level estimator is trained).
   Loss-variance arguments alone do not decide this well: most of what the cheap level gives is a
   pre-trained network, which no variance of the loss at a fixed network measures.
2. **Allocation.**  Otherwise Theorem 2 of Hikida et al. (2025) (:func:`telescope.multilevel.allocate`) picks ``n_l``
   minimising :math:`\sum_l V_l / n_l` within the budget, with the per-level variances of the (weighted) loss
   at the pilot network, :math:`V_0 = a_0^2\,\mathrm{Var} f^0`, :math:`V_l = \mathrm{Var}(a_l f^l - a_{l-1} f^{l-1})`
   (:mod:`telescope.multilevel.weights`; ``a = 1`` for eq. 2).
3. **Simulation** of the remaining ``n_l`` (the pilot's simulations are kept and used: they were paid for)
   through :func:`telescope.simulate_levels` / :func:`telescope.simulate` with ``store=`` — sub-folders
   ``pilot/``, ``levels/`` and ``high/`` of the store — so a crash loses nothing and a rerun resumes.
4. **Training** on all the data.  The plan (costs, pilot sizes, coefficients, variances, the chosen
   ``n_l``, whether the ladder was used) is recorded as ``estimator.allocation`` (a dict).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from ..simulation.ladder import FidelityLadder, simulate_levels
from ..simulation.simulate import simulate
from .allocation import allocate
from .levels import as_levels
from .safeguard import pair_losses, per_sample_losses
from .weights import coefficients

__all__ = ["plan_and_fit"]


def _sub(store, name: str):
    return None if store is None else Path(store) / name


def _pilot_sizes(costs: list[float], budget: float, share: float) -> list[int]:
    """A share of the budget split evenly by cost over the levels, with at least 50 cheap simulations and
    20 pairs per level (a level's variance and the pilot comparison need them)."""
    L = len(costs) - 1
    pair_cost = [costs[0]] + [costs[l] + costs[l - 1] for l in range(1, L + 1)]
    return [max(50 if l == 0 else 20, int(share * budget / (L + 1) // c)) for l, c in enumerate(pair_cost)]


def _concat(a: list, b: list) -> list:
    return [tuple(torch.cat([u, v]) for u, v in zip(x, y)) for x, y in zip(a, b)]


def _variances(weights, pairs, f0, sizes):
    """Coefficients ``a`` and the per-level variances of the weighted loss, ``Var f^L`` (the pilot's losses)."""
    L = len(pairs)
    info: dict = {"correlations": None}
    if weights == "auto":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, info = coefficients(pairs, sizes)
    elif isinstance(weights, (list, tuple)):
        a = [float(c) for c in weights]
    else:
        a = [1.0] * L
    coef = list(a) + [1.0]
    V = [coef[0] ** 2 * float(f0.double().var())]
    V += [float((coef[l] * pairs[l - 1][0].double() - coef[l - 1] * pairs[l - 1][1].double()).var())
          for l in range(1, L + 1)]
    return a, info, V, float(pairs[-1][0].double().var())


def _pays(duel: dict, cross: bool) -> bool:
    """Whether the pilot says the ladder pays: the multilevel network is better out of sample than the one
    trained on the expensive simulations alone, or (cross-fitted) the transfer-learning network is."""
    d = duel.get("difference")
    if d is None:
        return False
    if d < 0:
        return True
    tl = duel.get("transfer")
    return bool(cross and isinstance(tl, dict) and d - tl["difference"] < 0)  # L_tl - L_alone


def plan_and_fit(ml, ladder: FidelityLadder, budget: float, *, seed: int = 0, store=None, pilot: float = 0.15,
                 progress_bar: bool = True, **train_kwargs: Any):
    """Pilot, allocate, simulate and train (see the module docstring); returns ``ml``."""
    if not isinstance(ladder, FidelityLadder):
        raise TypeError(f"with budget=, fit takes a FidelityLadder, got {type(ladder).__name__}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number (total simulation cost in the ladder's cost units), "
                         f"got {budget!r}")
    if not 0 < pilot < 1:
        raise ValueError(f"pilot must be a share of the budget in (0, 1), got {pilot!r}")
    est = ml.estimator
    prior = est.prior
    if ladder.costs is None:
        ladder.measure_costs(prior, seed=seed)
    costs = [float(c) for c in ladder.costs]
    L = len(costs) - 1
    m = _pilot_sizes(costs, float(budget), pilot)
    if L < 1:
        raise ValueError("the ladder needs at least two levels for multilevel training")
    pilot_cost = sum(n * c for n, c in zip(m, [costs[0]] + [costs[l] + costs[l - 1] for l in range(1, L + 1)]))
    if pilot_cost > 0.5 * budget:
        raise ValueError(f"budget={budget!r} is too small for the pilot run: the smallest pilot (n = {m}: 50 cheap "
                         f"simulations and 20 pairs per level) costs {pilot_cost:.4g}, more than half of it; give a "
                         f"budget of at least {2 * pilot_cost:.4g} in the ladder's cost units (costs {costs}), or "
                         f"train on simulated levels")
    kw = {"progress_bar": progress_bar}
    pilot_levels = simulate_levels(ladder, prior, n=m, seed=seed, store=_sub(store, "pilot"), **kw)
    spent = pilot_cost
    # pilot network: the multilevel fit on the pilot data, without the safeguard
    probe = copy.copy(ml)
    probe.estimator = copy.deepcopy(est)  # untrained: the same architecture and settings
    probe.safeguard = "warn"  # trains the expensive-level-alone network too and compares them out of sample
    # cross-fitted when the fit is: every pilot pair is judged out of fold, not the validation tenth (with one
    # split, no mixture: the variances below are those of the multilevel network itself)
    probe.ensemble = ml.folds > 1 and bool(ml.ensemble)
    probe.couple = False  # the lifted member is not needed to decide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe.fit(pilot_levels, progress_bar=False, **train_kwargs)
    record = probe.estimator.history["multilevel"]
    duel = record.get("safeguard") or {}
    cross = "folds" in record  # whether the probe did cross-fit (it needs NPE/NLE and 2 pairs per fold)
    lv = as_levels(pilot_levels, est.dim_theta, warn_order=False)
    pairs = pair_losses(probe.estimator, probe.estimator.net, lv)
    f0 = per_sample_losses(probe.estimator, probe.estimator.net, lv[0]["theta"], lv[0]["x"])
    a, info, V, mc = _variances(ml.weights, pairs, f0, [level.n for level in lv])
    rest = float(budget) - spent
    alloc = allocate(costs, V, float(budget), mc_variance=mc)  # Theorem 2 for the whole budget
    pays = _pays(duel, cross)
    plan = {"budget": float(budget), "costs": costs, "pilot_n": m, "pilot_cost": spent, "coefficients": a,
            "loss_correlations": info["correlations"], "variances": V, "mc_variance": mc,
            "n": alloc.n, "variance_ratio": alloc.variance_ratio, "pilot_comparison": duel,
            "pilot_cross_fitted": cross}
    if not pays:
        n_high = int(rest // costs[-1])
        theta_p, x_p = pilot_levels[-1][0], pilot_levels[-1][1]
        parts = [(theta_p, x_p)]
        if n_high > 0:
            parts.append(simulate(ladder[L], prior, n_high, seed=seed + 1, store=_sub(store, "high"), **kw))
        theta = torch.cat([p[0] for p in parts])
        x = torch.cat([p[1] for p in parts])
        plan.update(used="expensive level alone", n_high=int(theta.shape[0]),
                    reason="in the pilot, the multilevel network was not better out of sample than the network "
                           "trained on the expensive simulations alone")
        est.fit(theta, x, progress_bar=progress_bar, **train_kwargs)
        est.history["multilevel"] = {"allocation": plan}
    else:
        extra = [max(n - k, 0) for n, k in zip(alloc.n, m)]
        plan.update(used="multilevel", n_total=[n + k for n, k in zip(extra, m)])
        data = pilot_levels
        if sum(extra) > 0:
            more = simulate_levels(ladder, prior, n=[max(e, 1) for e in extra], seed=seed + 1,
                                   store=_sub(store, "levels"), **kw)
            data = _concat(pilot_levels, [tuple(t[:e] for t in lvl) for lvl, e in zip(more, extra)])
        ml.fit(data, progress_bar=progress_bar, **train_kwargs)
        est.history["multilevel"]["allocation"] = plan
    ml.allocation = plan
    return ml
