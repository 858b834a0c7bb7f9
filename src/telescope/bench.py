"""``telescope bench``: a resumable grid of methods x tasks x simulation budgets x seeds (x n_obs).

One *cell* is one scored posterior: ``(method, task, budget, seed, n_obs)``.  The cell simulates
``budget`` pairs with ``ts.simulate(task.simulator, task.prior, budget, seed=seed)`` (shared by all
methods of the same task, budget and seed), trains the method (or reuses the estimator already
trained on the same simulations when only ``n_obs`` or the tall-data sampler differs: ``npse``,
``npse_gauss``, ``npse_jac`` and ``npse_fnpse`` share one score network), draws ``samples`` posterior samples
for each listed observation (a set of ``n_obs`` iid observations of the same parameter when
``n_obs > 1``: ``task.tall_observation``) and scores them against the task's reference samples:

* ``c2st``: classifier two-sample test accuracy (:func:`telescope.metrics.c2st`; 0.5 is perfect),
* ``mmd``: unbiased squared MMD with a Gaussian kernel (:func:`telescope.metrics.mmd`),
* ``swd``: sliced 2-Wasserstein distance (:func:`telescope.metrics.sliced_wasserstein`),
* ``nlpd``: ``-log q(theta* | x)`` of the true parameter, for methods whose density is normalised
  (``npe``, ``sbi_npe``); left out for the others, whose log densities are unnormalised.
* ``coverage`` (opt in: ``--metrics c2st,coverage``): expected HPD coverage
  (:func:`telescope.metrics.coverage`) over ``COVERAGE_PAIRS`` fresh prior draws and their
  simulations, ``COVERAGE_SAMPLES`` posterior samples each; recorded per cell as the mean signed gap
  ``coverage - alpha`` over the nominal levels (``< 0``: overconfident), with ``coverage_max_gap``
  (largest ``|coverage - alpha|``) and the curve at 101 levels.  Telescope's npe, nle, nre_c and
  nre_b have batched samplers for it, and ``sbi_npe`` through :func:`telescope.interop.sbi.from_sbi` (the
  same interface); the other methods leave it out.
* ``tarp`` (opt in): TARP expected coverage (:func:`telescope.metrics.tarp_coverage`, Lemos et al.
  2023) on the same pairs: samples only, so every method with a batched sampler; recorded as
  ``tarp`` (mean signed gap ``ecp - alpha``), ``tarp_max_gap`` and ``tarp_curve``.

and records wall times (``simulate_s``, ``train_s``, ``sample_s``, ``metric_s``).

**Results file** (JSON lines): the first line is a header with the grid spec; then one line per
finished cell, written with flush + fsync.  Rerunning the same command skips the cells already in
the file, so an interrupted run resumes where it stopped (a half-written last line is dropped).  A
results file whose header holds a different spec is refused with the differences listed.  A cell
whose method raises is recorded with its ``error`` and not retried (``--retry-errors`` retries it).

**Methods.**  ``npe``, ``nle``, ``nre_c`` (gamma = 1, K = 9), ``nre_b`` (gamma = inf), ``npse``
(plain DDIM for one observation, GAUSS for sets) and its tall-data samplers ``npse_gauss``,
``npse_jac``, ``npse_fnpse`` — with the library's defaults unless ``fit_options`` / ``sample_options``
change them.  ``npe`` and the ``sbi`` peers
``sbi_npe``, ``sbi_nle``, ``sbi_nre_c`` (optional, with their own defaults; ``pip install sbi``) take
``n_obs = 1`` only.

Example:
    >>> spec = make_spec(methods=["npe"], tasks=["two_moons"], budgets=[1000], seeds=[0])
    >>> len(cells(spec))
    1
"""

from __future__ import annotations

import inspect
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["METHODS", "METRICS", "make_spec", "cells", "run", "read_results", "summary", "summary_table", "plot"]

METHODS = ("npe", "nle", "nre_c", "nre_b", "npse", "npse_gauss", "npse_jac", "npse_fnpse",
           "sbi_npe", "sbi_nle", "sbi_nre_c")
