r"""Level data for multilevel training: checks, failed simulations, pooling, coupling.

:func:`telescope.simulate_levels` returns ``[(theta_0, x_0), (theta_1, x_1, x_0'), ...]``: level 0
as plain simulations of the cheapest simulator ``G_0`` and each level ``l >= 1`` as seed-matched
pairs ``x_l = G_l(theta, u)``, ``x_{l-1}' = G_{l-1}(theta, u)`` on the same parameters and noise
(Hikida et al., 2025, Section 3).  This module turns such a list into checked tensors:

* a pair may also be given with the parameters of both members, ``(theta, x_l, theta', x_{l-1}')``,
  or as a dict ``{"theta", "x", "x_low"[, "theta_low"]}``; parameters that differ between the
  members of a pair raise an error, since the pair would not be seed-matched;
* every level must produce ``x`` of one shape;
* a pair with a failed (NaN/inf) member is dropped as a whole, with a warning;
* ``n_l`` that do not decrease with the level give a warning (they are allowed);
* :func:`pair_correlations` measures how strongly each level's pairs are coupled — MLMC reduces
  variance only when ``x_l`` and ``x_{l-1}`` are strongly correlated (eq. 3) — and :func:`check_coupling`
  warns when a level's correlation is near zero.

Standardisation statistics must be ONE statistic shared by every level (standardising ``x_l`` and
``x_{l-1}`` with their own means and scales changes the pair difference and breaks the coupling):
:func:`pooled` stacks all levels' simulations so an estimator's network can fit its statistics on them once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Level", "as_levels", "pooled", "pair_correlations", "check_coupling", "split_level", "cheap", "at_fidelity", "pair_members"]


class Level(dict):
    """One level's tensors: ``theta`` and ``x`` (level 0) or ``theta``, ``x`` (= ``x_l``) and ``x_low``."""

    @property
    def n(self) -> int:
        return int(self["theta"].shape[0])


def _tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().float()
    try:
        return torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from None


