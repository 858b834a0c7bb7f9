"""Where the error of multilevel training comes from, case by case (issue: multilevel that pays, item 1).

On the first data set of each case of ``ml_equal_cost.py`` (same data, same seeds), it measures:

* **variance** — at a network trained with paper 1's loss: the per-simulation variance of the top level's loss
  ``Var f^L`` and of the correction ``Var(f^L - f^(L-1))`` on the pairs, their correlation, and Theorem 2's
  predicted variance of the multilevel loss against single-level Monte Carlo at the same cost (``variance_ratio``);
* **validation** — the paper-loss run's validation curve: its best epoch, the standard error of the held-out
  multilevel loss at the end (from per-simulation terms of the validation split), and how far the validation
  loss moves over the epochs (a best epoch picked by noise shows as an SE comparable to the movement);
* **capacity** — cheap-level-only training with the default network and with one twice as wide;
* **optimiser and method components** — on the same data: paper 1's loss (``staged=False``), the same at lr 1e-4,
  without the gradient adjustment, and telescope's staged training with each component switched off in turn
  (pre-training, the SE penalty of the validation, eq. 2's weights -> estimated weights, the adjustment).

The allocation is measured by ``ml_equal_cost.py --methods ml_budget`` (Theorem 2 from a pilot).

    python benchmarks/ml_diagnosis.py --cases gbm,toggle,gk_nle,gk_npe,ou

Prints JSON (also runs/multilevel/ml_diagnosis_<case>.json).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from _ml_common import OUT, set_threads, ts
from ml_equal_cost import Case
from telescope.multilevel import Multilevel, allocate
from telescope.multilevel.levels import as_levels
from telescope.multilevel.safeguard import pair_losses, per_sample_losses
from telescope.multilevel.weights import weighted_mean
from telescope.training import split

VARIANTS = {
    "paper": dict(staged=False),
    "paper_lr1e-4": dict(staged=False, lr=1e-4),
    "paper_no_adjustment": dict(staged=False, rescale=False, project=False),
    "staged": dict(),
    "staged_no_pretrain": dict(pretrain=False),
    "staged_no_se_penalty": dict(val_se=0.0),
    "staged_estimated_weights": dict(weights="auto"),
    "staged_no_adjustment": dict(rescale=False, project=False),
}


def variance(case: Case, ml, levels) -> dict:
    est = ml.estimator
    lv = as_levels(levels, est.dim_theta, warn_order=False)
    pairs = pair_losses(est, est.net, lv)
    f0 = per_sample_losses(est, est.net, lv[0]["theta"], lv[0]["x"]).double()
    hi, lo = pairs[-1][0].double(), pairs[-1][1].double()
    V = [float(f0.var())] + [float((h.double() - l.double()).var()) for h, l in pairs]
    alloc = allocate(case.costs, V, case.budget, mc_variance=float(hi.var()))
    return {"var_top": float(hi.var()), "var_correction_top": float((hi - lo).var()),
            "loss_correlation_top": float(torch.corrcoef(torch.stack([hi, lo]))[0, 1]),
            "level_variances": V, "theorem2_n": alloc.n, "variance_ratio": alloc.variance_ratio}


def validation(ml, levels, vf: float = 0.1) -> dict:
    """The paper-loss run's own validation split, rebuilt as train() drew it, and the SE of its estimate."""
    est = ml.estimator
    lv = as_levels(levels, est.dim_theta, warn_order=False)
    groups = ml._groups(lv)
    gen = torch.Generator().manual_seed(int(est.seed))
    val = [split(g, vf, gen)[1] for g in groups]
    f0 = per_sample_losses(est, est.net, val[0]["theta"], val[0]["x"])
    pairs = [(per_sample_losses(est, est.net, g["hi/theta"], g["hi/x"]),
              per_sample_losses(est, est.net, g["lo/theta"], g["lo/x"])) for g in val[1:]]
    value, se = weighted_mean(f0, pairs)
    h = est.history
    v = torch.tensor(h["val_loss"])
    tail = v[max(0, h["best_epoch"] - 10):h["best_epoch"] + 10]
    return {"val_pairs_top": int(pairs[-1][0].numel()), "val_at_best": h["best_val_loss"], "val_recomputed": value,
            "val_se": se, "val_range_near_best": float(tail.max() - tail.min()),
            "best_epoch": h["best_epoch"], "epochs": h["epochs"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="gbm,toggle,gk_nle,gk_npe,ou")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    set_threads(args.threads)
    warnings.simplefilter("ignore")
    report = {}
    for name in args.cases.split(","):
        case = Case(name)
        levels = ts.simulate_levels(case.ladder, case.prior, n=case.n, seed=10_000, progress_bar=False)
        out: dict = {"case": name, "n": case.n, "costs": case.costs, "metric": {}, "seconds": {}}
        for v in args.variants.split(","):
            opts = dict(VARIANTS[v])
            lr = opts.pop("lr", None)
            t0 = time.perf_counter()
            ml = Multilevel(case.make(0), **opts).fit(levels, progress_bar=False, **({"lr": lr} if lr else {}))
            out["seconds"][v] = time.perf_counter() - t0
            out["metric"][v] = case.metric(ml)
            if v == "paper":
                out["variance_at_paper_network"] = variance(case, ml, levels)
                out["validation_of_paper_run"] = validation(ml, levels)
            if v == "staged":
                out["staged_record"] = {k: val for k, val in ml.history["multilevel"].items()
                                        if k in ("weights", "pretrain", "safeguard", "n_val")}
                out["staged_best_epoch"] = ml.history["best_epoch"]
            print(name, v, out["metric"][v], flush=True)
            (OUT / f"ml_diagnosis_{name}.json").write_text(json.dumps(out, indent=1))
        theta, x = ts.simulate(case.ladder[0], case.prior, int(case.budget // case.costs[0]), seed=50_000,
                               progress_bar=False)
        est = case.make(0)
        if "hidden" in est.config and isinstance(est.config["hidden"], list):
            out["metric"]["low_default"] = case.metric(case.make(0).fit(theta, x, progress_bar=False))
            wide = case.make(0)
            wide.config["hidden"] = [2 * h for h in wide.config["hidden"]]
            out["metric"]["low_wide"] = case.metric(wide.fit(theta, x, progress_bar=False))
        (OUT / f"ml_diagnosis_{name}.json").write_text(json.dumps(out, indent=1))
        report[name] = out
        print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
