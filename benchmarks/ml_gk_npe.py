"""g-and-k ML-NPE: NLPD and coverage against n_1 (paper 1, Section 5.1, Fig. 2b and 2d).

Each simulation is m = 1000 iid g-and-k draws summarised by the four octile statistics of Prangle (2016).
ML-NPE is trained on n_0 = 1000 low-fidelity simulations and n_1 seed-matched pairs; the baselines are
NPE(low) on n = 1000 low-fidelity and NPE(high) on n = 100 high-fidelity simulations.  Metrics on fresh
high-fidelity test simulations: the negative log posterior density of the true parameter (NLPD, lower is
better) and the expected coverage of HPD regions (below the diagonal = overconfident).

Network as in Appendix B.1 (NSF, 3 bins, 3 transforms, 2 x 50 hidden units; no dropout).  Training: Adam at
the paper's learning rate 1e-4, early stopping on the validation loss (patience 20; for ML-NPE the MLMC loss
of the validation pairs) — the paper trains ML-NPE for 800 fixed epochs.

    python benchmarks/ml_gk_npe.py                        # reduced default: 1 repeat, a few minutes
    python benchmarks/ml_gk_npe.py --repeats 5 --n1 25,50,100 --test 500 --coverage 500 --samples 2000
    python benchmarks/ml_gk_npe.py --ml-epochs 800            # ML-NPE for the paper's 800 epochs

Prints JSON (also runs/multilevel/ml_gk_npe.json) and draws runs/multilevel/ml_gk_npe.png.
"""

from __future__ import annotations

import argparse

from _ml_common import dump, figure_path, nlpd_and_coverage, set_threads, summary, timed, ts
from telescope.estimators import NPE
from telescope.multilevel import Multilevel
from telescope.tasks.g_and_k.ladder import gk_ladder

ADJUST = {"both": (True, True), "rescale": (True, False), "project": (False, True), "none": (False, False)}
NET = dict(transforms=3, bins=3, hidden=(50, 50))


def train_kwargs(args) -> dict:
    return dict(max_epochs=args.epochs, lr=args.lr, val_fraction=args.val_fraction, patience=args.patience,
                progress_bar=False)


def evaluate(est, test, args) -> dict:
    return nlpd_and_coverage(est, test[0], test[1], args.coverage, args.samples)


def run_ml(task, levels, test, args, adjust: str, seed: int) -> dict:
    rescale, project = ADJUST[adjust]
    kw = train_kwargs(args)
    if getattr(args, "ml_epochs", None):  # the paper's fixed epoch count (best validation weights still kept)
        kw.update(max_epochs=args.ml_epochs, patience=args.ml_epochs)
    make = Multilevel(NPE(task.prior, seed=seed, **NET), rescale=rescale, project=project, staged=False)
    ml, secs = timed(make.fit, levels,
                     **kw)
    return {**evaluate(ml, test, args), "seconds": secs, "epochs": ml.history["epochs"],
            "adjustment": ml.history["multilevel"]["adjustment"]}


