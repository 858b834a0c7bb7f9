"""Multilevel training against every single-fidelity baseline at equal simulation cost (issue: multilevel that pays).

Cases (estimator, data, metric; lower is better everywhere):

* ``toggle``  — ML-NLE, toggle switch, 3 levels (T = 50, 80, 300), allocation A = (10^4, 500, 100), the paper's MDN;
  squared MMD as the paper computes it (``mmd2_paper``) over test parameters.
* ``gk_nle``  — ML-NLE, g-and-k (one draw), n = (10^4, 300); forward KL to the exact density over test parameters.
* ``gk_npe``  — ML-NPE, g-and-k octiles of 1000 draws, n = (1000, 100); NLPD on held-out expensive simulations.
* ``ou``      — ML-NPE, Ornstein–Uhlenbeck, n = (1000, 100); NLPD.
* ``gbm``     — ML-NPE, geometric Brownian motion (coarse Euler against the exact solution; telescope's own
  problem, :mod:`telescope.tasks.gbm`), n = (4000, 150); NLPD.

Costs: the ladders' own (toggle: time steps 50/80/300; OU: 1/100; GBM: 1/16).  g-and-k's two levels have no
cost in the paper (it compares NLE(high) with n_1 simulations); we charge 1 and 20 per simulation (the paper's
NLE(high) with n_1 simulations is then close to the equal-cost one).

Methods, all on the same data within a repeat, at the same total cost
``n_0 C_0 + sum_l n_l (C_l + C_{l-1})``:

* ``high`` / ``low`` (/ ``medium``) — one level only, as many simulations as the budget buys;
* ``pairs_high`` — only the expensive members of the top level's pairs (what the cheap level must not make worse);
* ``tl`` — transfer learning (Krouglova et al. 2025): pre-train on all cheap simulations, fine-tune on the top pairs'
  expensive members (both with early stopping);
* ``ml_paper`` — paper 1: eq. (2) from scratch with Algorithm 1 (``Multilevel(est, staged=False)``);
* ``ml`` — telescope's default ``Multilevel(est)``: pre-training on level 0, control-variate weights, validation
  penalised by its standard error, safeguard;
* ``ml_auto`` — the same with control-variate weights estimated from the pairs (``weights="auto"``);
* ``ml_budget`` — ``Multilevel(est).fit(ladder, budget=C)``: pilot, Theorem 2, simulation, training.

    python benchmarks/ml_equal_cost.py --cases gbm --repeats 5
    python benchmarks/ml_equal_cost.py --cases toggle,gk_nle,gk_npe,ou,gbm --repeats 5
    python benchmarks/ml_equal_cost.py --report runs/multilevel runs/multilevel_ml runs/multilevel_budget

Prints JSON (and writes runs/multilevel/ml_equal_cost_<case>.json after every repeat; a rerun resumes; set
``TELESCOPE_ML_OUT`` to run methods in parallel processes into separate folders, and ``--report`` merges them).
``--report`` prints the table (mean and standard error over repeats) and the issue's targets: the default
``ml`` against the best equal-cost baseline (``high``, ``low``, ``medium``, ``tl``, ``ml_paper``), against the
pairs alone (cheap simulations must not hurt) and ``ml_budget`` against ``high``; differences of methods
trained on the same data use the standard error of the paired differences.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
import warnings

import torch

from _ml_common import MDNNLE, OUT, mmd_per_theta, set_threads, ts
from telescope.estimators import NLE, NPE
from telescope.multilevel import Multilevel
from telescope.tasks.g_and_k import gk_log_density
from telescope.tasks.g_and_k.ladder import gk_ladder
from telescope.training import train

METHODS = ["high", "low", "medium", "pairs_high", "tl", "ml_paper", "ml", "ml_auto", "ml_budget"]
GRID = torch.linspace(-30.0, 30.0, 2000)


class Case:
    """A problem: prior, ladder (with costs), allocation, estimator factory and metric."""

    def __init__(self, name):
        self.name = name
        if name == "toggle":
            task = ts.tasks.get("toggle_switch")
            self.prior, self.ladder, self.n = task.prior, task.ladder(), [10_000, 500, 100]
            self.make = lambda seed: MDNNLE(self.prior, components=2, hidden=(20, 20), seed=seed)
            with ts.simulators.seeded(777):
                theta = self.prior.sample((100,))
            x = task.simulator(theta.repeat_interleave(500, 0), seed=4242).reshape(100, 500, -1)
            self.metric = lambda est: float(mmd_per_theta(est, theta, x, 500, paper=True)[1].mean())
        elif name == "gk_nle":
            task = ts.tasks.get("g_and_k", n_draws=1)
            self.prior, self.ladder, self.n = task.prior, gk_ladder(1, costs=(1.0, 20.0)), [10_000, 300]
            self.make = lambda seed: NLE(self.prior, transforms=1, bins=10, hidden=(50, 50, 50), seed=seed)
            with ts.simulators.seeded(4321):
                theta = self.prior.sample((50,))
            lp = gk_log_density(theta, GRID)

            def kld(est):
                lq = est.log_likelihood(theta, GRID[:, None]).double()
                p = lp.exp()
                return float((torch.where(p > 0, p * (lp - lq), torch.zeros_like(p)).sum(-1)
                              * (GRID[1] - GRID[0])).mean())
            self.metric = kld
        else:
            if name == "gk_npe":
                task = ts.tasks.get("g_and_k", n_draws=1)
                self.ladder, self.n = gk_ladder(1000, summary=True, costs=(1.0, 20.0)), [1000, 100]
                net = dict(transforms=3, bins=3, hidden=(50, 50))
            elif name == "ou":
                task = ts.tasks.get("ou")
                self.ladder, self.n = task.ladder(), [1000, 100]
                net = dict(transforms=2, bins=2, hidden=(32,))
            elif name == "gbm":
                task = ts.tasks.get("gbm")
                self.ladder, self.n = task.ladder(), [4000, 150]
                net = {}
            else:
                raise ValueError(f"unknown case {name!r}")
            self.prior = task.prior
            self.make = lambda seed: NPE(self.prior, seed=seed, **net)
            test = ts.simulate(self.ladder[len(self.ladder) - 1], self.prior, 500, seed=99_999, progress_bar=False)
            self.metric = lambda est: float(-est.log_prob_batched(test[0][None], test[1])[0].clamp_min(-100).mean())
        self.costs = [float(c) for c in self.ladder.costs]
        C = self.costs
        self.budget = self.n[0] * C[0] + sum(self.n[l] * (C[l] + C[l - 1]) for l in range(1, len(C)))


def run(case: Case, method: str, levels, r: int) -> float | None:
    L = len(case.costs) - 1
    q = {"progress_bar": False}
    if method in ("high", "low", "medium"):
        l = {"low": 0, "medium": 1, "high": L}[method]
        if method == "medium" and L < 2:
            return None
        n = int(case.budget // case.costs[l])
        theta, x = ts.simulate(case.ladder[l], case.prior, n, seed=50_000 + 100 * r + l, progress_bar=False)
        return case.metric(case.make(r).fit(theta, x, **q))
    top = levels[-1]
    if method == "pairs_high":
        return case.metric(case.make(r).fit(top[0], top[1], **q))
    if method == "tl":
        est = case.make(r)
        cheap_theta = torch.cat([levels[0][0], levels[1][0]])
        cheap_x = torch.cat([levels[0][1], levels[1][2]])
        est.fit(cheap_theta, cheap_x, **q)
        theta, x = est._prepare(top[0], top[1])
        kwargs = {"seed": est.seed, **est.train_defaults, "progress_bar": False}
        est.history = train(est.net, est._loss, est._data(theta, x), **kwargs)
        return case.metric(est)
    if method == "ml_paper":
        return case.metric(Multilevel(case.make(r), staged=False).fit(levels, **q))
    if method == "ml":
        return case.metric(Multilevel(case.make(r)).fit(levels, **q))
    if method == "ml_auto":
        return case.metric(Multilevel(case.make(r), weights="auto").fit(levels, **q))
    if method == "ml_budget":
        ml = Multilevel(case.make(r)).fit(copy.deepcopy(case.ladder), budget=case.budget, seed=70_000 + r, **q)
        case.last_plan = ml.allocation
        return case.metric(ml)
    raise ValueError(method)


def stats(v: list[float]) -> dict:
    v = [a for a in v if a is not None and math.isfinite(a)]
    if not v:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None
    return {"mean": statistics.mean(v), "se": se, "n": len(v), "values": v}


BASELINES = ["high", "low", "medium", "tl", "ml_paper"]


def _diff(runs: dict, a: str, b: str, paired: bool = True) -> dict | None:
    """Mean of ``a - b`` over repeats and its standard error (paired by repeat, or of two independent means)."""
    ra = {k.split("/")[1]: v["value"] for k, v in runs.items() if k.startswith(a + "/") and v["value"] is not None}
    rb = {k.split("/")[1]: v["value"] for k, v in runs.items() if k.startswith(b + "/") and v["value"] is not None}
    common = sorted(set(ra) & set(rb))
    if len(common) < 2:
        return None
    if paired:
        d = [ra[r] - rb[r] for r in common]
        return {"mean": statistics.mean(d), "se": statistics.stdev(d) / math.sqrt(len(d)), "n": len(d)}
    va, vb = [ra[r] for r in common], [rb[r] for r in common]
    se = math.sqrt(statistics.variance(va) / len(va) + statistics.variance(vb) / len(vb))
    return {"mean": statistics.mean(va) - statistics.mean(vb), "se": se, "n": len(common)}


def report(folders: list[str]) -> dict:
    """Merge the runs of every case found in ``folders`` and check the targets."""
    from pathlib import Path

    cases: dict = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("ml_equal_cost_*.json")):
            d = json.loads(path.read_text())
            c = cases.setdefault(d["case"], {"n": d["n"], "costs": d["costs"], "budget": d["budget"], "runs": {}})
            c["runs"].update(d["runs"])
    out: dict = {}
    wins = 0
    for name, c in cases.items():
        runs = c["runs"]
        methods = sorted({k.split("/")[0] for k in runs}, key=lambda m: METHODS.index(m) if m in METHODS else 99)
        table = {m: stats([v["value"] for k, v in runs.items() if k.startswith(m + "/")]) for m in methods}
        base = {m: t["mean"] for m, t in table.items() if m in BASELINES and t["mean"] is not None}
        best = min(base, key=base.get) if base else None
        row = {"n": c["n"], "costs": c["costs"], "budget": c["budget"], "metric": table, "best_baseline": best}
        if best and table.get("ml", {}).get("mean") is not None:
            row["ml_minus_best_baseline"] = _diff(runs, "ml", best)
            row["ml_is_best"] = table["ml"]["mean"] <= base[best]
            wins += row["ml_is_best"]
            row["ml_minus_pairs_high"] = _diff(runs, "ml", "pairs_high")
        if table.get("ml_budget", {}).get("mean") is not None and "high" in table:
            row["ml_budget_minus_high"] = _diff(runs, "ml_budget", "high", paired=False)
        out[name] = row
    out["ml_best_in"] = f"{wins} of {len(cases)}"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gbm,ou,gk_npe,gk_nle,toggle")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true", help="ignore earlier results of the same case")
    p.add_argument("--report", nargs="+", metavar="FOLDER", help="merge the results in these folders and print them")
    args = p.parse_args()
    if args.report:
        print(json.dumps(report(args.report), indent=1))
        return
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.cases.split(","):
        path = OUT / f"ml_equal_cost_{name}.json"
        done = {} if args.fresh or not path.exists() else json.loads(path.read_text())
        runs = done.get("runs", {})
        case = Case(name)
        for r in range(args.repeats):
            levels = None
            for m in args.methods.split(","):
                key = f"{m}/{r}"
                if key in runs:
                    continue
                if levels is None:
                    levels = ts.simulate_levels(case.ladder, case.prior, n=case.n, seed=10_000 + r,
                                                progress_bar=False)
                t0 = time.perf_counter()
                value = run(case, m, levels, r)
                runs[key] = {"value": value, "seconds": time.perf_counter() - t0}
                if m == "ml_budget":
                    runs[key]["plan"] = {k: v for k, v in case.last_plan.items() if k != "reason"}
                print(f"{name} {key} {value} ({runs[key]['seconds']:.0f} s)", flush=True)
                out = {"case": name, "n": case.n, "costs": case.costs, "budget": case.budget, "runs": runs}
                path.write_text(json.dumps(out, indent=1))
        table = {m: stats([runs[f"{m}/{r}"]["value"] for r in range(args.repeats) if f"{m}/{r}" in runs])
                 for m in args.methods.split(",")}
        results[name] = {"n": case.n, "costs": case.costs, "budget": case.budget, "metric": table}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
