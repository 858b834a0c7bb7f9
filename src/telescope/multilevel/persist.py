"""Saving and loading multilevel estimators, mixtures included (:meth:`Multilevel.save`, :meth:`Multilevel.load`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..estimators.base import Estimator
from .ensemble import Mixture

__all__ = ["save_multilevel", "load_multilevel"]


def save_multilevel(ml, path) -> Path:
    """The estimator in ``path`` (a mixture: its first member there, the others in ``path/member_<k>``) and the
    multilevel settings, plan and mixture weights in ``config.json``."""
    est, mix = ml.estimator, ml.estimator.net
    members = list(mix.members) if isinstance(mix, Mixture) else []
    try:
        for k, member in enumerate(members[1:], start=1):
            est.net = member
            est.save(Path(path) / f"member_{k}")
        if members:
            est.net = members[0]
        path = est.save(path)
    finally:
        est.net = mix
    cfg = json.loads((path / "config.json").read_text())
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ml.options().items()}
    cfg["multilevel"] = {**opts, "n": (est.history.get("multilevel") or {}).get("n"),
                         "allocation": ml.allocation,
                         "mixture_weights": mix.weights if isinstance(mix, Mixture) else None}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def load_multilevel(cls, options, path, prior, **kwargs):
    """A ``cls`` (:class:`Multilevel`) rebuilt from :func:`save_multilevel`'s folder; ``options`` are the
    constructor's keyword names read back from ``config.json``."""
    est = Estimator.load(path, prior, **kwargs)
    cfg = json.loads((Path(path) / "config.json").read_text()).get("multilevel", {})
    ml = cls(est, **{k: cfg[k] for k in options if k in cfg})
    ml.allocation = cfg.get("allocation")
    w = cfg.get("mixture_weights")
    if w:
        members = [est.net] + [Estimator.load(Path(path) / f"member_{k}", prior, **kwargs).net
                               for k in range(1, len(w))]
        est.net = Mixture(members, w).to(est.device).eval()
    return ml
