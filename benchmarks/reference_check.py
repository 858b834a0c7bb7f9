"""Second-run check of the MCMC reference posteriors (issue 8's target: R-hat < 1.01 and C2ST <= 0.52).

For each task and observation, the cached reference (``task.reference_samples(i, n)``, computed on first
use) is compared with a second, independent MCMC run against the same exact likelihood: new proposals,
new chains, a different seed.  Reported per observation: the second run's split-R-hat (max over
dimensions) and bulk ESS (min), the C2ST between the two runs (0.5: indistinguishable), and seconds.

Usage::

    python benchmarks/reference_check.py                                   # sir, bernoulli_glm, obs 1-2
    python benchmarks/reference_check.py --tasks sir lotka_volterra slcp --observations 1 2 3 --n 10000
    python benchmarks/reference_check.py --c2st-samples 5000 --out runs/reference_check.json
    python benchmarks/reference_check.py --tasks sir lotka_volterra slcp --observations 1 --n-obs 30  # tall
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import torch

import telescope as ts
from telescope import metrics
from telescope.simulation.simulators import batch_seed


def check(task, i: int, n: int, c2st_samples: int, n_obs: int = 1) -> dict:
    # a seed no reference of this observation uses (the cached ones derive from observation_seed + 2 and + 4)
    seed = batch_seed(task.observation_seed + 97, i) + n_obs
    if n_obs == 1:  # tasks without tall data have no tall_reference_samples
        first, rerun, x = task.reference_samples(i, n), task._reference, task.observation(i)
    else:
        first, rerun, x = task.tall_reference_samples(i, n_obs, n), task._reference_set, task.tall_observation(i, n_obs)
    t0 = time.perf_counter()
    second = rerun(x, n, seed=seed).float()
    secs = time.perf_counter() - t0
    diag = getattr(task, "diagnostics", None) or {}
    m = min(c2st_samples, n)
    c = metrics.c2st(first[:m], second[:m], seed=i)
    out = {"observation": i, "n_obs": n_obs, "c2st": round(float(c), 4), "seconds": round(secs, 1),
           "c2st_ok": bool(c <= 0.52)}
    if "rhat" in diag:
        out["rhat_max"] = round(float(diag["rhat"].max()), 4)
        if "ess" in diag:
            out["ess_min"] = round(float(diag["ess"].min()), 1)
        out["rhat_ok"] = bool(diag["rhat"].max() < 1.01)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["sir", "bernoulli_glm"])
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2])
    p.add_argument("--n-obs", nargs="+", type=int, default=[1],
                   help="iid observations per set: 1 checks reference_samples, n > 1 tall_reference_samples")
    p.add_argument("--n", type=int, default=10_000, help="reference samples per run")
    p.add_argument("--c2st-samples", type=int, default=5000, help="samples of each run given to the C2ST")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict = {"n": args.n, "c2st_samples": args.c2st_samples, "tasks": {}}
    for name in args.tasks:
        task = ts.tasks.get(name)
        if task.reference_kind != "mcmc":
            raise SystemExit(f"--tasks: {name!r} has a {task.reference_kind} reference, not MCMC; MCMC tasks: "
                             f"{[t for t in ts.tasks.list() if ts.tasks.get(t).reference_kind == 'mcmc']}")
        rows = []
        for i, k in itertools.product(args.observations, args.n_obs):
            print(f"[reference_check] {name} observation {i}, n_obs {k} ...", file=sys.stderr, flush=True)
            rows.append(check(task, i, args.n, args.c2st_samples, k))
            print(f"[reference_check]   -> {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        result["tasks"][name] = rows
    result["all_ok"] = all(r["c2st_ok"] and r.get("rhat_ok", True) for rows in result["tasks"].values() for r in rows)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
