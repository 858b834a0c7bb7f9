"""Posterior samples and MCMC chains as an ArviZ ``InferenceData`` (and NetCDF files).

ArviZ (Kumar et al., 2019) is the common format of Bayesian workflows: ``az.summary``, ``az.plot_trace``,
``az.plot_pair``, ``az.rhat`` and ``az.ess`` read an ``InferenceData`` whose ``posterior`` group holds
arrays with dimensions ``(chain, draw, ...)``, and ``InferenceData.to_netcdf`` saves it.
:func:`to_inference_data` builds one from telescope samples ``(n, d)`` (one chain) or chains
``(chains, draws, d)`` (e.g. ``NLE.sample(..., return_chains=True)``), with the observation in the
``observed_data`` group and the prior (its description and the bounds of its support) in the
attributes.  ArviZ is imported only when the function is called (``pip install "telescope-sbi[arviz]"``).

Example:
    >>> import torch
    >>> idata = to_inference_data(torch.randn(4, 100, 2), names=["a", "b"], x_o=torch.zeros(3))  # needs arviz
    >>> idata.posterior["theta"].dims
    ('chain', 'draw', 'parameter')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["to_inference_data", "support_bounds"]


def _arviz():
    try:
        import arviz
    except ImportError:
        raise ImportError("to_inference_data needs ArviZ: pip install 'telescope-sbi[arviz]' (or pip install arviz)") \
            from None
    return arviz


def support_bounds(prior, d: int) -> tuple[list[float], list[float]] | None:
    """Lower and upper bounds ``(d,)`` of the prior's support (``-inf``/``inf`` where unbounded), or ``None``."""
    support = getattr(prior, "support", None)
    while support is not None and hasattr(support, "base_constraint"):  # independent(interval, 1)
        support = support.base_constraint
    if support is None:
        return None
    lo = getattr(support, "lower_bound", None)
    hi = getattr(support, "upper_bound", None)
    if lo is None and hi is None:
        name = type(support).__name__
        if name in ("_Real", "_IndependentConstraint"):
            return [-math.inf] * d, [math.inf] * d
        if name in ("_GreaterThan", "_GreaterThanEq", "_Positive"):
            return [0.0] * d, [math.inf] * d
        return None

    def vec(v, fill):
        if v is None:
            return [fill] * d
        return torch.as_tensor(v, dtype=torch.float64).expand(d).tolist()

    return vec(lo, -math.inf), vec(hi, math.inf)


def _array(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__} ({e})") from None
    return arr


def to_inference_data(samples=None, *, chains=None, x_o=None, prior=None, names: Sequence[str] | None = None,
                      estimator: Any = None, save: str | Path | None = None, attrs: dict | None = None):
    """An ``arviz.InferenceData`` of posterior draws.

    Arguments:
        samples: ``(n, d)`` pooled samples (one chain of ``n`` draws), or chains ``(chains, draws, d)``.
        chains: ``(chains, draws, d)`` MCMC chains (instead of ``samples``).
        x_o: the observation, stored in the ``observed_data`` group as ``x_o``.
        prior: the prior; its description and support bounds go to the posterior's attributes.
        names: ``d`` parameter names (coordinates of the ``parameter`` dimension); default ``theta_0...``.
        estimator: a telescope estimator: its prior, its last MCMC chains (``estimator.chains``) when neither
            ``samples`` nor ``chains`` is given, and its default observation when ``x_o`` is not.
        save: also write the result to this NetCDF file (``InferenceData.to_netcdf``).
        attrs: extra attributes (strings or numbers) for the posterior group.

    Returns:
        ``InferenceData`` with the group ``posterior`` (variable ``theta``, dimensions
        ``(chain, draw, parameter)``) and, when ``x_o`` is known, ``observed_data``.  ``az.summary(idata)``
        reports R-hat and bulk/tail ESS equal to :mod:`telescope.samplers.convergence`.
    """
    az = _arviz()
    if estimator is not None:
        prior = estimator.prior if prior is None else prior
        if samples is None and chains is None:
            chains = getattr(estimator, "chains", None)
            if chains is None:
                raise ValueError("estimator has no MCMC chains yet (est.chains is set by NLE/NRE sampling by MCMC); "
                                 "pass samples= or chains=")
        if x_o is None:
            x_o = getattr(estimator, "default_x", None)
    if (samples is None) == (chains is None):
        raise ValueError("pass exactly one of samples (n, d) and chains (chains, draws, d)")
    if chains is not None:
        arr = _array("chains", chains)
        if arr.ndim != 3:
            raise ValueError(f"chains must have shape (chains, draws, d), got {arr.shape}")
    else:
        arr = _array("samples", samples)
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim != 3:
            raise ValueError(f"samples must have shape (n, d) or (chains, draws, d), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"no draws: samples/chains of shape {arr.shape}")
    d = arr.shape[2]
    if names is None:
        names = [f"theta_{i}" for i in range(d)]
    names = [str(v) for v in names]
    if len(names) != d or len(set(names)) != d:
        raise ValueError(f"names must hold {d} distinct names (one per parameter), got {names}")
    post_attrs = {"created_by": "telescope"}
    if prior is not None:
        post_attrs["prior"] = repr(prior)[:500]
        bounds = support_bounds(prior, d)
        if bounds is not None:
            post_attrs["support_lower"], post_attrs["support_upper"] = bounds
    for key, value in (attrs or {}).items():
        if not isinstance(value, (str, int, float, list, tuple)):
            raise TypeError(f"attrs[{key!r}] must be a string, a number or a list of numbers, got "
                            f"{type(value).__name__}")
        post_attrs[str(key)] = list(value) if isinstance(value, tuple) else value
    kwargs = {"posterior": {"theta": arr}, "coords": {"parameter": names}, "dims": {"theta": ["parameter"]}}
    if x_o is not None:
        x = _array("x_o", x_o)
        kwargs["observed_data"] = {"x_o": x}
        kwargs["dims"]["x_o"] = [f"x_o_dim_{i}" for i in range(x.ndim)]
    idata = az.from_dict(**kwargs)
    idata.posterior.attrs.update(post_attrs)
    if save is not None:
        idata.to_netcdf(str(save))
    return idata
