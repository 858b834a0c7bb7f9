r"""Sample allocation across levels (Hikida et al., 2025, Theorem 2) and pilot estimates of per-level variances.

With per-simulation costs :math:`C_0 < \dots < C_L`, a level-``l`` pair costs :math:`c_l = C_l + C_{l-1}`
(:math:`c_0 = C_0`) and the MLMC loss costs :math:`\sum_l n_l c_l`.  Writing :math:`V_0 = \mathrm{Var}[f^0]` and
:math:`V_l = \mathrm{Var}[f^l - f^{l-1}]` for the per-simulation variances, eq. (2) has variance
:math:`\sum_l V_l / n_l`.  Minimising it subject to :math:`\sum_l n_l c_l \le B` (Theorem 2, whose
bound-based :math:`V_l` are :math:`K_0(\|G^0\|^4 + 1)` and :math:`K_l \|G^l - G^{l-1}\|^2`) gives

.. math::
    n_l^* = \frac{B}{\sum_k \sqrt{V_k c_k}} \sqrt{\frac{V_l}{c_l}}, \qquad
    \mathrm{Var}[\ell_{\mathrm{MLMC}}] = \frac{\big(\sum_l \sqrt{V_l c_l}\big)^2}{B},

against :math:`V_{\mathrm{MC}} / \lfloor B / C_L \rfloor` for single-level Monte Carlo with the top
simulator at the same cost (:math:`V_{\mathrm{MC}} = \mathrm{Var}[f^L]`).  :func:`allocate` returns
integer :math:`n_l \ge 1` within the budget (levels whose optimum is below one sample are held at one and
the rest of the budget re-allocated).  The variances are unknown in practice: :func:`level_variances`
estimates them — of the loss, or of its gradient (the trace of the per-simulation gradient covariance) —
at a pilot network trained on a small pilot set.

Example:
    >>> a = allocate([1.0, 10.0], [4.0, 0.1], budget=2000.0, mc_variance=4.0)
    >>> a.n, round(a.variance_ratio, 3)
    ([1311, 62], 0.233)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ..estimators.base import Estimator
from .levels import as_levels
from .loss import _SameRandomness

__all__ = ["allocate", "Allocation", "level_variances", "LevelVariances"]


@dataclass
class LevelVariances:
    """Pilot estimates per level (see :func:`level_variances`).

    Attributes:
        variances: ``[Var f^0, Var(f^1 - f^0), ..., Var(f^L - f^(L-1))]`` per simulation.
        mc_variance: ``Var f^L`` per simulation (for single-level Monte Carlo at the top level).
        correlations: correlation of ``f^l`` and ``f^(l-1)`` over each level's pairs (``l = 1..L``).
        means: ``[E f^0, E(f^1 - f^0), ...]``.
        n: simulations (pairs) used per level.
        kind: ``"loss"`` or ``"grad"``.
    """

    variances: list[float]
    mc_variance: float
    correlations: list[float]
    means: list[float]
    n: list[int]
    kind: str = "loss"


@dataclass
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
        n: integer samples per level ``[n_0, ..., n_L]`` (pairs for ``l >= 1``).
        n_real: the real-valued optimum before rounding down.
        costs: cost per simulation ``C_l``; ``level_costs``: cost per sample of each term ``c_l``.
        variances: the per-simulation variances ``V_l`` used.
        budget: the budget; ``cost``: ``sum_l n_l c_l`` of the integer allocation (``<= budget``).
        variance: predicted variance ``sum_l V_l / n_l`` of the MLMC loss.
        mc_n: high-fidelity simulations single-level MC gets for the same budget, ``floor(budget / C_L)``.
        mc_variance: its predicted variance ``V_MC / mc_n`` (``None`` when ``V_MC`` is not given).
        variance_ratio: ``variance / mc_variance`` (below 1: MLMC is better at equal cost).
    """

    n: list[int]
    n_real: list[float]
    costs: list[float]
    level_costs: list[float]
    variances: list[float]
    budget: float
    cost: float
    variance: float
    mc_n: int
    mc_variance: float | None = None
    variance_ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        rows = [f"level {l}: n = {n:>8d}  cost/sample = {c:.4g}  V = {v:.4g}"
                for l, (n, c, v) in enumerate(zip(self.n, self.level_costs, self.variances))]
        tail = f"MLMC cost {self.cost:.4g} of budget {self.budget:.4g}; predicted variance {self.variance:.4g}"
        if self.mc_variance is not None:
            tail += (f"; single-level MC with {self.mc_n} top-level simulations: {self.mc_variance:.4g} "
                     f"(ratio {self.variance_ratio:.3g})")
        return "\n".join(rows + [tail])