def run_npe(task, theta, x, test, args, seed: int) -> dict:
    est, secs = timed(NPE(task.prior, seed=seed, **NET).fit, theta, x, **train_kwargs(args))
    return {**evaluate(est, test, args), "seconds": secs, "epochs": est.history["epochs"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n0", type=int, default=1000)
    p.add_argument("--n1", default="25,50,100")
    p.add_argument("--n-high", type=int, default=100)
    p.add_argument("--draws", type=int, default=1000, help="iid draws per simulation (m)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1000, help="maximum epochs (early stopping)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (the paper's 1e-4)")
    p.add_argument("--ml-epochs", type=int, default=None,
                   help="train ML-NPE for this many epochs without early stopping (the paper: 800)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--adjust", default="both", choices=sorted(ADJUST))
    p.add_argument("--constant", default="pi/2")
    p.add_argument("--test", type=int, default=500, help="test simulations for the NLPD")
    p.add_argument("--coverage", type=int, default=200, help="test simulations for the coverage")
    p.add_argument("--samples", type=int, default=500, help="posterior samples per coverage simulation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    set_threads(args.threads)
    task = ts.tasks.get("g_and_k", n_draws=1)
    ladder = gk_ladder(args.draws, constant=args.constant, summary=True)
    n1s = [int(v) for v in args.n1.split(",")]
    test = ts.simulate(ladder[1], task.prior, args.test, seed=99_999, progress_bar=False)
    res: dict = {"ml": {n: [] for n in n1s}, "low": [], "high": []}
    for r in range(args.repeats):
        levels = ts.simulate_levels(ladder, task.prior, n=[args.n0, max(n1s)], seed=r, progress_bar=False)
        th, hi, lo = levels[1]
        for n1 in n1s:
            res["ml"][n1].append(run_ml(task, [levels[0], (th[:n1], hi[:n1], lo[:n1])], test, args, args.adjust, r))
        low = ts.simulate(ladder[0], task.prior, args.n0, seed=1000 + r, progress_bar=False)
        res["low"].append(run_npe(task, *low, test, args, r))
        high = ts.simulate(ladder[1], task.prior, args.n_high, seed=2000 + r, progress_bar=False)
        res["high"].append(run_npe(task, *high, test, args, r))

    def table(runs):
        return {"nlpd": summary([u["nlpd"] for u in runs]),
                "coverage_gap_mean": summary([u["coverage_gap_mean"] for u in runs]),
                "coverage_gap_min": summary([u["coverage_gap_min"] for u in runs])}

    out = {
        "experiment": "g-and-k ML-NPE, NLPD and coverage vs n_1 (paper 1, Fig. 2b, 2d)",
        "settings": {**vars(args), "network": NET, "summary": "octiles (Prangle 2016)"},
        "ml_npe": {str(n): table(v) for n, v in res["ml"].items()},
        "npe_low": table(res["low"]), "npe_high": table(res["high"]),
        "runs": {"ml_npe": {str(n): [{k: v for k, v in u.items() if k not in ("coverage", "alphas")} for u in runs]
                            for n, runs in res["ml"].items()},
                 "npe_low": [{k: v for k, v in u.items() if k not in ("coverage", "alphas")} for u in res["low"]],
                 "npe_high": [{k: v for k, v in u.items() if k not in ("coverage", "alphas")} for u in res["high"]]},
    }
    top = out["ml_npe"][str(max(n1s))]
    out["target"] = {"ml_nlpd_le_-0.30": top["nlpd"]["mean"] <= -0.30,
                     "ml_coverage_not_overconfident (mean gap >= -0.02)": top["coverage_gap_mean"]["mean"] >= -0.02}
    if not args.no_plot:
        out["figure"] = str(plot(res, n1s, args))
    dump("ml_gk_npe", out)


def plot(res, n1s, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.boxplot([[u["nlpd"] for u in res["ml"][n]] for n in n1s], positions=range(len(n1s)), widths=0.5)
    means = [sum(u["nlpd"] for u in res["ml"][n]) / len(res["ml"][n]) for n in n1s]
    a.plot(range(len(n1s)), means, "o-", color="tab:blue", label="ML (mean)")
    a.set_xticks(range(len(n1s)), [str(n) for n in n1s])
    for key, colour, label in (("low", "tab:orange", f"NPE (low, n={args.n0})"),
                               ("high", "tab:green", f"NPE (high, n={args.n_high})")):
        vals = [u["nlpd"] for u in res[key]]
        a.axhline(sum(vals) / len(vals), color=colour, ls="--", label=label)
    a.set_xlabel("$n_1$ (high-fidelity pairs)")
    a.set_ylabel("NLPD (lower is better)")
    low_nlpd = sum(u["nlpd"] for u in res["low"]) / len(res["low"])
    if low_nlpd > 5:  # keep the ML-NPE boxes readable when NPE(low) is far off
        a.set_ylim(top=2.0)
        a.text(0.02, 0.95, f"NPE (low): {low_nlpd:.1f}", transform=a.transAxes, va="top", color="tab:orange")
    a.set_title("(b) NLPD")
    a.legend()
    alphas = res["high"][0]["alphas"]
    b.plot([0, 1], [0, 1], "k:", lw=1)
    for runs, label in ((res["ml"][max(n1s)], f"ML-NPE (n1={max(n1s)})"), (res["low"], "NPE (low)"),
                        (res["high"], "NPE (high)")):
        cov = [sum(u["coverage"][i] for u in runs) / len(runs) for i in range(len(alphas))]
        b.plot(alphas, cov, label=label)
    b.set_xlabel("credibility level")
    b.set_ylabel("empirical coverage")
    b.set_title("(d) coverage (below the diagonal: overconfident)")
    b.legend()
    fig.tight_layout()
    path = figure_path("ml_gk_npe")
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()
