"""The stacked mixture of a multilevel fit against its members, on the cases of ``ml_equal_cost.py``.

One default ``Multilevel(est)`` fit per case and repeat (same data and seeds as ``ml_equal_cost.py``); its
final network is the mixture of the multilevel, transfer-learning and expensive-only networks with weights
stacked on the held-out expensive simulations.  Every member alone and equal-weight mixtures are scored on
the same fit, so the columns differ only in how the trained networks are combined.

    OMP_NUM_THREADS=1 python benchmarks/ml_ensemble.py --cases ou,gbm --repeats 5

Prints JSON and writes ``runs/multilevel/ml_ensemble_<case>.json`` after every repeat (a rerun resumes), and the
stacked column as method ``ml`` in ``ml_equal_cost_<case>.json`` for ``ml_equal_cost.py --report``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from _ml_common import OUT, set_threads, ts
from ml_equal_cost import Case, stats

from telescope.multilevel import Multilevel
from telescope.multilevel.ensemble import Mixture, stack
from telescope.multilevel.safeguard import per_sample_losses

VARIANTS = ["stacked", "multilevel", "transfer", "coupled", "expensive level alone", "equal_ml_tl", "equal_all",
            "stack_ml_tl"]


def score(case: Case, ml: Multilevel) -> dict:
    est = ml.estimator
    mix = est.net
    if not isinstance(mix, Mixture):
        return {"stacked": case.metric(ml)}
    names = ml.history["multilevel"]["ensemble"]["members"]
    w = ml.history["multilevel"]["ensemble"]["weights"]
    k = ml.history["multilevel"]["ensemble"].get("folds", 1)  # cross-fitted: k networks per member, in order
    kept = [n for n, wi in zip(names, w) if wi > 0]
    nets = {n: (Mixture(mix.members[i * k:(i + 1) * k], [1.0] * k) if k > 1 else mix.members[i])
            for i, n in enumerate(kept)}
    out = {"stacked": case.metric(ml), "weights": w}
    for name in names:
        if name in nets:
            est.net = nets[name]
            out[name] = case.metric(ml)
    if {"multilevel", "transfer"} <= set(nets):
        est.net = Mixture([nets["multilevel"], nets["transfer"]], [0.5, 0.5])
        out["equal_ml_tl"] = case.metric(ml)
        est.net = Mixture([nets[n] for n in names], [1.0] * len(names))
        out["equal_all"] = case.metric(ml)
        if k == 1:  # stacked on the held-out split (cross-fitted fits have no single one)
            top = ml._held_out[-1]
            pair = [nets["multilevel"], nets["transfer"]]
            lp = torch.stack([-per_sample_losses(est, m, top["theta"], top["x"]) for m in pair], 1)
            w2 = stack(lp)
            est.net = Mixture(pair, w2)
            out["stack_ml_tl"], out["weights_ml_tl"] = case.metric(ml), w2.tolist()
    est.net = mix
    return out


def export(case: Case, runs: dict) -> None:
    """The stacked column as the ``ml`` method of ``ml_equal_cost.py`` (the same call on the same data), so that
    ``ml_equal_cost.py --report`` can merge it."""
    out = {"case": case.name, "n": case.n, "costs": case.costs, "budget": case.budget,
           "runs": {f"ml/{r}": {"value": v["stacked"], "seconds": v["seconds"]} for r, v in runs.items()}}
    (OUT / f"ml_equal_cost_{case.name}.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gbm,ou,gk_npe,gk_nle,toggle")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.cases.split(","):
        path = OUT / f"ml_ensemble_{name}.json"
        runs = json.loads(path.read_text())["runs"] if path.exists() else {}
        case = Case(name)
        for r in range(args.repeats):
            if str(r) in runs:
                continue
            levels = ts.simulate_levels(case.ladder, case.prior, n=case.n, seed=10_000 + r, progress_bar=False)
            t0 = time.perf_counter()
            ml = Multilevel(case.make(r)).fit(levels, progress_bar=False)
            runs[str(r)] = {**score(case, ml), "seconds": time.perf_counter() - t0}
            print(name, r, json.dumps(runs[str(r)]), flush=True)
            path.write_text(json.dumps({"case": name, "runs": runs}, indent=1))
            export(case, runs)
        results[name] = {v: stats([runs[k][v] for k in runs if v in runs[k]]) for v in VARIANTS}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