def _numbers(name: str, values, n: int | None = None) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of numbers, got {values!r}") from None
    if n is not None and len(out) != n:
        raise ValueError(f"{name} must have one entry per level ({n}), got {len(out)}: {out}")
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def allocate(costs: Sequence[float], variances, budget: float, *, mc_variance: float | None = None,
             min_n: int = 1) -> Allocation:
    r"""Samples per level minimising the MLMC loss variance for a budget (Theorem 2).

    Arguments:
        costs: cost per simulation of each level ``[C_0, ..., C_L]``, increasing (e.g. ``ladder.costs``).
        variances: ``[V_0, ..., V_L]`` with ``V_0 = Var f^0`` and ``V_l = Var(f^l - f^(l-1))`` per simulation,
            or a :class:`LevelVariances` from :func:`level_variances` (which also supplies ``mc_variance``).
        budget: total cost ``sum_l n_l c_l`` allowed, in the unit of ``costs``.
        mc_variance: ``Var f^L`` per simulation, to compare with single-level MC at equal cost.
        min_n: smallest number of samples per level.

    Returns:
        An :class:`Allocation` (integer ``n``, predicted variances, comparison with single-level MC).

    Raises:
        ValueError: costs not positive and increasing, negative variances, or a budget below the cost of
            ``min_n`` samples at every level.
    """
    if isinstance(variances, LevelVariances):
        if mc_variance is None:
            mc_variance = variances.mc_variance
        variances = variances.variances
    C = _numbers("costs", costs)
    V = _numbers("variances", variances, len(C))
    if not all(0 < c < math.inf for c in C):
        raise ValueError(f"costs must be positive and finite, got {C}")
    if any(b <= a for a, b in zip(C, C[1:])):
        raise ValueError(f"costs must increase with the level (C_0 < C_1 < ... < C_L), got {C}")
    if not all(0 <= v < math.inf for v in V):
        raise ValueError(f"variances must be finite and >= 0, got {V}")
    if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 1:
        raise ValueError(f"min_n must be an integer >= 1, got {min_n!r}")
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise TypeError(f"budget must be a number, got {budget!r}") from None
    c = [C[0]] + [C[l] + C[l - 1] for l in range(1, len(C))]
    floor_cost = min_n * sum(c)
    if not budget >= floor_cost:
        raise ValueError(f"budget {budget:g} is too small: {min_n} sample(s) per level already cost {floor_cost:g} "
                         f"(cost per sample of each level's term: {c}); raise the budget or drop levels")
    notes: list[str] = []
    fixed: set[int] = set()
    while True:  # levels whose optimum is below min_n are held at min_n; the rest share what is left
        free = [l for l in range(len(C)) if l not in fixed]
        rest = budget - min_n * sum(c[l] for l in fixed)
        s = sum(math.sqrt(V[l] * c[l]) for l in free)
        n_real = [float(min_n)] * len(C)
        if s > 0:
            for l in free:
                n_real[l] = rest / s * math.sqrt(V[l] / c[l])
        low = [l for l in free if n_real[l] < min_n]
        if not low or s == 0:
            break
        fixed.update(low)
    if fixed:
        notes.append(f"levels {sorted(fixed)} are held at min_n={min_n} (their optimum is smaller)")
    n = [max(min_n, int(math.floor(v + 1e-9))) for v in n_real]
    cost = sum(k * cc for k, cc in zip(n, c))
    if cost > budget:  # guard against rounding at the edge
        for l in sorted(range(len(C)), key=lambda j: -n[j] * c[j]):
            while cost > budget and n[l] > min_n:
                n[l] -= 1
                cost -= c[l]
    variance = sum(v / k for v, k in zip(V, n))
    mc_n = int(math.floor(budget / C[-1] + 1e-9))
    mc_var = ratio = None
    if mc_variance is not None:
        mc_variance = float(mc_variance)
        mc_var = mc_variance / mc_n if mc_n > 0 else math.inf
        ratio = variance / mc_var if mc_var > 0 else math.inf
    return Allocation(n=n, n_real=n_real, costs=C, level_costs=c, variances=V, budget=budget, cost=cost,
                      variance=variance, mc_n=mc_n, mc_variance=mc_var, variance_ratio=ratio, notes=notes)


# ---------------------------------------------------------------------------------------------
# pilot variances