TALL_METHODS = ("nle", "nre_c", "nre_b", "npse", "npse_gauss", "npse_jac", "npse_fnpse")
NORMALISED = ("npe", "sbi_npe")  # methods whose log density is normalised: NLPD is meaningful
METRICS = ("c2st", "mmd", "swd", "nlpd", "coverage", "tarp")
DEFAULT_METRICS = ("c2st", "mmd", "swd", "nlpd")
NO_REFERENCE = ("nlpd", "coverage", "tarp")  # metrics that need no reference posterior
COVERAGE_PAIRS, COVERAGE_SAMPLES = 200, 500
FORMAT = 1


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[bench] {msg}", flush=True)


# -- the grid ---------------------------------------------------------------------------------
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
    from . import tasks as task_registry

    if observation_set not in ("sbibm", "telescope"):
        raise ValueError(f"observation_set must be 'sbibm' or 'telescope', got {observation_set!r}")

    def listed(name, values, allowed=None):
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

    def ints(name, values, minimum):
        values = listed(name, values)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                what = " (simulation counts)" if name == "budgets" else ""
                raise ValueError(f"{name} must be integers >= {minimum}{what}, got {v!r}")
        return values

    methods = listed("methods", methods, METHODS)
    tasks = listed("tasks", tasks, tuple(task_registry.list()))
    metrics = listed("metrics", metrics, METRICS)
    budgets = ints("budgets", budgets, 1)
    seeds = ints("seeds", seeds, 0)
    observations = ints("observations", observations, 1)
    n_obs = ints("n_obs", n_obs, 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if c2st_max_samples is not None and (not isinstance(c2st_max_samples, int) or c2st_max_samples < 10):
        raise ValueError(f"c2st_max_samples must be an integer >= 10 or None, got {c2st_max_samples!r}")
    if max(n_obs) > 1:
        single = [m for m in methods if m not in TALL_METHODS]
        if single:
            raise ValueError(f"methods {single} take one observation only (n_obs = 1); methods for n_obs > 1: "
                             f"{', '.join(TALL_METHODS)}")
    sbibm_sets = {}
    for name in tasks:
        task = task_registry.get(name, **_task_options(name, observation_set))
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
    if any(m.startswith("sbi_") for m in methods):
        _import_sbi()
    spec = {"format": FORMAT, "methods": methods, "tasks": tasks, "budgets": budgets, "seeds": seeds,
            "observations": observations, "n_obs": n_obs, "metrics": metrics, "samples": samples,
            "c2st_max_samples": c2st_max_samples, "max_epochs": max_epochs, "max_time": max_time}
    if sbibm_sets:  # only then: results files of grids without such tasks still resume
        spec["observation_sets"] = sbibm_sets
    ours = [m for m in methods if not m.startswith("sbi_")]
    trained = list(dict.fromkeys(TRAINED_AS.get(m, m) for m in ours))  # the estimators the grid trains
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
                unknown = sorted(set(kw) - _fit_keywords(m))
                if unknown:
                    raise ValueError(f"fit_options for {m!r} has unknown arguments {unknown}; known: "
                                     f"{', '.join(sorted(_fit_keywords(m)))}")
        spec[name] = json.loads(json.dumps(options))  # plain JSON, as the header stores it
    return spec


def _task_options(name: str, observation_set: str) -> dict:
    """Constructor arguments choosing the observation set of task ``name`` (none for tasks without sbibm data)."""
    from . import tasks as task_registry

    task_registry.list()  # load the built-in tasks
    cls = task_registry._REGISTRY.get(name)
    return {"observations": observation_set} if getattr(cls, "sbibm_name", "") else {}


def _get_task(name: str, spec: dict):
    """Task ``name`` on the observation set the spec records (sbibm's data where listed, else the library's)."""
    from . import tasks as task_registry

    chosen = spec.get("observation_sets", {}).get(name, "telescope")
    return task_registry.get(name, **_task_options(name, chosen))


def _estimator_class(kind: str):
    import telescope as ts

    return {"npe": ts.NPE, "nle": ts.NLE, "nre_c": ts.NRE, "nre_b": ts.NRE, "npse": ts.NPSE}[kind]


def _init_keywords(kind: str) -> set[str]:
    """The constructor arguments of an estimator kind (``fit_options`` keys that go to the constructor)."""
    return set(inspect.signature(_estimator_class(kind).__init__).parameters)


def _fit_keywords(kind: str) -> set[str]:
    """Arguments ``fit_options`` may set for an estimator kind: its constructor's and the training loop's."""
    from .training import train

    cls = _estimator_class(kind)
    skip = {"self", "prior", "module", "loss_fn", "data", "progress_bar", "desc", "device", "seed", "backward",
            "embedding"}  # the grid sets seeds; modules and callables are not JSON
    names = _init_keywords(kind) | set(inspect.signature(train).parameters)
    names |= set(inspect.signature(cls.fit).parameters) - {"theta", "x", "train_kwargs"}
    if kind == "nre_b":
        names.discard("gamma")  # nre_b is gamma = inf
    return {n for n in names if n not in skip and not n.startswith("_")} - {"args", "kwargs"}


def cells(spec: dict) -> list[dict]:
    """The cells of a spec, in run order (task, budget, seed outermost: one simulation per triple)."""
    return [{"task": t, "budget": b, "seed": s, "n_obs": k, "method": m}
            for t in spec["tasks"] for b in spec["budgets"] for s in spec["seeds"]
            for k in spec["n_obs"] for m in spec["methods"]]


def cell_key(c: dict) -> tuple:
    return (c["method"], c["task"], c["budget"], c["seed"], c["n_obs"])


# -- the results file -------------------------------------------------------------------------
def read_results(path) -> tuple[dict | None, list[dict]]:
    """``(spec, cell records)`` of a results file; a half-written last line is ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results file at {path}")
    spec, rows = None, []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # an interrupted write
        if rec.get("kind") == "header":
            spec = rec["spec"]
        elif rec.get("kind") == "cell":
            rows.append(rec)
    return spec, rows


def _open_results(path: Path, spec: dict) -> dict:
    """Create the file with its header, or check its header against ``spec``; returns the finished cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        data = path.read_bytes()
        if not data.endswith(b"\n"):  # killed mid-write: drop the partial line before appending
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        old, rows = read_results(path)
        if old is None:
            raise ValueError(f"{path} is not a telescope bench results file (no header line)")
        if old != spec:
            diff = [f"{k}: file has {old.get(k)!r}, this run {spec.get(k)!r}"
                    for k in sorted(set(old) | set(spec)) if old.get(k) != spec.get(k)]
            raise ValueError(f"{path} holds results of a different grid ({'; '.join(diff)}); use another --out "
                             f"file or the same grid")
        return {cell_key(r["cell"]): r for r in rows}
    _append(path, {"kind": "header", "spec": spec, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return {}


def _append(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- methods ----------------------------------------------------------------------------------
def _import_sbi():
    try:
        import sbi.inference  # noqa: F401
    except ImportError as e:
        raise ValueError(f"the sbi_* methods need the sbi package ({e}); install it with: pip install sbi") from None


# methods that share one trained estimator with another (they differ only in how they sample)
TRAINED_AS = {"npse_gauss": "npse", "npse_jac": "npse", "npse_fnpse": "npse"}


def _fit(kind: str, task, theta, x, seed: int, spec: dict):
    """Train one estimator of ``kind`` (a method name, see :data:`TRAINED_AS`); returns ``(model, epochs)``,
    ``model`` a telescope estimator or, for the sbi peers, an sbi posterior."""
    if kind.startswith("sbi_"):
        return _fit_sbi(kind, task, theta, x, seed, spec)
    fit = {"progress_bar": False}
    if spec["max_epochs"] is not None:
        fit["max_epochs"] = spec["max_epochs"]
    if spec["max_time"] is not None:
        fit["max_time"] = spec["max_time"]
    cls = _estimator_class(kind)
    options = dict(spec.get("fit_options", {}).get(kind, {}))
    init = {k: options.pop(k) for k in _init_keywords(kind) & set(options)}
    if kind in ("nre_c", "nre_b"):
        init.setdefault("gamma", 1.0 if kind == "nre_c" else math.inf)
        fit.setdefault("mi_samples", 0)
    est = cls(task.prior, seed=seed, **init).fit(theta, x, **{**fit, **options})
    return est, est.history.get("epochs")


def _sampler(method: str, model, options: dict | None = None):
    """``(sample(x_o, n, seed), log_prob(theta, x_o) or None, estimator or None)`` of a trained ``model``
    (``estimator`` is None for the sbi peers); ``options`` are extra keyword arguments of ``model.sample``."""
    options = options or {}
    if method.startswith("sbi_"):
        def sample(x_o, n, s):
            torch.manual_seed(s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model.sample((n,), x=x_o, show_progress_bars=False)

        def log_prob(th, x_o):
            return model.log_prob(th, x=x_o)

        return sample, (log_prob if method in NORMALISED else None), None
    tall = {"npse": "gauss", "npse_gauss": "gauss", "npse_jac": "jac", "npse_fnpse": "fnpse"}.get(method)

    def sample(x_o, n, s):
        if tall is not None and x_o.dim() > 1 and x_o.shape[0] > 1:
            return model.sample(x_o, n, method=tall, seed=s, **options)
        return model.sample(x_o, n, seed=s, **options)
    return sample, (model.log_prob if method in NORMALISED else None), model


def _fit_sbi(method, task, theta, x, seed, spec):
    _import_sbi()
    import sbi.inference as si

    torch.manual_seed(seed)
    cls = {"sbi_npe": si.NPE, "sbi_nle": si.NLE, "sbi_nre_c": si.NRE_C}[method]
    inference = cls(prior=task.prior, show_progress_bars=False)
    kw = {} if spec["max_epochs"] is None else {"max_num_epochs": spec["max_epochs"]}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.chdir(tmp)  # sbi writes TensorBoard logs under ./sbi-logs
        try:
            inference.append_simulations(theta, x).train(**kw)
        finally:
            os.chdir(cwd)
    return inference.build_posterior(), inference.summary.get("epochs_trained", [None])[-1]


# -- one cell ---------------------------------------------------------------------------------
REFERENCE_N = 10_000  # references are computed (and cached) at this size at least, then subsampled


def _reference(task, i: int, n_obs: int, n: int):
    """``n`` reference samples.  Smaller sets are cut from the standard 10,000-sample reference: a short
    MCMC run (e.g. 20 draws per chain for 2,000 samples) makes the R-hat check noisy enough to fail."""
    m = max(n, REFERENCE_N)
    ref = task.reference_samples(i, m) if n_obs == 1 else task.tall_reference_samples(i, n_obs, m)
    return ref[:n]


def run_cell(cell: dict, spec: dict, task, theta, x, simulate_s: float, trained: dict | None = None) -> dict:
    """Train, sample and score one cell; returns its record (without the file bookkeeping).

    ``trained`` caches the estimators trained on this simulation set (``{kind: (model, epochs, train_s)}``):
    cells that differ only in ``n_obs`` or in the tall-data sampler (:data:`TRAINED_AS`) reuse one
    training, and their record says ``"shared_train": true`` (its ``train_s`` is the original training's).
    """
    from . import metrics as M

    kind = TRAINED_AS.get(cell["method"], cell["method"])
    shared = trained is not None and kind in trained
    if shared:
        model, epochs, train_s = trained[kind]
    else:
        t0 = time.perf_counter()
        model, epochs = _fit(kind, task, theta, x, cell["seed"], spec)
        train_s = time.perf_counter() - t0
        if trained is not None:
            trained[kind] = (model, epochs, train_s)
    sample, log_prob, est = _sampler(cell["method"], model, spec.get("sample_options", {}).get(cell["method"]))
    per_obs, sample_s, metric_s = [], 0.0, 0.0
    for i in spec["observations"]:
        x_o = task.observation(i) if cell["n_obs"] == 1 else task.tall_observation(i, cell["n_obs"])
        t0 = time.perf_counter()
        s = sample(x_o, spec["samples"], cell["seed"] * 1000 + i).float()
        sample_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        row = {"observation": i}
        ok = torch.isfinite(s).all(-1)
        if not ok.all():
            row["nonfinite_samples"] = int((~ok).sum())
            s = s[ok]
        ref = None
        if any(m not in NO_REFERENCE for m in spec["metrics"]):
            ref = _reference(task, i, cell["n_obs"], spec["samples"])
        if "c2st" in spec["metrics"]:
            row["c2st"] = M.c2st(s, ref, seed=i, max_samples=spec["c2st_max_samples"],
                                 n_jobs=torch.get_num_threads())
        if "mmd" in spec["metrics"]:
            row["mmd"] = M.mmd(s, ref, seed=i)
        if "swd" in spec["metrics"]:
            row["swd"] = M.sliced_wasserstein(s, ref, seed=i)
        if "nlpd" in spec["metrics"] and log_prob is not None:
            truth = task.true_parameters(i)[None]
            with torch.no_grad():
                row["nlpd"] = float(-log_prob(truth, x_o).reshape(-1)[0])
        metric_s += time.perf_counter() - t0
        per_obs.append(row)
    rec = {"kind": "cell", "cell": cell, "epochs": epochs, "simulate_s": simulate_s, "train_s": train_s,
           "sample_s": sample_s, "metric_s": metric_s, "observations": per_obs,
           "observation_set": getattr(task, "observation_set", "telescope"),
           "reference_source": getattr(task, "reference_source", task.reference_kind)}
    if shared:
        rec["shared_train"] = True
    for m in spec["metrics"]:
        vals = [r[m] for r in per_obs if m in r and math.isfinite(r[m])]
        if vals:
            rec[m] = sum(vals) / len(vals)
    if est is None and cell["method"] == "sbi_npe":  # an sbi posterior through telescope's interface
        from .interop.sbi import from_sbi

        est = from_sbi(model)
    if "coverage" in spec["metrics"] and cell["n_obs"] == 1 and _batched(est):
        t0 = time.perf_counter()
        rec.update(_coverage(est, task, cell["seed"]))
        rec["metric_s"] += time.perf_counter() - t0
    if "tarp" in spec["metrics"] and cell["n_obs"] == 1 and callable(getattr(est, "sample_batched", None)):
        t0 = time.perf_counter()
        rec.update(_tarp(est, task, cell["seed"]))
        rec["metric_s"] += time.perf_counter() - t0
    return rec


def _batched(est) -> bool:
    return est is not None and all(callable(getattr(est, a, None)) for a in ("sample_batched", "log_prob_batched"))


def _coverage(est, task, seed: int) -> dict:
    """Expected coverage on ``COVERAGE_PAIRS`` fresh simulations (a seed no training set uses)."""
    import telescope as ts

    from . import metrics as M

    theta, x = ts.simulate(task.simulator, task.prior, COVERAGE_PAIRS, seed=10**9 + seed, progress_bar=False)
    alphas, cov = M.coverage(est, theta, x, n_samples=COVERAGE_SAMPLES, seed=seed)
    gap = cov - alphas
    return {"coverage": float(gap.mean()), "coverage_max_gap": float(gap.abs().max()),
            "coverage_curve": [round(float(c), 4) for c in cov]}


def _tarp(est, task, seed: int) -> dict:
    """TARP expected coverage on the coverage pairs (same seed, so the same simulations as ``coverage``)."""
    import telescope as ts

    from . import metrics as M

    theta, x = ts.simulate(task.simulator, task.prior, COVERAGE_PAIRS, seed=10**9 + seed, progress_bar=False)
    alphas, ecp = M.tarp_coverage(est, theta, x, n_samples=COVERAGE_SAMPLES, seed=seed)
    gap = ecp - alphas
    return {"tarp": float(gap.mean()), "tarp_max_gap": float(gap.abs().max()),
            "tarp_curve": [round(float(c), 4) for c in ecp]}


# -- the driver -------------------------------------------------------------------------------
def run(spec: dict, out, *, max_cells: int | None = None, retry_errors: bool = False, quiet: bool = False,
        on_cell: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the cells of ``spec`` not yet in ``out``, appending each record as it finishes; returns all records.

    Arguments:
        spec: from :func:`make_spec`.
        out: results file (JSON lines; created with a header line when missing).
        max_cells: stop after this many newly computed cells (``None``: run to the end).
        retry_errors: recompute cells recorded with an error.
        quiet: no progress lines.
        on_cell: called with each new record (tests use it to interrupt a run).
    """
    import telescope as ts

    out = Path(out)
    done = _open_results(out, spec)
    todo = cells(spec)
    if retry_errors:
        done = {k: r for k, r in done.items() if "error" not in r}
    n_skip = sum(cell_key(c) in done for c in todo)
    _say(f"{len(todo)} cells, {n_skip} already in {out}", quiet)
    sims: dict[tuple, tuple] = {}
    trained: dict[str, tuple] = {}  # estimators trained on the simulation set in ``sims``
    new = 0
    t_all = time.perf_counter()
    for j, c in enumerate(todo, 1):
        label = f"{c['method']} {c['task']} n={c['budget']} seed={c['seed']}" + \
            (f" n_obs={c['n_obs']}" if c["n_obs"] > 1 else "")
        if cell_key(c) in done:
            continue
        if max_cells is not None and new >= max_cells:
            _say(f"stopping after {new} new cells (--max-cells); rerun to continue", quiet)
            break
        skey = (c["task"], c["budget"], c["seed"])
        if skey not in sims:
            sims.clear()  # one simulation set (and its task, and its estimators) in memory at a time
            trained.clear()
            task = _get_task(c["task"], spec)
            t0 = time.perf_counter()
            theta, x = ts.simulate(task.simulator, task.prior, c["budget"], seed=c["seed"], progress_bar=False)
            sims[skey] = (task, theta, x, time.perf_counter() - t0)
        task, theta, x, sim_s = sims[skey]
        t0 = time.perf_counter()
        try:
            rec = run_cell(c, spec, task, theta, x, sim_s, trained)
        except (RuntimeError, ValueError, torch.linalg.LinAlgError) as e:
            rec = {"kind": "cell", "cell": c, "error": f"{type(e).__name__}: {e}", "simulate_s": sim_s}
        rec["wall_s"] = time.perf_counter() - t0
        _append(out, rec)
        done[cell_key(c)] = rec
        new += 1
        if "error" in rec:
            _say(f"[{j}/{len(todo)}] {label}: ERROR {rec['error']}", quiet)
        else:
            shown = ", ".join(f"{m} {rec[m]:.3g}" for m in spec["metrics"] if m in rec)
            _say(f"[{j}/{len(todo)}] {label}: {shown} (train {rec['train_s']:.1f} s, sample {rec['sample_s']:.1f} s,"
                 f" metrics {rec['metric_s']:.1f} s)", quiet)
        if on_cell is not None:
            on_cell(rec)
    _say(f"{new} new cells in {time.perf_counter() - t_all:.0f} s; results in {out}", quiet)
    return [done[cell_key(c)] for c in todo if cell_key(c) in done]


# -- summary and plots ------------------------------------------------------------------------
def summary(rows: list[dict], metrics=METRICS) -> list[dict]:
    """Mean and sd over seeds of each metric (already averaged over observations) and of the wall times."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["cell"]
        groups.setdefault((c["task"], c["method"], c["budget"], c["n_obs"]), []).append(r)
    out = []
    for (task, method, budget, n_obs), rs in sorted(groups.items()):
        ok = [r for r in rs if "error" not in r]
        row = {"task": task, "method": method, "budget": budget, "n_obs": n_obs, "seeds": len(ok),
               "errors": len(rs) - len(ok)}
        for m in (*metrics, "train_s", "sample_s"):
            vals = [r[m] for r in ok if m in r]
            if vals:
                row[m] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        out.append(row)
    return out


def summary_table(rows: list[dict], metrics=METRICS) -> str:
    """A plain-text table of :func:`summary` (``mean ± sd`` over seeds)."""
    stats = summary(rows, metrics)
    cols = [m for m in (*metrics, "train_s", "sample_s") if any(m in s for s in stats)]
    head = ["task", "method", "budget", "n_obs", "seeds"] + cols
    lines = []
    for s in stats:
        cells_ = [s["task"], s["method"], str(s["budget"]), str(s["n_obs"]),
                  str(s["seeds"]) + (f" ({s['errors']} err)" if s["errors"] else "")]
        cells_ += [f"{s[m][0]:.3f} ± {s[m][1]:.3f}" if m in s else "-" for m in cols]
        lines.append(cells_)
    widths = [max(len(h), *(len(line[k]) for line in lines)) if lines else len(h) for k, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])


def plot(rows: list[dict], out_dir, metrics=METRICS) -> list[Path]:
    """One PNG per task: each metric against the budget (log axis), one line per method (and n_obs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = summary(rows, metrics)
    paths = []
    for task in sorted({s["task"] for s in stats}):
        st = [s for s in stats if s["task"] == task]
        shown = [m for m in metrics if any(m in s for s in st)]
        if not shown:
            continue
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.3), squeeze=False)
        for ax, m in zip(axes[0], shown):
            for method, n_obs in sorted({(s["method"], s["n_obs"]) for s in st}):
                pts = sorted((s["budget"], *s[m]) for s in st if s["method"] == method and s["n_obs"] == n_obs
                             and m in s)
                if pts:
                    b, mu, sd = zip(*pts)
                    label = method + (f" (n_obs={n_obs})" if n_obs > 1 else "")
                    ax.errorbar(b, mu, yerr=sd, marker="o", capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_xlabel("simulations")
            ax.set_ylabel(m)
            if m == "c2st":
                ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(task)
        fig.tight_layout()
        path = out_dir / f"{task}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