def _unpack(l: int, level: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(theta, x, x_low)`` of level ``l`` (``x_low`` is None for level 0)."""
    if isinstance(level, dict):
        keys = set(level)
        want = {"theta", "x"} if l == 0 else {"theta", "x", "x_low"}
        if not want <= keys:
            raise ValueError(f"levels[{l}] must have keys {sorted(want)}, got {sorted(keys)}")
        parts = [level["theta"], level["x"]] if l == 0 else (
            [level["theta"], level["x"], level["theta_low"], level["x_low"]] if "theta_low" in level
            else [level["theta"], level["x"], level["x_low"]])
    elif isinstance(level, (tuple, list)):
        parts = list(level)
    else:
        raise TypeError(f"levels[{l}] must be a tuple (theta, x{'' if l == 0 else ', x_low'}) or a dict, "
                        f"got {type(level).__name__}")
    if l == 0:
        if len(parts) != 2:
            raise ValueError(f"levels[0] must be (theta_0, x_0) — plain simulations of the lowest level — "
                             f"got a tuple of {len(parts)}")
        return _tensor("levels[0] theta", parts[0]), _tensor("levels[0] x", parts[1]), None
    if len(parts) == 3:
        theta, x, x_low = parts
        theta = _tensor(f"levels[{l}] theta", theta)
    elif len(parts) == 4:
        theta, x, theta_low, x_low = parts
        theta, theta_low = _tensor(f"levels[{l}] theta", theta), _tensor(f"levels[{l}] theta_low", theta_low)
        if theta.shape != theta_low.shape:
            bad = f"shapes {tuple(theta.shape)} and {tuple(theta_low.shape)}"
        elif not torch.equal(theta, theta_low):
            bad = f"{int((theta != theta_low).any(-1).sum())} of {theta.shape[0]} rows"
        else:
            bad = ""
        if bad:
            raise ValueError(f"levels[{l}]: the parameters of the two members of the seed-matched pairs differ "
                             f"({bad}); each pair must simulate x_{l} and x_{l - 1} on the SAME theta (and noise) "
                             f"— use telescope.simulate_levels")
    else:
        raise ValueError(f"levels[{l}] must be a seed-matched pair (theta, x_{l}, x_{l - 1}) or "
                         f"(theta, x_{l}, theta_low, x_{l - 1}), got a tuple of {len(parts)}")
    return theta, _tensor(f"levels[{l}] x", x), _tensor(f"levels[{l}] x_low", x_low)


def as_levels(levels: Sequence, dim_theta: int | None = None, *, warn_order: bool = True,
              stacklevel: int = 3) -> list[Level]:
    """Check ``simulate_levels`` output and return one :class:`Level` per level.

    Arguments:
        levels: ``[(theta_0, x_0), (theta_1, x_1, x_0'), ..., (theta_L, x_L, x_{L-1}')]`` (see the module
            docstring for the other accepted forms).
        dim_theta: expected parameter dimension (checked when given).
        warn_order: warn when ``n_l`` does not decrease with the level.

    Returns:
        ``[Level(theta, x), Level(theta, x, x_low), ...]`` with failed pairs removed.

    Example:
        >>> lv = as_levels([(torch.zeros(5, 1), torch.randn(5, 2)), (torch.zeros(3, 1), torch.ones(3, 2),
        ...                 torch.zeros(3, 2))])
        >>> [level.n for level in lv], sorted(lv[1])
        ([5, 3], ['theta', 'x', 'x_low'])
    """
    if isinstance(levels, (dict, Tensor)) or not isinstance(levels, Sequence) or len(levels) == 0:
        raise TypeError(f"levels must be a non-empty list as returned by simulate_levels: [(theta_0, x_0), "
                        f"(theta_1, x_1, x_0'), ...], got {type(levels).__name__}")
    out: list[Level] = []
    shape = None
    dropped: list[str] = []
    for l, level in enumerate(levels):
        theta, x, x_low = _unpack(l, level)
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x_low is not None and x_low.dim() == 1:
            x_low = x_low.unsqueeze(-1)
        if theta.dim() != 2 or (dim_theta is not None and theta.shape[1] != dim_theta):
            want = f"(n, {dim_theta})" if dim_theta is not None else "(n, d)"
            raise ValueError(f"levels[{l}] theta must have shape {want}, got {tuple(theta.shape)}")
        for name, t in (("x", x), ("x_low", x_low)):
            if t is None:
                continue
            if t.shape[0] != theta.shape[0]:
                raise ValueError(f"levels[{l}] {name} has {t.shape[0]} rows but theta has {theta.shape[0]}")
            ev = tuple(t.shape[1:])
            if shape is None:
                shape = ev
            elif ev != shape:
                raise ValueError(f"the ladder's levels disagree on the output shape: levels[{l}] {name} has "
                                 f"x of shape {ev} per simulation, but earlier levels have {shape}; every level "
                                 f"must return x of the same shape")
        if not torch.isfinite(theta).all():
            raise ValueError(f"levels[{l}] theta contains NaN or inf; expected parameters drawn from the prior")
        ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)
        if x_low is not None:
            ok &= torch.isfinite(x_low.reshape(x_low.shape[0], -1)).all(-1)
        if not ok.all():
            dropped.append(f"level {l}: {int((~ok).sum())} of {x.shape[0]}")
            theta, x = theta[ok], x[ok]
            x_low = None if x_low is None else x_low[ok]
        if theta.shape[0] == 0:
            raise ValueError(f"levels[{l}] holds no valid simulation; every level needs at least one "
                             f"({'simulation' if l == 0 else 'seed-matched pair'})")
        out.append(Level(theta=theta, x=x) if x_low is None else Level(theta=theta, x=x, x_low=x_low))
    if dropped:
        warnings.warn(f"dropping simulations whose x contains NaN or inf (a pair is dropped when either member "
                      f"failed): {'; '.join(dropped)}", stacklevel=stacklevel)
    ns = [lv.n for lv in out]
    if warn_order and any(b >= a for a, b in zip(ns, ns[1:])):
        warnings.warn(f"n = {ns} does not decrease with the level; multilevel training pays off with many cheap "
                      f"low-level simulations and few expensive high-level pairs (n_0 > n_1 > ...)",
                      UserWarning, stacklevel=stacklevel)
    return out


def pooled(levels: Sequence[Level]) -> tuple[Tensor, Tensor]:
    """All simulations of all levels, row-aligned: ``theta (N, d)`` and ``x (N, *event)``.

    Level 0 contributes ``(theta_0, x_0)`` and level ``l`` both ``(theta_l, x_l)`` and ``(theta_l, x_{l-1}')``.
    Fit standardisation statistics on these ONCE and apply them to every level.
    """
    thetas, xs = [], []
    for lv in levels:
        thetas.append(lv["theta"])
        xs.append(lv["x"])
        if "x_low" in lv:
            thetas.append(lv["theta"])
            xs.append(lv["x_low"])
    return torch.cat(thetas), torch.cat(xs)


def pair_correlations(levels: Sequence[Level]) -> list[float]:
    """Correlation between the members ``x_l`` and ``x_{l-1}'`` of each level's pairs (levels ``1..L``).

    The Pearson correlation of each feature of the flattened ``x`` over the pairs, averaged over the
    features that vary; ``nan`` when no feature varies or there are fewer than 3 pairs.
    """
    out = []
    for lv in levels[1:]:
        a = lv["x"].reshape(lv.n, -1).double()
        b = lv["x_low"].reshape(lv.n, -1).double()
        if lv.n < 3:
            out.append(float("nan"))
            continue
        a, b = a - a.mean(0), b - b.mean(0)
        sa, sb = a.pow(2).sum(0).sqrt(), b.pow(2).sum(0).sqrt()
        ok = (sa > 0) & (sb > 0)
        if not ok.any():
            out.append(float("nan"))
            continue
        r = (a * b).sum(0)[ok] / (sa[ok] * sb[ok])
        out.append(float(r.mean()))
    return out


def check_coupling(levels: Sequence[Level], min_correlation: float = 0.1, stacklevel: int = 3) -> list[float]:
    """:func:`pair_correlations`, warning for each level whose correlation is below ``min_correlation``."""
    corr = pair_correlations(levels)
    weak = [(l + 1, c) for l, c in enumerate(corr) if c == c and c < min_correlation]
    if weak:
        desc = ", ".join(f"level {l}: {c:.3f}" for l, c in weak)
        warnings.warn(f"the seed-matched pairs are weakly or negatively correlated (measured correlation of x "
                      f"between the pairs' members: {desc}; threshold {min_correlation}): the correction terms "
                      f"f^l - f^(l-1) then have no smaller variance than f^l itself and the multilevel loss cannot "
                      f"help (the safeguard compares the result with the expensive level alone). Check that both "
                      f"members of each pair are simulated with the same noise (seed matching)", UserWarning,
                      stacklevel=stacklevel)
    return corr


def split_level(level: Level, val_fraction: float, generator: torch.Generator) -> tuple[Level, Level]:
    """Random ``(train, validation)`` split of one level's rows (pairs stay whole), as :func:`telescope.train.split`."""
    n = level.n
    n_val = int(round(val_fraction * n))
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    perm = torch.randperm(n, generator=generator)
    va, tr = perm[:n_val], perm[n_val:]
    return Level({k: v[tr] for k, v in level.items()}), Level({k: v[va] for k, v in level.items()})


def at_fidelity(levels: Sequence[Level], l: int) -> tuple[Tensor, Tensor]:
    """Every simulation of fidelity ``l``: level ``l``'s (high members of its pairs for ``l >= 1``) plus the low
    members of level ``l + 1``'s pairs."""
    theta, x = [levels[l]["theta"]], [levels[l]["x"]]
    if len(levels) > l + 1:
        theta.append(levels[l + 1]["theta"])
        x.append(levels[l + 1]["x_low"])
    return torch.cat(theta), torch.cat(x)


def cheap(levels: Sequence[Level]) -> tuple[Tensor, Tensor]:
    """All level-0 simulations: ``(theta_0, x_0)`` plus the low members of level 1's pairs."""
    return at_fidelity(levels, 0)


def pair_members(group: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The ``(high, low)`` member batches of a pair group built by :meth:`telescope.multilevel.Multilevel._groups`."""
    return ({k[3:]: v for k, v in group.items() if k.startswith("hi/")},
            {k[3:]: v for k, v in group.items() if k.startswith("lo/")})