def _per_sample_grads(loss_terms, net, batch: dict[str, Tensor], chunk: int = 64) -> Tensor:
    """``(n, P)`` gradients of each row's loss with respect to the network parameters."""
    params = [p for p in net.parameters() if p.requires_grad]
    n = next(iter(batch.values())).shape[0]
    out = []
    for lo in range(0, n, chunk):
        b = {k: v[lo:lo + chunk] for k, v in batch.items()}
        f = loss_terms(net, b)
        eye = torch.eye(f.shape[0], dtype=f.dtype, device=f.device)
        grads = torch.autograd.grad(f, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        out.append(torch.cat([torch.zeros(f.shape[0], p.numel(), device=f.device) if g is None
                              else g.reshape(f.shape[0], -1) for g, p in zip(grads, params)], 1))
    return torch.cat(out).double()


def _spread(a: Tensor) -> float:
    """Variance of scalars ``(n,)`` or trace of the covariance of vectors ``(n, P)``."""
    if a.shape[0] < 2:
        return float("nan")
    a = a.reshape(a.shape[0], -1)
    return float((a - a.mean(0)).pow(2).sum(-1).sum() / (a.shape[0] - 1))


def _values(est: Estimator, net, batch: dict[str, Tensor], kind: str, chunk: int) -> Tensor:
    """Per-simulation losses ``(n,)``, gradients ``(n, P)``, or chunk means scaled to per-simulation units."""
    if kind == "grad":
        return _per_sample_grads(est.loss_terms, net, batch)
    with torch.no_grad():
        if est.loss_terms is not None:
            return est.loss_terms(net, batch).double()
        n = next(iter(batch.values())).shape[0]
        k = max(1, min(chunk, n // 2))
        means = [est.loss(net, {key: v[i:i + k] for key, v in batch.items()}) for i in range(0, n - k + 1, k)]
        return torch.stack(means).double() * math.sqrt(k)  # Var(sqrt(k) * mean) = per-sample variance


def _correlation(fh: Tensor, fl: Tensor) -> float:
    """Correlation of the two members' values over the pairs (all coordinates pooled)."""
    a, b = fh.reshape(fh.shape[0], -1), fl.reshape(fl.shape[0], -1)
    a, b = a - a.mean(0), b - b.mean(0)
    den = float(a.pow(2).sum().sqrt() * b.pow(2).sum().sqrt())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def level_variances(estimator, levels, *, kind: str = "loss", max_samples: int = 2000, chunk: int = 32,
                    seed: int = 0) -> LevelVariances:
    r"""Per-level variances of the loss (or its gradient) at a pilot network, for :func:`allocate`.

    Arguments:
        estimator: a trained estimator (or :class:`~telescope.multilevel.Multilevel` wrapper) — the pilot,
            e.g. fitted on a small pilot set of levels.
        levels: seed-matched level data (:func:`telescope.simulate_levels` output).
        kind: ``"loss"`` (variances of :math:`f^0` and :math:`f^l - f^{l-1}`) or ``"grad"`` (traces of the
            covariances of their gradients with respect to the network parameters).
        max_samples: at most this many simulations (pairs) per level are used.
        chunk: for estimators without per-simulation losses, the loss is evaluated on chunks of this many
            rows and ``chunk * Var(chunk mean)`` estimates the per-simulation variance (``kind="loss"`` only).
        seed: seeds the subsampling and any randomness of the loss.

    Returns:
        A :class:`LevelVariances`.
    """
    est = getattr(estimator, "estimator", estimator)
    if not isinstance(est, Estimator):
        raise TypeError(f"estimator must be a telescope estimator or Multilevel wrapper, "
                        f"got {type(estimator).__name__}")
    net = est.trained_net()
    if kind not in ("loss", "grad"):
        raise ValueError(f"kind must be 'loss' or 'grad', got {kind!r}")
    per_sample = est.loss_terms
    if kind == "grad" and per_sample is None:
        raise ValueError(f"kind='grad' needs per-simulation losses, which {type(est).__name__} does not provide "
                         f"(no loss_terms); use kind='loss'")
    lv = as_levels(levels, est.dim_theta, warn_order=False)
    g = torch.Generator().manual_seed(int(seed))
    dev = est.device
    was = net.training
    net.eval()

    def rows(level, key):
        return est.training_data(level["theta"].to(dev), level[key].to(dev))

    def values(batch: dict[str, Tensor]) -> Tensor:
        return _values(est, net, batch, kind, chunk)

    variances, means, corr, used = [], [], [], []
    mc = float("nan")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for l, level in enumerate(lv):
                idx = torch.randperm(level.n, generator=g)[:max_samples].to(dev)
                level = {k: v.to(dev)[idx] for k, v in level.items()}
                used.append(int(idx.numel()))
                if l == 0:
                    f0 = values(rows(level, "x"))
                    variances.append(_spread(f0))
                    means.append(float(f0.reshape(f0.shape[0], -1).mean(0).norm()) if kind == "grad"
                                 else float(f0.mean()))
                    continue
                same = _SameRandomness(torch.device(dev))
                fh = values(rows(level, "x"))
                same.restore()
                fl = values(rows(level, "x_low"))
                d = fh - fl
                variances.append(_spread(d))
                means.append(float(d.reshape(d.shape[0], -1).mean(0).norm()) if kind == "grad" else float(d.mean()))
                corr.append(_correlation(fh, fl))
                if l == len(lv) - 1:
                    mc = _spread(fh)
    finally:
        net.train(was)
    if len(lv) == 1:
        mc = variances[0]
    return LevelVariances(variances=variances, mc_variance=mc, correlations=corr, means=means, n=used, kind=kind)
