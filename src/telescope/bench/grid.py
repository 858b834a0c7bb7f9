"""The benchmark grid: a checked, JSON-able spec of methods x tasks x budgets x seeds (x n_obs), and its cells.

Example:
    >>> spec = make_spec(methods=["npe"], tasks=["two_moons"], budgets=[1000], seeds=[0])
    >>> len(cells(spec)), cell_key(cells(spec)[0])
    (1, ('npe', 'two_moons', 1000, 0, 1))
"""

from __future__ import annotations

import json

from .. import tasks as task_registry
from . import peers
from .methods import METHODS, REGISTRY, TALL_METHODS, fit_keywords

__all__ = ["METRICS", "DEFAULT_METRICS", "NO_REFERENCE", "FORMAT", "make_spec", "task_options", "get_task", "cells",
           "cell_key"]

METRICS = ("c2st", "mmd", "swd", "nlpd", "coverage", "tarp")
DEFAULT_METRICS = ("c2st", "mmd", "swd", "nlpd")
NO_REFERENCE = ("nlpd", "coverage", "tarp")  # metrics that need no reference posterior
FORMAT = 1


def make_spec(methods, tasks, budgets, seeds=(0,), observations=(1,), n_obs=(1,), metrics=DEFAULT_METRICS,
              samples: int = 10_000, c2st_max_samples: int | None = None, max_epochs: int | None = None,
              max_time: float | None = None, sample_options: dict | None = None,
              fit_options: dict | None = None, observation_set: str = "sbibm") -> dict:
    """Check a grid and return it as a plain (JSON-able) spec; bad names and values raise ``ValueError``.

    ``sample_options`` maps a method of the grid to keyword arguments of its estimator's ``sample``
    (e.g. ``{"npse_jac": {"steps": 250}}``).  ``fit_options`` maps a method to keyword arguments of its
    estimator's constructor and ``fit`` (e.g. ``{"nre_c": {"K": 49, "width": 128, "batch_size": 512}}``;
    the tall-data samplers train as ``npse``, so their network is set under ``"npse"``).  Each is part of
    the spec only when given, so results files of grids without them still resume.

    ``observation_set``: ``"sbibm"`` (default) scores the tasks that ship sbibm's stored data (``sir``,
    ``bernoulli_glm``, ``bernoulli_glm_raw``) on sbibm's observations and reference samples, like for like
    with published numbers; ``"telescope"`` on the library's own draws and references.  The spec lists
    the tasks on sbibm's data under ``"observation_sets"`` (absent when none is), and every cell
    records its ``observation_set``."""
    if observation_set not in ("sbibm", "telescope"):
        raise ValueError(f"observation_set must be 'sbibm' or 'telescope', got {observation_set!r}")

    methods = _listed("methods", methods, METHODS)
    tasks = _listed("tasks", tasks, tuple(task_registry.list()))
    metrics = _listed("metrics", metrics, METRICS)
    budgets = _ints("budgets", budgets, 1)
    seeds = _ints("seeds", seeds, 0)
    observations = _ints("observations", observations, 1)
    n_obs = _ints("n_obs", n_obs, 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if c2st_max_samples is not None and (not isinstance(c2st_max_samples, int) or c2st_max_samples < 10):
        raise ValueError(f"c2st_max_samples must be an integer >= 10 or None, got {c2st_max_samples!r}")
    if max(n_obs) > 1:
        single = [m for m in methods if m not in TALL_METHODS]
        if single:
            raise ValueError(f"methods {single} take one observation only (n_obs = 1); methods for n_obs > 1: "
                             f"{', '.join(TALL_METHODS)}")
    sbibm_sets = _check_tasks(tasks, observations, n_obs, metrics, observation_set)
    if any(REGISTRY[m].peer for m in methods):
        peers.import_sbi()
    spec = {"format": FORMAT, "methods": methods, "tasks": tasks, "budgets": budgets, "seeds": seeds,
            "observations": observations, "n_obs": n_obs, "metrics": metrics, "samples": samples,
            "c2st_max_samples": c2st_max_samples, "max_epochs": max_epochs, "max_time": max_time}
    if sbibm_sets:  # only then: results files of grids without such tasks still resume
        spec["observation_sets"] = sbibm_sets
    ours = [m for m in methods if not REGISTRY[m].peer]
    trained = list(dict.fromkeys(REGISTRY[m].kind for m in ours))  # the estimators the grid trains
    spec.update(_check_options(ours, trained, sample_options, fit_options))
    return spec


def _listed(name, values, allowed=None):
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"unknown {name[:-1]} {', '.join(map(repr, bad))}; available: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates: {values}")
    return values


