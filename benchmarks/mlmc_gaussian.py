"""MLMC over diffusion step counts on an exact Gaussian model: measured vs exact rates, accuracy.

Data N(mu, 0.25 I) in 4 dimensions (mu spread in [-1, 1]) with its exact noise prediction under
the shared VP schedule; level l runs 2^l reverse steps on the quadratic time grid.  For each
sampler (DDPM, DDIM eta = 0.5, deterministic DDIM / probability-flow ODE) this runs Giles'
convergence test (20000 coupled samples on levels 0..8) and complexity test (eps in
{0.02, 0.01, 0.005, 0.0025}, rms error per component of E[x^2]), and prints JSON: the fitted
alpha, beta, gamma next to their exact values on the same levels (from the closed-form Gaussian
recursion), the savings per eps, and the error of each MLMC estimate against the truth
mu^2 + s^2 and against the sampler's exact limit (2^14 steps; the two differ by the finite-time
error of starting from N(0, I), about 5e-4 for DDPM and 5e-3 for the ODE, which does not forget
its start).  Asymptotic theory: alpha = 1, beta = 2, gamma = 1 (see tests/test_mlmc.py).
About a minute on one core.

    python benchmarks/mlmc_gaussian.py [--out runs/mlmc_gaussian]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from telescope.mlmc.gaussian import run_gaussian
from telescope.mlmc.report import summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/mlmc_gaussian")
    p.add_argument("--samplers", nargs="+", default=["ddpm", "ddim", "ode"], choices=["ddpm", "ddim", "ode"])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("-L", type=int, default=8)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.01, 0.005, 0.0025])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = {"benchmark": "mlmc_gaussian", "results": {}}
    for s in args.samplers:
        res = run_gaussian(args.out, sampler=s, eta=0.5 if s == "ddim" else None, n=args.n, L=args.L,
                           eps=tuple(args.eps), log=lambda m: print(m, file=sys.stderr))
        key = "ddim_eta0.5" if s == "ddim" else s
        out["results"][key] = {**summary(res), "exact_alpha": res["exact"]["alpha"], "exact_beta": res["exact"]["beta"],
                               "error_vs_truth": res["error"]["vs_truth"],
                               "error_vs_limit": res["error"]["vs_limit"], "files": res.get("files")}
    out["seconds"] = time.time() - t0
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
