"""Whole-fit time of the default multilevel estimator against the previous default and one fidelity alone.

On each case of ``ml_equal_cost.py`` (the same data, seeds and networks), three fits are timed in ONE
process, alternated, the fastest of ``--runs`` each (the machines are shared and noisy; only ratios measured
together mean anything):

* ``ml`` — ``Multilevel(est).fit(levels)`` with its defaults (``folds=5, couple=True``);
* ``ml_previous`` — the previous default, ``folds=1, couple=False``;
* ``high`` — the estimator on the expensive level alone at the same simulation cost (the data are simulated
  before the clock starts; simulation time is not counted for anyone).

Prints JSON: seconds per fit and the ratios ``ml / high`` and ``ml / ml_previous`` per case.

    OMP_NUM_THREADS=1 python benchmarks/ml_fit_time.py                    # all five cases, 2 runs each
    OMP_NUM_THREADS=1 python benchmarks/ml_fit_time.py --cases toggle,ou --runs 3
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import telescope as ts
from _ml_common import set_threads
from ml_equal_cost import Case
from telescope.multilevel import Multilevel


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_case(name: str, runs: int) -> dict:
    case = Case(name)
    levels = ts.simulate_levels(case.ladder, case.prior, n=case.n, seed=10_000, progress_bar=False)
    top = len(case.costs) - 1
    n_high = int(case.budget // case.costs[top])
    theta, x = ts.simulate(case.ladder[top], case.prior, n_high, seed=50_000 + top, progress_bar=False)
    fits = {
        "ml": lambda: Multilevel(case.make(0)).fit(levels, progress_bar=False),
        "ml_previous": lambda: Multilevel(case.make(0), folds=1, couple=False).fit(levels, progress_bar=False),
        "high": lambda: case.make(0).fit(theta, x, progress_bar=False),
    }
    seconds: dict[str, list[float]] = {k: [] for k in fits}
    for _ in range(runs):
        for k, fit in fits.items():
            seconds[k].append(_timed(fit))
    best = {k: min(v) for k, v in seconds.items()}
    return {"case": name, "n": case.n, "n_high": n_high, "seconds": seconds, "fastest": best,
            "ml_over_high": best["ml"] / best["high"], "ml_over_previous": best["ml"] / best["ml_previous"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="toggle,gk_nle,gk_npe,ou,gbm")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    for name in args.cases.split(","):
        print(json.dumps(time_case(name, args.runs)), flush=True)


if __name__ == "__main__":
    main()