def _ints(name, values, minimum):
    values = _listed(name, values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            what = " (simulation counts)" if name == "budgets" else ""
            raise ValueError(f"{name} must be integers >= {minimum}{what}, got {v!r}")
    return values


def _check_tasks(tasks, observations, n_obs, metrics, observation_set: str) -> dict:
    """Check that each task has the observations and references the grid needs; returns the tasks on sbibm's data."""
    sbibm_sets = {}
    for name in tasks:
        task = task_registry.get(name, **task_options(name, observation_set))
        if getattr(task, "observation_set", "telescope") == "sbibm":
            sbibm_sets[name] = "sbibm"
        bad = [i for i in observations if i > task.num_observations]
        if bad:
            raise ValueError(f"task {name!r} has observations 1..{task.num_observations}, got {bad}")
        needs_ref = [m for m in metrics if m not in NO_REFERENCE]
        if needs_ref and task.reference_kind is None:
            have = [t for t in task_registry.list() if task_registry.get(t).reference_kind is not None]
            raise ValueError(f"task {name!r} has no reference posterior for metrics {needs_ref}; tasks with one: "
                             f"{', '.join(have)} (or use --metrics nlpd,coverage)")
        if max(n_obs) > 1 and not hasattr(task, "tall_reference_samples") and needs_ref:
            raise ValueError(f"task {name!r} has no tall-data reference (n_obs > 1)")
    return sbibm_sets


def _check_options(ours: list, trained: list, sample_options, fit_options) -> dict:
    """``sample_options`` and ``fit_options`` checked and as plain JSON (only those given)."""
    out = {}
    for name, options, allowed, what in (("sample_options", sample_options, ours, "sample()"),
                                         ("fit_options", fit_options, trained, "constructor and fit()")):
        if not options:
            continue
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise ValueError(f"{name} must map method names to dicts of {what} arguments, got {options!r}")
        bad = [m for m in options if m not in allowed]
        if bad:
            raise ValueError(f"{name} names methods {bad} that are not telescope methods this grid "
                             f"{'samples with' if name == 'sample_options' else 'trains'} ({', '.join(allowed)})")
        if name == "fit_options":
            for m, kw in options.items():
                unknown = sorted(set(kw) - fit_keywords(m))
                if unknown:
                    raise ValueError(f"fit_options for {m!r} has unknown arguments {unknown}; known: "
                                     f"{', '.join(sorted(fit_keywords(m)))}")
        out[name] = json.loads(json.dumps(options))  # plain JSON, as the header stores it
    return out


def task_options(name: str, observation_set: str) -> dict:
    """Constructor arguments choosing the observation set of task ``name`` (none for tasks without sbibm data)."""
    task_registry.list()  # load the built-in tasks
    cls = task_registry._REGISTRY.get(name)
    return {"observations": observation_set} if getattr(cls, "sbibm_name", "") else {}


def get_task(name: str, spec: dict):
    """Task ``name`` on the observation set the spec records (sbibm's data where listed, else the library's)."""
    chosen = spec.get("observation_sets", {}).get(name, "telescope")
    return task_registry.get(name, **task_options(name, chosen))


def cells(spec: dict) -> list[dict]:
    """The cells of a spec, in run order (task, budget, seed outermost: one simulation per triple)."""
    return [{"task": t, "budget": b, "seed": s, "n_obs": k, "method": m}
            for t in spec["tasks"] for b in spec["budgets"] for s in spec["seeds"]
            for k in spec["n_obs"] for m in spec["methods"]]


def cell_key(c: dict) -> tuple:
    return (c["method"], c["task"], c["budget"], c["seed"], c["n_obs"])
