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

**Layout.**  :mod:`~telescope.bench.methods` (the method registry: one :class:`~telescope.bench.methods.Method`
per method), :mod:`~telescope.bench.grid` (the spec and its cells), :mod:`~telescope.bench.runner`
(training, sampling, scoring), :mod:`~telescope.bench.results` (the results file),
:mod:`~telescope.bench.report` (tables and figures), :mod:`~telescope.bench.peers` (the ``sbi`` peer).
"""

from __future__ import annotations

# the private names are those of the single module this package was (tests and benchmark scripts use them)
from . import grid, methods, peers, report, results, runner
from .grid import DEFAULT_METRICS, FORMAT, METRICS, NO_REFERENCE, cell_key, cells, make_spec
from .grid import get_task as _get_task  # noqa: F401
from .grid import task_options as _task_options  # noqa: F401
from .methods import METHODS, NORMALISED, REGISTRY, TALL_METHODS, TRAINED_AS, Method
from .methods import fit as _fit  # noqa: F401
from .methods import sampler as _sampler  # noqa: F401
from .report import plot, summary, summary_table
from .results import read_results
from .runner import (
    COVERAGE_PAIRS,
    COVERAGE_SAMPLES,
    REFERENCE_N,
    _reference,  # noqa: F401
    run,
    run_cell,
)

__all__ = ["METHODS", "METRICS", "make_spec", "cells", "run", "read_results", "summary", "summary_table", "plot",
           "DEFAULT_METRICS", "FORMAT", "NO_REFERENCE", "NORMALISED", "TALL_METHODS", "TRAINED_AS", "REGISTRY", "Method",
           "cell_key", "run_cell", "COVERAGE_PAIRS", "COVERAGE_SAMPLES", "REFERENCE_N", "grid", "methods", "peers",
           "report", "results", "runner"]
