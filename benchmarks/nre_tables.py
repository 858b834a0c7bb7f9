"""Paper 2 Tables 3-4: NRE-C and NRE-B on the ten SBI-benchmark tasks, beside the paper's C2ST.

Miller et al., "Contrastive neural ratio estimation", Section 3.3 and Appendix D, Tables 3-4: C2ST
of NRE-C (gamma = 1, K = 99, Large NN, 1000 epochs, 5 seeds x 10 observations) and of sbibm's NRE
(NRE-B) at 10^3, 10^4 and 10^5 simulations.  Here both run with telescope's defaults
(``ts.NRE(prior)``, and ``gamma=math.inf`` for NRE-B) through ``telescope bench`` (resumable): one
training seed, ``--observations`` (default 1-3), ``--samples`` posterior samples (default 2000, which
keeps the 10-d C2STs affordable on 2 cores); ``--fit-options`` changes the estimators (e.g. a larger NRE-C:
K = 49, width 128, 3 blocks, batch 512, patience 20 — nearer the paper's K = 99 and Large NN; 8 of 10 tasks
no worse than the paper at 10^4, see the README).  Prints JSON: one row per task, method and budget with
telescope's and the paper's C2ST and whether telescope is no worse, and the count per column.

    python benchmarks/nre_tables.py --threads 1                         # run (or resume) the grid
    python benchmarks/nre_tables.py --from runs/bench_nre_b.jsonl runs/bench_nre_c_1e3.jsonl
                                                                         # the table of existing results
    python benchmarks/nre_tables.py --observations 1 2 3 --from FILE ...  # ... scored on observations 1-3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from telescope import bench

TASKS = ("two_moons", "gaussian_mixture", "slcp", "gaussian_linear", "gaussian_linear_uniform", "bernoulli_glm",
         "bernoulli_glm_raw", "sir", "lotka_volterra", "slcp_distractors")
# paper 2, Tables 3-4: C2ST at 10^3, 10^4, 10^5 simulations
PAPER = {
    "nre_c": {"bernoulli_glm": (0.829, 0.688, 0.617), "bernoulli_glm_raw": (0.952, 0.761, 0.627),
              "gaussian_linear": (0.684, 0.583, 0.547), "gaussian_linear_uniform": (0.751, 0.677, 0.553),
              "gaussian_mixture": (0.807, 0.751, 0.751), "lotka_volterra": (1.000, 0.977, 0.983),
              "sir": (0.780, 0.673, 0.578), "slcp": (0.973, 0.941, 0.810), "slcp_distractors": (0.982, 0.976, 0.811),
              "two_moons": (0.777, 0.594, 0.526)},
    "nre_b": {"bernoulli_glm": (0.899, 0.812, 0.751), "bernoulli_glm_raw": (0.915, 0.834, 0.777),
              "gaussian_linear": (0.672, 0.560, 0.536), "gaussian_linear_uniform": (0.788, 0.706, 0.631),
              "gaussian_mixture": (0.784, 0.752, 0.734), "lotka_volterra": (1.000, 0.998, 0.996),
              "sir": (0.841, 0.770, 0.690), "slcp": (0.972, 0.947, 0.919), "slcp_distractors": (0.980, 0.968, 0.953),
              "two_moons": (0.822, 0.761, 0.629)},
}
BUDGETS = {1000: 0, 10000: 1, 100000: 2}


def table(rows: list[dict], observations: list[int] | None = None) -> dict:
    """Rows beside the paper's values, and per (method, budget) how many tasks are no worse than the paper.

    ``observations``: score only these observations of each cell (mean C2ST over them); default all.
    """
    out, counts = [], {}
    for r in rows:
        c = r["cell"]
        if "c2st" not in r or c["method"] not in PAPER or c["budget"] not in BUDGETS or c["n_obs"] != 1:
            continue
        obs = [o for o in r["observations"] if observations is None or o["observation"] in observations]
        if not obs:
            continue
        c2st = sum(o["c2st"] for o in obs) / len(obs)
        paper = PAPER[c["method"]][c["task"]][BUDGETS[c["budget"]]]
        ok = c2st <= paper
        out.append({"task": c["task"], "method": c["method"], "budget": c["budget"], "seed": c["seed"],
                    "observations": [o["observation"] for o in obs], "c2st": round(c2st, 3),
                    "paper": paper, "no_worse": ok})
        key = f"{c['method']} {c['budget']}"
        met, total = counts.get(key, (0, 0))
        counts[key] = (met + ok, total + 1)
    return {"rows": out, "no_worse_than_paper": {k: f"{m} of {t}" for k, (m, t) in sorted(counts.items())}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["nre_c", "nre_b"], choices=sorted(PAPER))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--budgets", nargs="+", type=int, default=[1000, 10000], choices=sorted(BUDGETS))
    p.add_argument("--observations", nargs="+", type=int, default=None,
                   help="observations to run (default 1 2 3); with --from, the ones to score (default all)")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fit-options", default=None, metavar="JSON",
                   help='estimator and fit() arguments per method, e.g. the larger NRE-C of the README: '
                        '\'{"nre_c": {"K": 49, "width": 128, "blocks": 3, "batch_size": 512, "patience": 20}}\'')
    p.add_argument("--out", default="runs/nre_tables.jsonl")
    p.add_argument("--from", dest="sources", nargs="+", metavar="FILE",
                   help="no new cells: the table of these telescope bench results files")
    args = p.parse_args(argv)
    if args.sources:
        rows = [r for path in args.sources for r in bench.read_results(path)[1]]
    else:
        torch.set_num_threads(args.threads)
        spec = bench.make_spec(methods=args.methods, tasks=args.tasks, budgets=args.budgets,
                               observations=args.observations or [1, 2, 3], metrics=["c2st"], samples=args.samples,
                               fit_options=json.loads(args.fit_options) if args.fit_options else None)
        with contextlib.redirect_stdout(sys.stderr):  # progress lines to stderr: stdout is the JSON
            rows = bench.run(spec, args.out)
    json.dump({"paper": "Miller et al., Tables 3-4", **table(rows, args.observations)}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
