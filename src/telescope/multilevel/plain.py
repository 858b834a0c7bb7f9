"""Paper 1's training procedure, exactly: eq. (2) minimised from scratch with Algorithm 1, the split and the
early stopping of :func:`telescope.training.train` (``Multilevel(est, staged=False)``; Hikida et al. 2025,
Section 3 and Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..training import train
from .adjust import GradientAdjustment
from .levels import pair_members
from .loss import mlmc_terms

__all__ = ["fit_plain"]


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """``(n_train, n_val)`` exactly as :func:`telescope.train.split` divides ``n`` rows."""
    n_val = int(round(val_fraction * n))
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return n - n_val, n_val


class _LevelWeights:
    """Weights ``1 / E[rows per step]`` of each level's summed loss in a training or validation pass.

    :func:`telescope.train.train` gives every group the same number of steps per pass, so a group's
    expected batch is its share of the pass's rows times the largest group's batch.  Read off the
    batches themselves, this holds whatever batch size ``train`` chooses.
    """

    def __init__(self, sizes: Sequence[int], val_fraction: float):
        tr, va = zip(*(split_sizes(n, val_fraction) for n in sizes))
        self.rows = {"train": list(tr), "val": list(va)}

    def __call__(self, mode: str, batch_rows: Sequence[int]) -> list[float]:
        rows = self.rows[mode]
        big = max(range(len(rows)), key=lambda i: rows[i])
        per_row = max(batch_rows[big], 1) / rows[big]  # steps^-1 of this pass
        return [1.0 / max(n * per_row, 1e-12) for n in rows]


def fit_plain(ml, lv, net, kwargs, vf, correlations, per_sample):
    """Train ``net`` for the :class:`~telescope.multilevel.Multilevel` wrapper ``ml`` with the procedure of Hikida et al. (2025);
    returns ``ml``."""
    est = ml.estimator
    sizes = [level.n for level in lv]
    weights = _LevelWeights(sizes, vf)

    def loss_fn(module: nn.Module, batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        batches: list[Any] = [batch[0]]
        for g in batch[1:]:
            batches.append(pair_members(g))
        if per_sample:
            fn = lambda b: est.loss_terms(module, b)  # noqa: E731
        else:
            fn = lambda b: est.loss(module, b)  # noqa: E731
        rows = [next(iter(g.values())).shape[0] for g in batch]
        w = weights("train" if module.training else "val", rows)
        return mlmc_terms(fn, batches, w, per_sample=per_sample)

    ml.adjustment = None
    if len(lv) > 1 and (ml.rescale or ml.project):
        ml.adjustment = GradientAdjustment(rescale=ml.rescale, project=ml.project, eps=ml.eps, batched=per_sample)
    history = train(net, loss_fn, ml._groups(lv), backward=ml.adjustment, val_fraction=vf, **kwargs)
    history["multilevel"] = {
        "n": sizes, "pair_correlations": correlations, "rescale": ml.rescale, "project": ml.project,
        "adjustment": ml.adjustment.stats if ml.adjustment is not None else None,
    }
    est.history = history
    return ml

