r"""Out-of-sample checks of a multilevel estimator against the expensive level alone.

A multilevel loss (eq. 2 of Hikida et al., 2025, or its weighted form in :mod:`telescope.multilevel.weights`) is an
unbiased estimate of the high-fidelity loss; whether the network it trains is better than one trained
on the expensive simulations alone depends on the coupling, the allocation and over-fitting of the few
pairs, and cannot be known in advance.  :func:`compare` estimates the difference of the held-out
high-fidelity loss :math:`\mathbb{E} f^L_{\phi_1} - \mathbb{E} f^L_{\phi_2}` of two networks on held-out
level data, with the control-variate estimate of :func:`telescope.multilevel.weights.weighted_mean`
applied to the per-simulation differences, and its standard error.  The coefficients are estimated for
the differences themselves (:func:`telescope.multilevel.weights.coefficients`, clipped to ``[0, 1]``): where
the two networks' differences on the cheap and expensive members of the pairs go together, the cheap level
makes the comparison more precise than the few held-out expensive simulations alone; where they do not
(a misleading cheap level), the comparison falls back to the expensive members only (``a = 0``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .levels import Level
from .weights import coefficients, weighted_mean

__all__ = ["per_sample_losses", "pair_losses", "level_losses", "compare", "compare_losses", "verdict"]


@torch.no_grad()
def per_sample_losses(est, net: nn.Module, theta: Tensor, x: Tensor, chunk: int = 8192) -> Tensor:
    """``(n,)`` per-simulation losses ``est.loss_terms`` of ``net`` (evaluation mode, in chunks)."""
    was = net.training
    net.eval()
    try:
        dev = est.device
        out = [est.loss_terms(net, est.training_data(t.to(dev), xx.to(dev))).detach().cpu()
               for t, xx in zip(theta.split(chunk), x.split(chunk))]
    finally:
        net.train(was)
    return torch.cat(out)


def pair_losses(est, net: nn.Module, levels: Sequence[Level]) -> list[tuple[Tensor, Tensor]]:
    """Per-simulation losses ``(f_high, f_low)`` of both members of each level's pairs (levels ``1..L``)."""
    return [(per_sample_losses(est, net, lv["theta"], lv["x"]), per_sample_losses(est, net, lv["theta"], lv["x_low"]))
            for lv in levels[1:]]


def level_losses(est, net: nn.Module, levels: Sequence[Level]) -> list:
    """Per-simulation losses of ``net`` on every level: ``[f_0 (n_0,), (f_high, f_low) of level 1, ...]``."""
    return [per_sample_losses(est, net, levels[0]["theta"], levels[0]["x"]), *pair_losses(est, net, levels)]


def compare(est, net_a: nn.Module, net_b: nn.Module, levels: Sequence[Level],
            a: Sequence[float] | str = "auto") -> tuple[float, float]:
    """Held-out high-fidelity loss of ``net_a`` minus that of ``net_b``, and its standard error.

    Arguments:
        est: the estimator whose ``loss_terms`` defines the per-simulation loss.
        net_a, net_b: two trained networks for ``est``.
        levels: held-out level data (not used for training either network's weights).
        a: control-variate coefficients, or ``"auto"`` (default): estimated from the differences (with fewer
            than 5 held-out pairs on a level, 1 there).

    Returns:
        ``(difference, standard_error)``: negative when ``net_a`` is better.
    """
    return compare_losses(level_losses(est, net_a, levels), level_losses(est, net_b, levels), a)


def compare_losses(losses_a: Sequence, losses_b: Sequence, a: Sequence[float] | str = "auto") -> tuple[float, float]:
    """:func:`compare` from per-simulation held-out losses of two networks (as returned by :func:`level_losses`)."""
    d0 = losses_a[0] - losses_b[0]
    pairs = [(ha - hb, la - lb) for (ha, la), (hb, lb) in zip(losses_a[1:], losses_b[1:])]
    if isinstance(a, str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, _ = coefficients(pairs, [d0.numel()] + [p[0].numel() for p in pairs], min_pairs=5)
    return weighted_mean(d0, pairs, a)


def verdict(net: nn.Module, comparisons: dict[str, tuple[float, float]], nets: dict[str, nn.Module], n_top: int, *,
            switch: bool, switch_se: float, fallback: bool) -> dict:
    """Record the held-out differences ``(multilevel - rival, se)``, warn when a rival is better and (with
    ``switch`` and ``safeguard="fallback"``) load a clear winner into ``net``."""
    out: dict[str, Any] = {"used": "multilevel"}
    best, best_net, worse = 0.0, None, []
    for name, (diff, se) in comparisons.items():
        out[name] = {"difference": diff, "se": se}
        if diff > 0:
            worse.append(f"'{name}' lower by {diff:.4f} (standard error {se:.4f})")
        if diff > best and diff > switch_se * se:  # only a clear win replaces the multilevel network
            best, best_net, out["used"] = diff, nets.get(name), name
    # backwards-compatible summary: the comparison with the expensive level alone
    out["difference"], out["se"] = out["expensive level alone"]["difference"], out["expensive level alone"]["se"]
    if worse:
        msg = (f"the multilevel estimator is not the best on held-out data: networks trained on the {n_top} "
               f"expensive simulations of the top level have a held-out loss {', '.join(worse)}")
        if not switch:
            out["used"] = "mixture"
            msg += ("; the estimator is a mixture of the networks with weights fitted on held-out expensive "
                    "simulations (ensemble=False keeps one network)")
        elif best_net is not None and fallback:
            net.load_state_dict(best_net.state_dict())
            msg += f"; using the '{out['used']}' network instead (safeguard='warn' keeps the multilevel one)"
        else:
            out["used"] = "multilevel"
            msg += (f"; keeping the multilevel network, since no difference exceeds {switch_se:g} standard "
                    f"error(s)" if fallback else "")
        warnings.warn(msg, UserWarning, stacklevel=5)
    elif not switch:
        out["used"] = "mixture"
    return out
