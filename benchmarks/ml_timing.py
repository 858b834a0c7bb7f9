"""Training time per epoch: ML-NLE / ML-NPE against NLE / NPE on the same number of samples (paper 1, App. B.2).

The paper compares standard NLE/NPE on n = 2000 simulations with ML-NLE/ML-NPE on n_0 = 1000 low-fidelity
simulations and n_1 = 500 seed-matched pairs (2000 simulations too) on the g-and-k, and reports +15-20%
per epoch for the multilevel loss with gradient adjustment.  Both are trained alternately in ONE process
(the machines are shared and noisy), each for a fixed number of epochs with the same batch size, and the
ratio of the mean seconds per epoch is printed as JSON (target: <= 1.3).  With the same ``batch_size`` an ML
step holds the level-0 batch plus both members of the level-1 pairs, so ML takes fewer, larger steps;
``ratio_matched_steps`` also matches the number and size of the steps (level-0 batch halved), which
isolates the per-step overhead of the per-term gradients and Algorithm 1.  The multilevel seconds per
epoch are those of the multilevel (fine-tuning) stage; ``whole_fit_ratio`` compares whole ``fit`` calls, which
for the default staged training also include pre-training and the safeguard's two comparison networks.

    python benchmarks/ml_timing.py                       # 3 alternating repeats, 20 epochs each
    python benchmarks/ml_timing.py --repeats 10 --epochs 50

Prints JSON (also runs/multilevel/ml_timing.json).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import telescope as ts
from _ml_common import dump
from telescope.multilevel import Multilevel
from telescope.tasks.g_and_k.ladder import gk_ladder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default="nle,npe")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    task = ts.tasks.get("g_and_k", n_draws=1)
    out: dict = {"settings": vars(args), "results": {}}
    for method in args.methods.split(","):
        if method == "nle":
            ladder, make = task.ladder(), lambda: ts.NLE(task.prior, transforms=1, bins=10, hidden=(50, 50, 50))
        else:
            ladder = gk_ladder(1000, summary=True)  # m = 1000 draws summarised by 4 octile statistics
            make = lambda: ts.NPE(task.prior, transforms=3, bins=3, hidden=(50, 50))  # noqa: E731
        levels = ts.simulate_levels(ladder, task.prior, n=[1000, 500], seed=0, progress_bar=False)
        theta, x = ts.simulate(ladder[-1], task.prior, 2000, seed=1, progress_bar=False)
        kw = dict(max_epochs=args.epochs, batch_size=args.batch_size, val_fraction=0.1, patience=10**9, ema=None,
                  progress_bar=False)
        # same batch_size: ML steps hold n_0 + 2 n_1 rows per batch_size level-0 rows (fewer, larger steps);
        # matched steps: the level-0 batch shrunk so that ML takes as many steps of as many rows as NLE/NPE
        small = max(1, round(args.batch_size * 1000 / 2000))
        single, multi, matched, whole_single, whole_multi = [], [], [], [], []
        for r in range(args.repeats):
            order = ("single", "multi", "matched") if r % 2 == 0 else ("matched", "multi", "single")
            for which in order:
                t0 = time.perf_counter()
                if which == "single":
                    est = make().fit(theta, x, **kw)
                    single.append(est.history["seconds"] / est.history["epochs"])
                    whole_single.append(time.perf_counter() - t0)
                else:
                    ml = Multilevel(make()).fit(levels, **{**kw, "batch_size": small if which == "matched"
                                                           else args.batch_size})
                    (matched if which == "matched" else multi).append(ml.history["seconds"] / ml.history["epochs"])
                    if which == "multi":
                        whole_multi.append(time.perf_counter() - t0)
        out["results"][method] = {
            "single_s_per_epoch": statistics.mean(single), "multilevel_s_per_epoch": statistics.mean(multi),
            "ratio": statistics.mean(multi) / statistics.mean(single),
            "ratio_of_medians": statistics.median(multi) / statistics.median(single),
            "multilevel_matched_steps_s_per_epoch": statistics.mean(matched),
            "ratio_matched_steps": statistics.mean(matched) / statistics.mean(single),
            "whole_fit_ratio": statistics.mean(whole_multi) / statistics.mean(whole_single),
            "single_runs": single, "multilevel_runs": multi, "multilevel_matched_runs": matched,
        }
    dump("ml_timing", out)


if __name__ == "__main__":
    main()
