r"""Cross-fitted fine-tuning: every expensive simulation both trains and judges the networks.

With a few expensive pairs, one train/validation split wastes a tenth of them on validation, stops
training on a handful of held-out simulations, and fits the mixture weights of
:mod:`telescope.multilevel.ensemble` on that same handful.  Cross-fitting (K-fold) instead splits every
level into ``K`` folds (pairs stay whole) and, for each fold, fine-tunes the pre-trained network
(multilevel loss), and trains its rivals (transfer learning; the expensive level alone), on the other
``K - 1`` folds, stopping on the fold.  Then

* every simulation has an **out-of-fold** loss under each kind of network, so the safeguard's comparisons
  (:func:`telescope.multilevel.safeguard.compare_losses`) and the mixture weights use all ``n_L`` expensive
  simulations instead of the validation tenth — stacked generalisation with out-of-fold predictions
  (Wolpert 1992, "Stacked generalization", Neural Networks 5(2); for densities, Yao et al. 2018);
* the estimator is the mixture of all ``K`` networks of each kind, each kind's stacked weight shared
  equally among its folds: an average over networks trained on different subsets, whose errors partly
  cancel (bagging: Breiman 1996, "Bagging predictors", Machine Learning 24).

Pre-training on the cheap levels is done once, before the folds.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .coupling import train_coupled
from .ensemble import Mixture, stack
from .levels import Level
from .safeguard import compare_losses, level_losses

if TYPE_CHECKING:
    from .wrapper import Multilevel

__all__ = ["fold_splits", "crossfit"]


def fold_splits(levels: list[Level], folds: int, generator: torch.Generator) -> list[tuple[list[Level], list[Level]]]:
    """``folds`` pairs ``(train, validation)`` of level lists: each level's rows in ``folds`` random, balanced folds."""
    labels = []
    for level in levels:
        lab = torch.empty(level.n, dtype=torch.long)
        lab[torch.randperm(level.n, generator=generator)] = torch.arange(level.n) % folds
        labels.append(lab)
    return [([Level({key: v[lab != k] for key, v in level.items()}) for level, lab in zip(levels, labels)],
             [Level({key: v[lab == k] for key, v in level.items()}) for level, lab in zip(levels, labels)])
            for k in range(folds)]


def _cat(per_fold: list[list]) -> list:
    """Concatenate per-fold level losses (``[f_0, (f_high, f_low), ...]``) over folds."""
    out: list[Any] = [torch.cat([f[0] for f in per_fold])]
    for l in range(1, len(per_fold[0])):
        out.append((torch.cat([f[l][0] for f in per_fold]), torch.cat([f[l][1] for f in per_fold])))
    return out


def crossfit(ml: Multilevel, net: nn.Module, init: dict, pre: dict, levels: list[Level], generator: torch.Generator,
             kwargs: dict, vf: float, a: list[float], record: dict) -> dict:
    """Fine-tune and train the rivals on each fold, compare out of fold, and make ``ml.estimator.net`` the mixture.

    Fills ``record`` (``safeguard``, ``ensemble``, ``folds``) and returns the first fold's training history.
    """
    est = ml.estimator
    K = ml.folds
    kinds = {"expensive level alone": (init, False)}
    if ml.pretrain:
        kinds["transfer"] = (pre, True)
    couple = ml.couple and ml.pretrain
    nets: dict[str, list[nn.Module]] = {"multilevel": [], **{k: [] for k in kinds}, **({"coupled": []} if couple else {})}
    held: dict[str, list] = {k: [] for k in nets}
    histories = []
    for k, (tr, va) in enumerate(fold_splits(levels, K, generator)):
        m = copy.deepcopy(net)
        m.load_state_dict(pre)
        histories.append(ml._finetune(m, tr, va, kwargs, vf, a, True))
        fold = {"multilevel": m}
        for name, (state, from_pre) in kinds.items():
            fold[name] = ml._train_rival(net, state, from_pre, tr[-1], va[-1], kwargs, vf, name)
        if couple:
            fold["coupled"] = train_coupled(ml, net, pre, tr, va, kwargs, vf, stream=k)
        for name, member in fold.items():
            nets[name].append(member)
            held[name].append(level_losses(est, member, va))
    oof = {name: _cat(v) for name, v in held.items()}
    comparisons = {name: compare_losses(oof["multilevel"], oof[name]) for name in nets if name != "multilevel"}
    record["safeguard"] = ml._verdict(net, comparisons, {}, levels[-1].n, switch=False)
    clear = {k: v["difference"] > ml.switch_se * v["se"] for k, v in record["safeguard"].items() if isinstance(v, dict)}
    names = ["multilevel", *(k for k in nets if k in ("transfer", "coupled") or clear.get(k))]
    top: list[Tensor] = [-oof[name][-1][0] for name in names]  # out-of-fold log q of the top level's expensive members
    w = stack(torch.stack(top, dim=1))
    members = [member for name in names for member in nets[name]]
    est.net = Mixture(members, [float(wi) / K for wi in w for _ in range(K)]).to(est.device)
    record["ensemble"] = {"members": names, "weights": w.tolist(), "held_out": int(top[0].numel()), "folds": K}
    record["folds"] = {"k": K, "epochs": [h["epochs"] for h in histories],
                       "best_epoch": [h.get("best_epoch") for h in histories]}
    record["adjustment"] = ml.adjustment.stats if ml.adjustment is not None else None
    return histories[0]
