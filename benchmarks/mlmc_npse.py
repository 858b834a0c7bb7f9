"""Experiment (b) of Haji-Ali et al. (2025) on telescope's own NPSE posteriors: MLMC over sampler steps.

Trains an NPSE (Linhart et al. 2024) on 5000 simulations of the Gaussian-linear task in 2
dimensions (theta ~ N(0, I), x | theta ~ N(theta, 0.5 I); a 2x128 head, ~300 epochs), draws a
true parameter and 8 observations of it, and estimates posterior moments E[(theta, theta^2) | x]
by MLMC over the number of DDPM steps (level l = 2^l steps on the quadratic time grid, fine and
coarse paths coupled by shared noise, Algorithm 2) for

* the single-observation posterior p(theta | x_1): convergence test with 2000 samples on levels
  0..10, complexity test for eps in {0.01, 0.005, 0.0025};
* the tall posterior p(theta | x_1..x_8) sampled with the GAUSS composition of the 8
  per-observation scores (paper 3, Algorithm 1): 1000 samples on levels 0..9, eps in
  {0.008, 0.004, 0.002}.

eps is the root-mean-square error per component of the 4 moments (theta units).  Costs are
network evaluations (a composed GAUSS prediction costs 8); savings = standard-MC cost / MLMC
cost at the same eps, with V[P_L] from the convergence test.  Prints JSON (alpha, beta, gamma,
start level, savings per eps, N_l, the MLMC estimates of mean and variance against the
analytic posterior) and writes the Figure-3 panels (npse_single.png, npse_tall.png).

Measured (one thread, shared 2-core machine, 8 minutes in all: training 76 s, single 78 s,
tall 314 s; JSON and PNGs under --out): single alpha 0.83, beta 1.72, savings 5.9x /
19.8x / 37.7x at eps 0.01 / 0.005 / 0.0025; tall GAUSS alpha 0.44, beta 1.73, savings 15.6x /
52.6x / 110x at eps 0.008 / 0.004 / 0.002.  The MLMC estimates sit within ~eps of one another
and 0.016 (single) / 0.045 (tall) rms from the analytic moments: the error of the trained
network (and of GAUSS), which MLMC does not remove.  --model reuses the trained network,
--posteriors runs one of them.

    python benchmarks/mlmc_npse.py [--out runs/mlmc_npse] [--model runs/mlmc_npse/model.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from telescope.mlmc_experiments import summary
from telescope.mlmc_npse import run_npse


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/mlmc_npse", help="output folder for JSON and PNG files")
    p.add_argument("--model", default=None, help="NPSE file to load (or to save after training)")
    p.add_argument("--posteriors", nargs="+", choices=("single", "tall"), default=["single", "tall"])
    p.add_argument("--n-sims", type=int, default=5000)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--n-obs", type=int, default=8)
    p.add_argument("--sampler", choices=("ddpm", "ddim", "ode"), default="ddpm")
    p.add_argument("--n", type=int, default=2000, help="convergence-test samples per level (single)")
    p.add_argument("-L", type=int, default=10, help="finest convergence-test level (single)")
    p.add_argument("--n-tall", type=int, default=1000)
    p.add_argument("--L-tall", type=int, default=9)
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.005, 0.0025])
    p.add_argument("--eps-tall", type=float, nargs="+", default=[0.008, 0.004, 0.002])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = run_npse(args.out, n_sims=args.n_sims, max_epochs=args.max_epochs, model=args.model, n_obs=args.n_obs,
                   posteriors=tuple(args.posteriors), sampler=args.sampler, n=args.n, L=args.L, n_tall=args.n_tall,
                   L_tall=args.L_tall, eps=tuple(args.eps), eps_tall=tuple(args.eps_tall), seed=args.seed, log=log)
    out = {"benchmark": "mlmc_npse", "seconds": time.time() - t0, "model": res["model"],
           "theta_true": res["theta_true"], "results": {}}
    for which in args.posteriors:
        r = res[which]
        out["results"][which] = {**summary(r), "savings_at_smallest_eps": r["complexity"]["savings"][-1],
                                 "savings_driver": r["complexity"]["savings_driver"], "problem": r["problem"],
                                 "truth": r["truth"], "seconds": r["seconds"], "files": r.get("files")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
