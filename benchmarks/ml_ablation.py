"""Ablation of the gradient adjustment (paper 1, Appendix B.6, Table 4).

Algorithm 1 combines (ii) rescaling each zeta^{l-1,-} to the norm of zeta^{l,+} and (iii) projecting grad h_0
and grad h_c onto each other's normal planes when they conflict; (i) is both, (iv) neither (plain gradient of
the MLMC loss).  The four variants are compared on

* g-and-k ML-NPE, NLPD (n_0 = 1000, n_1 = 100, m = 1000 draws summarised) — :mod:`ml_gk_npe`;
* g-and-k ML-NLE, KLD to the exact likelihood (n_0 = 10^4, n_1 = 300) — :mod:`ml_gk_nle`;
* toggle-switch ML-NLE, MMD^2 (allocation A: n = 10^4, 500, 100) — :mod:`ml_toggle`;

with the same networks, training and evaluation as those scripts, and the same simulations for every variant.

    python benchmarks/ml_ablation.py                       # reduced default: 1 repeat, all three problems
    python benchmarks/ml_ablation.py --problems gk_npe,toggle --repeats 3

Prints JSON (also runs/multilevel/ml_ablation.json) and draws runs/multilevel/ml_ablation.png.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import ml_gk_nle
import ml_gk_npe
import ml_toggle
from _ml_common import dump, figure_path, set_threads, summary, ts
from telescope.tasks.g_and_k.ladder import gk_ladder

VARIANTS = ["both", "rescale", "project", "none"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="gk_npe,gk_nle,toggle")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300, help="maximum epochs (early stopping)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--test", type=int, default=100, help="test simulations / parameters per problem")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    set_threads(args.threads)
    common = dict(epochs=args.epochs, lr=args.lr, val_fraction=args.val_fraction, patience=args.patience)
    variants = args.variants.split(",")
    table: dict = {}
    task = ts.tasks.get("g_and_k", n_draws=1)
    for r in range(args.repeats):
        for problem in args.problems.split(","):
            if problem == "gk_npe":
                a = SimpleNamespace(**common, coverage=min(args.test, 100), samples=300)
                ladder = gk_ladder(1000, summary=True)
                test = ts.simulate(ladder[1], task.prior, args.test, seed=99_999, progress_bar=False)
                levels = ts.simulate_levels(ladder, task.prior, n=[1000, 100], seed=r, progress_bar=False)
                for v in variants:
                    out = ml_gk_npe.run_ml(task, levels, test, a, v, r)
                    table.setdefault("g-and-k NPE (NLPD)", {}).setdefault(v, []).append(out["nlpd"])
            elif problem == "gk_nle":
                a = SimpleNamespace(**common)
                with ts.simulators.seeded(12345):
                    theta_test = task.prior.sample((min(args.test, 50),))
                levels = ts.simulate_levels(task.ladder(), task.prior, n=[10_000, 300], seed=r, progress_bar=False)
                for v in variants:
                    kl, _ = ml_gk_nle.run_ml(task, levels, theta_test, a, v, r)
                    table.setdefault("g-and-k NLE (KLD)", {}).setdefault(v, []).append(float(kl.mean()))
            elif problem == "toggle":
                a = SimpleNamespace(**common, model="mdn", samples=500)
                tt = ts.tasks.get("toggle_switch")
                test = ml_toggle.test_set(tt, args.test, 500)
                for v in variants:
                    out = ml_toggle.run_ml(tt, ml_toggle.ALLOCATIONS["A"], test, a, v, r)
                    table.setdefault("toggle switch NLE (MMD^2)", {}).setdefault(v, []).append(out["mmd"])
            else:
                raise SystemExit(f"unknown problem {problem!r}")
    out = {"experiment": "gradient-adjustment ablation (paper 1, Table 4)",
           "settings": {**vars(args), "variants": {"both": "(i) rescale + project", "rescale": "(ii) only rescaling",
                                                   "project": "(iii) only projection", "none": "(iv) standard"}},
           "results": {k: {v: summary(vals) for v, vals in d.items()} for k, d in table.items()}}
    if not args.no_plot:
        out["figure"] = str(plot(out["results"], variants))
    dump("ml_ablation", out)


def plot(results, variants):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False)
    for ax, (name, d) in zip(axes[0], results.items()):
        means = [d[v]["mean"] for v in variants]
        stds = [d[v]["std"] for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, color=["tab:blue", "tab:orange", "tab:green", "tab:gray"])
        ax.set_xticks(range(len(variants)), variants)
        ax.set_title(name)
    fig.suptitle("Gradient adjustment ablation (lower is better)")
    fig.tight_layout()
    path = figure_path("ml_ablation")
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()
