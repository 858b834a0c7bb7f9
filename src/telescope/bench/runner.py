"""Running the grid: one simulation set per (task, budget, seed), one training per method kind, scored cells.

See :mod:`telescope.bench` for what a cell records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import metrics as M
from ..interop.sbi import from_sbi
from ..simulation import simulate
from .grid import NO_REFERENCE, cell_key, cells, get_task
from .methods import REGISTRY, sampler
from .methods import fit as _fit
from .results import append, open_results

__all__ = ["run", "run_cell", "REFERENCE_N", "COVERAGE_PAIRS", "COVERAGE_SAMPLES"]

COVERAGE_PAIRS, COVERAGE_SAMPLES = 200, 500


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[bench] {msg}", flush=True)


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
    cells that differ only in ``n_obs`` or in the tall-data sampler (:attr:`Method.trained_as <telescope.bench.methods.Method.trained_as>`) reuse one
    training, and their record says ``"shared_train": true`` (its ``train_s`` is the original training's).
    """
    kind = REGISTRY[cell["method"]].kind
    shared = trained is not None and kind in trained
    if shared:
        model, epochs, train_s = trained[kind]
    else:
        t0 = time.perf_counter()
        model, epochs = _fit(kind, task, theta, x, cell["seed"], spec)
        train_s = time.perf_counter() - t0
        if trained is not None:
            trained[kind] = (model, epochs, train_s)
    sample, log_prob, est = sampler(cell["method"], model, spec.get("sample_options", {}).get(cell["method"]))
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
    if est is None and REGISTRY[cell["method"]].from_sbi:  # an sbi posterior through telescope's interface
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


def _pairs(task, seed: int):
    """``COVERAGE_PAIRS`` fresh simulations (a seed no training set uses) for the calibration metrics."""
    return simulate(task.simulator, task.prior, COVERAGE_PAIRS, seed=10**9 + seed, progress_bar=False)


def _gaps(name: str, alphas, curve) -> dict:
    """A calibration curve as the mean signed gap ``curve - alpha``, the largest ``|gap|`` and the curve itself."""
    gap = curve - alphas
    return {name: float(gap.mean()), f"{name}_max_gap": float(gap.abs().max()),
            f"{name}_curve": [round(float(c), 4) for c in curve]}


def _coverage(est, task, seed: int) -> dict:
    """Expected coverage on ``COVERAGE_PAIRS`` fresh simulations (a seed no training set uses)."""
    theta, x = _pairs(task, seed)
    return _gaps("coverage", *M.coverage(est, theta, x, n_samples=COVERAGE_SAMPLES, seed=seed))


def _tarp(est, task, seed: int) -> dict:
    """TARP expected coverage on the coverage pairs (same seed, so the same simulations as ``coverage``)."""
    theta, x = _pairs(task, seed)
    return _gaps("tarp", *M.tarp_coverage(est, theta, x, n_samples=COVERAGE_SAMPLES, seed=seed))


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
    out = Path(out)
    done = open_results(out, spec)
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
            task = get_task(c["task"], spec)
            t0 = time.perf_counter()
            theta, x = simulate(task.simulator, task.prior, c["budget"], seed=c["seed"], progress_bar=False)
            sims[skey] = (task, theta, x, time.perf_counter() - t0)
        task, theta, x, sim_s = sims[skey]
        t0 = time.perf_counter()
        try:
            rec = run_cell(c, spec, task, theta, x, sim_s, trained)
        except (RuntimeError, ValueError, torch.linalg.LinAlgError) as e:
            rec = {"kind": "cell", "cell": c, "error": f"{type(e).__name__}: {e}", "simulate_s": sim_s}
        rec["wall_s"] = time.perf_counter() - t0
        append(out, rec)
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
