"""The benchmark's method registry: one :class:`Method` per method, the one place that says what it is.

A method names the estimator it trains (telescope's own, or an sbi peer's, see :mod:`.peers`), the
method whose trained estimator it shares when it differs only in how it samples, whether it takes
sets of ``n_obs > 1`` iid observations (and with which tall-data sampler), whether its log density is
normalised (NLPD is meaningful), and the constructor and ``fit`` defaults the grid gives it.

Example:
    >>> REGISTRY["npse_jac"].trained_as, REGISTRY["npse_jac"].tall_sampler
    ('npse', 'jac')
    >>> TRAINED_AS["npse_gauss"], "npe" in TALL_METHODS
    ('npse', False)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from .. import estimators
from ..training import train
from . import peers

__all__ = ["Method", "REGISTRY", "METHODS", "TALL_METHODS", "NORMALISED", "TRAINED_AS", "estimator_class",
           "init_keywords", "fit_keywords", "fit", "sampler"]


@dataclass(frozen=True)
class Method:
    """One benchmark method.

    Arguments:
        name: the method's name in grids and results files.
        estimator: the class trained: a telescope estimator (``"NPE"``, ``"NLE"``, ``"NRE"``, ``"NPSE"``) or,
            for a peer, an ``sbi.inference`` trainer (``"NPE"``, ``"NLE"``, ``"NRE_C"``).
        peer: trained and sampled by the ``sbi`` package (:mod:`.peers`).
        trained_as: the method whose trained estimator this one reuses (it differs only in how it samples).
        tall: takes sets of ``n_obs > 1`` iid observations.
        tall_sampler: ``sample(..., method=)`` for such sets (``None``: the estimator's own handling).
        normalised: its log density is normalised, so NLPD is meaningful.
        init: constructor defaults (``fit_options`` may override them).
        fit: ``fit`` defaults (``fit_options`` may override them).
        fixed: constructor arguments the method fixes (``fit_options`` may not set them).
        from_sbi: a peer whose posterior is scored for coverage and TARP through
            :func:`telescope.interop.sbi.from_sbi` (telescope's batched sampling interface).
    """

    name: str
    estimator: str
    peer: bool = False
    trained_as: str | None = None
    tall: bool = False
    tall_sampler: str | None = None
    normalised: bool = False
    init: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    from_sbi: bool = False

    @property
    def kind(self) -> str:
        """The trained estimator's method name (:attr:`trained_as`, else the method's own)."""
        return self.trained_as or self.name


_NRE_FIT = {"mi_samples": 0}

#: every method, in the order grids list them
REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("npe", "NPE", normalised=True),
    Method("nle", "NLE", tall=True),
    Method("nre_c", "NRE", tall=True, init={"gamma": 1.0}, fit=_NRE_FIT),
    Method("nre_b", "NRE", tall=True, init={"gamma": math.inf}, fit=_NRE_FIT, fixed=("gamma",)),
    Method("npse", "NPSE", tall=True, tall_sampler="gauss"),
    Method("npse_gauss", "NPSE", trained_as="npse", tall=True, tall_sampler="gauss"),
    Method("npse_jac", "NPSE", trained_as="npse", tall=True, tall_sampler="jac"),
    Method("npse_fnpse", "NPSE", trained_as="npse", tall=True, tall_sampler="fnpse"),
    Method("sbi_npe", "NPE", peer=True, normalised=True, from_sbi=True),
    Method("sbi_nle", "NLE", peer=True),
    Method("sbi_nre_c", "NRE_C", peer=True),
)}

METHODS = tuple(REGISTRY)
TALL_METHODS = tuple(m.name for m in REGISTRY.values() if m.tall)
NORMALISED = tuple(m.name for m in REGISTRY.values() if m.normalised)  # NLPD is meaningful
#: methods that share one trained estimator with another (they differ only in how they sample)
TRAINED_AS = {m.name: m.trained_as for m in REGISTRY.values() if m.trained_as}


def estimator_class(kind: str):
    """The telescope estimator class that method ``kind`` trains."""
    return getattr(estimators, REGISTRY[kind].estimator)


def init_keywords(kind: str) -> set[str]:
    """The constructor arguments of an estimator kind (``fit_options`` keys that go to the constructor)."""
    return set(inspect.signature(estimator_class(kind).__init__).parameters)


def fit_keywords(kind: str) -> set[str]:
    """Arguments ``fit_options`` may set for an estimator kind: its constructor's and the training loop's."""
    cls = estimator_class(kind)
    skip = {"self", "prior", "module", "loss_fn", "data", "progress_bar", "desc", "device", "seed", "backward",
            "embedding"}  # the grid sets seeds; modules and callables are not JSON
    names = init_keywords(kind) | set(inspect.signature(train).parameters)
    names |= set(inspect.signature(cls.fit).parameters) - {"theta", "x", "train_kwargs"}
    names -= set(REGISTRY[kind].fixed)
    return {n for n in names if n not in skip and not n.startswith("_")} - {"args", "kwargs"}


def fit(kind: str, task, theta, x, seed: int, spec: dict):
    """Train one estimator of ``kind`` (a method name, see :data:`TRAINED_AS`); returns ``(model, epochs)``,
    ``model`` a telescope estimator or, for the sbi peers, an sbi posterior."""
    method = REGISTRY[kind]
    if method.peer:
        return peers.fit(method.estimator, task, theta, x, seed, spec["max_epochs"])
    kw = {"progress_bar": False}
    if spec["max_epochs"] is not None:
        kw["max_epochs"] = spec["max_epochs"]
    if spec["max_time"] is not None:
        kw["max_time"] = spec["max_time"]
    cls = estimator_class(kind)
    options = dict(spec.get("fit_options", {}).get(kind, {}))
    init = {k: options.pop(k) for k in init_keywords(kind) & set(options)}
    for k, v in method.init.items():
        init.setdefault(k, v)
    for k, v in method.fit.items():
        kw.setdefault(k, v)
    est = cls(task.prior, seed=seed, **init).fit(theta, x, **{**kw, **options})
    return est, est.history.get("epochs")


def sampler(name: str, model, options: dict | None = None):
    """``(sample(x_o, n, seed), log_prob(theta, x_o) or None, estimator or None)`` of a trained ``model``
    (``estimator`` is None for the sbi peers); ``options`` are extra keyword arguments of ``model.sample``."""
    method = REGISTRY[name]
    if method.peer:
        sample, log_prob = peers.sampler(model)
        return sample, (log_prob if method.normalised else None), None
    options = options or {}
    tall = method.tall_sampler

    def sample(x_o, n, s):
        if tall is not None and x_o.dim() > 1 and x_o.shape[0] > 1:
            return model.sample(x_o, n, method=tall, seed=s, **options)
        return model.sample(x_o, n, seed=s, **options)
    return sample, (model.log_prob if method.normalised else None), model

