"""Experiment (a) of Haji-Ali et al. (2025) at toy scale: MLMC for diffusion posteriors on 8x8 digits.

Trains one small conditional noise-prediction MLP on scikit-learn's bundled 8x8 digits
(1600 training images, pixels scaled to [-1, 1]; telescope's training loop, ~12000 Adam steps
with an EMA of the weights) and runs, on a held-out digit, three posterior problems with the
three start-state cases of Section 2.2:

* denoising, sigma_y = 0.8: unconditional network, DDPM started at the noisy image rescaled to
  the matching noise level (M = 0, Section 3.2);
* inpainting of the centre 4x4 block: network conditioned on the observed pixels (held fixed),
  deterministic DDIM / probability-flow ODE from noise on the block (binary M, Section 3.3);
* super-resolution 4x4 -> 8x8: network conditioned on the low-resolution image, DDPM from
  N(0, I) (M = I, Section 3.1).

For each: Giles' convergence test (1000 coupled samples on levels 0..9, level l = 2^l steps)
and the complexity test for eps in {0.008, 0.004, 0.002, 0.001} (rms error per pixel of the
posterior second moment E[x^2 | y]), with the eq.-(19) starting level.  Costs are network
evaluations; the standard-MC cost is V[P_L] C_L / (eps^2 / 2) on the finest level L that MLMC
used.  Prints JSON (alpha, beta, gamma, savings per eps, N_l) and writes the Figure-3 panels.

Reduced sizes (vs the paper's 128x128 / CIFAR / ImageNet models, 10^3-10^4 samples per level,
eps ~ 1e-3): 8x8 images, a 3x256 MLP, 1000 samples per level.  About 7 minutes on one idle
CPU core (13 minutes measured on a heavily shared 2-core machine, training 290 s of it); pass
--model to reuse a trained network.

    python benchmarks/mlmc_digits.py [--out runs/mlmc_digits] [--model runs/mlmc_digits/model.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from telescope.mlmc_experiments import TASKS, run_digits, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/mlmc_digits", help="output folder for JSON and PNG files")
    p.add_argument("--model", default=None, help="model file to load (or to save after training)")
    p.add_argument("--train-steps", type=int, default=12000)
    p.add_argument("--n", type=int, default=1000, help="samples per level in the convergence test")
    p.add_argument("-L", type=int, default=9, help="finest level of the convergence test")
    p.add_argument("--eps", type=float, nargs="+", default=[0.008, 0.004, 0.002, 0.001])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = run_digits(args.out, tasks=args.tasks, model=args.model, train_steps=args.train_steps, n=args.n, L=args.L,
                     eps=tuple(args.eps), seed=args.seed, log=log)
    out = {"benchmark": "mlmc_digits", "seconds": time.time() - t0, "model": res["model"], "tasks": {}}
    for t in args.tasks:
        s = summary(res[t])
        out["tasks"][t] = {**s, "problem": {k: v for k, v in res[t]["problem"].items() if k not in ("y", "mask")},
                           "savings_at_smallest_eps": s["savings"][-1], "files": res[t].get("files")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
