"""Ornstein–Uhlenbeck: ML-NPE against TL-NPE for n_1 in {10, 100} (paper 1, Section 5.2, Fig. 3).

Low fidelity: the stationary Gaussian law; high fidelity: Euler–Maruyama with 100 steps, on the same noise;
summary: the 5 log-spaced points (0, 3, 10, 31, 99) of the path (Appendix B.3).  ML-NPE uses n_0 = 1000
low-fidelity simulations and n_1 seed-matched pairs; TL-NPE (Krouglova et al., 2025) pre-trains on
n_0 = 1100 low-fidelity simulations and fine-tunes on n_1 high-fidelity ones, both stages with early
stopping on a 20% validation split (patience 20).  Metric: NLPD of the true parameter on fresh
high-fidelity test simulations (lower is better), plus the mean coverage gap.  The paper also reports a
KL divergence to a reference NPE trained on 10^4 high-fidelity simulations; that is not computed here.

Network (Appendix B.3): NSF, 2 bins, 2 transforms, 1 hidden layer of 32 units (no dropout).  Adam at the paper's
learning rate 1e-4; ML-NPE stops early on the validation MLMC loss (the paper: 500 fixed epochs).

    python benchmarks/ml_ou.py                         # reduced default: 3 repeats per method and n_1
    python benchmarks/ml_ou.py --repeats 20 --test 500
    python benchmarks/ml_ou.py --ml-epochs 500           # ML-NPE for the paper's 500 epochs (no early stopping)

Prints JSON (also runs/multilevel/ml_ou.json) and draws runs/multilevel/ml_ou.png.
"""

from __future__ import annotations

import argparse

from _ml_common import dump, figure_path, nlpd_and_coverage, set_threads, summary, timed, ts
from telescope.estimators import NPE
from telescope.multilevel import TLNPE, Multilevel

NET = dict(transforms=2, bins=2, hidden=(32,))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n0", type=int, default=1000)
    p.add_argument("--n1", default="10,100")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1000, help="maximum epochs (early stopping)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (the paper's 1e-4)")
    p.add_argument("--ml-epochs", type=int, default=None,
                   help="train ML-NPE for this many epochs without early stopping (the paper: 500)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="ML-NPE validation share (TL-NPE: 0.2)")
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--coverage", type=int, default=100)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    set_threads(args.threads)
    task = ts.tasks.get("ou")
    ladder = task.ladder()
    n1s = [int(v) for v in args.n1.split(",")]
    test = ts.simulate(task.simulator, task.prior, args.test, seed=99_999, progress_bar=False)
    res: dict = {m: {n: [] for n in n1s} for m in ("ml", "tl")}
    for r in range(args.repeats):
        for n1 in n1s:
            levels = ts.simulate_levels(ladder, task.prior, n=[args.n0, n1], seed=100 * r + n1, progress_bar=False)
            fixed = {"max_epochs": args.ml_epochs, "patience": args.ml_epochs} if args.ml_epochs else \
                {"max_epochs": args.epochs}  # --ml-epochs: the paper's fixed count (best validation weights kept)
            ml, secs = timed(Multilevel(NPE(task.prior, seed=r, **NET), staged=False).fit, levels, **fixed,
                             lr=args.lr, val_fraction=args.val_fraction, progress_bar=False)
            res["ml"][n1].append({**nlpd_and_coverage(ml, *test, args.coverage, args.samples), "seconds": secs,
                                  "epochs": ml.history["epochs"]})
            # TL-NPE: the same budget of low-fidelity simulations (n_0 + n_1 cheap runs) and the same n_1 expensive
            low = ts.simulate(ladder[0], task.prior, args.n0 + 100, seed=5000 + 100 * r + n1, progress_bar=False)
            high = (levels[1][0], levels[1][1])
            tl, secs = timed(TLNPE(task.prior, seed=r, **NET).fit, low, high, max_epochs=args.epochs, lr=args.lr,
                             progress_bar=False)
            res["tl"][n1].append({**nlpd_and_coverage(tl, *test, args.coverage, args.samples), "seconds": secs,
                                  "epochs": [tl.history["pretrain"]["epochs"], tl.history["epochs"]]})

    def table(runs):
        return {"nlpd": summary([u["nlpd"] for u in runs]),
                "coverage_gap_mean": summary([u["coverage_gap_mean"] for u in runs])}

    out = {
        "experiment": "OU process, ML-NPE vs TL-NPE (paper 1, Fig. 3)",
        "settings": {**vars(args), "network": NET, "tl_npe": "n_0 + 100 low-fidelity simulations, val 20%, "
                                                             "patience 20 per stage"},
        "ml_npe": {str(n): table(v) for n, v in res["ml"].items()},
        "tl_npe": {str(n): table(v) for n, v in res["tl"].items()},
        "runs": {m: {str(n): [{k: v for k, v in u.items() if k not in ("coverage", "alphas")} for u in runs]
                     for n, runs in d.items()} for m, d in res.items()},
    }
    if 10 in n1s:
        out["target"] = {"ml_nlpd_le_tl_at_n1_10": out["ml_npe"]["10"]["nlpd"]["mean"]
                         <= out["tl_npe"]["10"]["nlpd"]["mean"]}
    if not args.no_plot:
        out["figure"] = str(plot(res, n1s))
    dump("ml_ou", out)


def plot(res, n1s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(n1s), figsize=(4 * len(n1s), 4), squeeze=False)
    for ax, n1 in zip(axes[0], n1s):
        ax.boxplot([[u["nlpd"] for u in res["ml"][n1]], [u["nlpd"] for u in res["tl"][n1]]],
                   tick_labels=["ML-NPE", "TL-NPE"], widths=0.5)
        ax.set_title(f"$n_1 = {n1}$")
        ax.set_ylabel("NLPD (lower is better)")
    fig.suptitle("Ornstein–Uhlenbeck process")
    fig.tight_layout()
    path = figure_path("ml_ou")
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()
