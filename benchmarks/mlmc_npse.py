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
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

import telescope as ts
from telescope.mlmc.driver import mlmc_test
from telescope.mlmc.npse import gaussian_linear_moments, npse_problem
from telescope.mlmc.report import save_result, summary

__all__ = ["train_npse_gaussian_linear", "run_npse"]


def train_npse_gaussian_linear(*, dim: int = 2, prior_var: float = 1.0, noise_var: float = 0.5, n_sims: int = 5000,
                               max_epochs: int = 300, small: bool = True, model: str | None = None, seed: int = 0,
                               progress: bool = False, log: Callable[[str], None] = print):
    """Simulate the Gaussian-linear task and fit an NPSE (or load it from ``model`` when that file exists).

    Returns:
        ``(est, task, config)``.
    """
    task = ts.tasks.get("gaussian_linear", dim=dim, prior_var=prior_var, noise_var=noise_var)
    sizes = dict(hidden=(128, 128), embed=32, embed_hidden=(64, 64), frequencies=16) if small else {}
    cfg = {"task": "gaussian_linear", "dim": dim, "prior_var": prior_var, "noise_var": noise_var, "n_sims": n_sims,
           "max_epochs": max_epochs, "net": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
           "seed": seed}
    if model is not None and os.path.exists(model):
        est = ts.load(model, task.prior)
        log(f"loaded NPSE from {model}")
        return est, task, {**cfg, "loaded": model}
    theta, x = ts.simulate(task.simulator, task.prior, n_sims, seed=seed, progress_bar=False)
    t0 = time.time()
    est = ts.NPSE(task.prior, seed=seed, **sizes).fit(theta, x, max_epochs=max_epochs, progress_bar=progress)
    cfg.update(train_seconds=time.time() - t0, epochs=est.history.get("epochs"))
    log(f"trained NPSE on {n_sims} simulations: {cfg['epochs']} epochs in {cfg['train_seconds']:.0f}s")
    if model is not None:
        est.save(model)
        log(f"saved NPSE to {model}")
    return est, task, cfg


def _compare(est_vectors: list, mean: Tensor, var: Tensor) -> dict:
    """Estimates of ``(E theta, E theta^2)`` against the analytic posterior moments."""
    d = mean.numel()
    truth = np.concatenate([mean.numpy(), (mean**2 + var).numpy()])
    out: dict = {"truth_mean": mean.tolist(), "truth_var": var.tolist(), "estimate_mean": [], "estimate_var": [],
                 "rms_error_moments": [], "abs_error_mean_in_sd": [], "var_ratio": []}
    for e in est_vectors:
        e = np.asarray(e, dtype=float)
        m, s2 = e[:d], e[d:]
        v = s2 - m**2
        out["estimate_mean"].append(m.tolist())
        out["estimate_var"].append(v.tolist())
        out["rms_error_moments"].append(float(np.sqrt(np.mean((e - truth) ** 2))))
        out["abs_error_mean_in_sd"].append((np.abs(m - mean.numpy()) / np.sqrt(var.numpy())).tolist())
        out["var_ratio"].append((v / var.numpy()).tolist())
    return out


def _std_cost_beyond_convergence(res: dict, M: int, theta: float = 0.5) -> None:
    r"""Standard-MC cost for tolerances whose finest MLMC level lies beyond the convergence test.

    :func:`telescope.mlmc.complexity_test` takes :math:`V[P_L]` from the convergence test when
    ``L`` lies within it, else from the driver's own fine samples on level ``L`` (often only
    ``n_min`` of them, a noisy estimate).  :math:`V[P_\ell]` converges to the posterior variance of
    ``f`` as steps grow, so beyond the convergence test the value of its finest level is used
    (with the exact cost :math:`C_L = C_{L_c} M^{L - L_c}`); the driver's own figures are kept as
    ``std_cost_driver`` / ``savings_driver``.
    """
    conv, comp = res["convergence"], res["complexity"]
    Lc = conv["levels"][-1]
    vf, cf = conv["var_fine"][-1], conv["cost_fine"][-1]
    comp["std_cost_driver"] = list(comp["std_cost"])
    comp["savings_driver"] = list(comp["savings"])
    for i, (e, levels) in enumerate(zip(comp["eps"], comp["levels"])):
        if levels[-1] > Lc:
            comp["std_cost"][i] = vf * cf * float(M) ** (levels[-1] - Lc) / ((1 - theta) * e**2)
            comp["savings"][i] = comp["std_cost"][i] / comp["mlmc_cost"][i]
    comp["std_cost_rule"] = (f"V[P_L] C_L / (eps^2 / 2); V[P_L] from the convergence test, its finest level "
                             f"{Lc} for L > {Lc}")


def run_npse(out_dir: str | None = None, *, dim: int = 2, prior_var: float = 1.0, noise_var: float = 0.5,
             n_sims: int = 5000, max_epochs: int = 300, model: str | None = None, n_obs: int = 8,
             posteriors=("single", "tall"), sampler: str = "ddpm", eta: float | None = None, n: int = 2000,
             L: int = 10, n_tall: int = 1000, L_tall: int = 9, eps=(0.01, 0.005, 0.0025),
             eps_tall=(0.008, 0.004, 0.002), M: int = 2, start_level="auto", spacing: str = "quadratic",
             clip: bool = True, seed: int = 0, progress: bool = False,
             log: Callable[[str], None] = print) -> dict:
    r"""Experiment (b): MLMC for the posterior mean and second moment of NPSE posteriors.

    Trains (or loads) an NPSE on the Gaussian-linear task, draws a true parameter from the
    prior and ``n_obs`` observations of it, and for the single-observation posterior (the first
    observation) and the tall GAUSS posterior of all ``n_obs`` runs Giles' convergence test
    (``n`` coupled samples on levels ``0..L``) and complexity test (``eps``, resp. ``eps_tall``:
    rms error per component of :math:`(E\theta, E\theta^2)`), compares each MLMC estimate with
    the analytic posterior moments, and draws the Figure-3 panels.

    Returns:
        ``{"model": config, "theta_true", "x", "single": result, "tall": result}``; each result is
        the :func:`telescope.mlmc.mlmc_test` output plus ``problem`` (settings), ``truth``
        (analytic moments, and each estimate's error) and ``seconds``.
    """
    bad = [p for p in posteriors if p not in ("single", "tall")]
    if bad or not posteriors:
        raise ValueError(f"posteriors must be a non-empty subset of ('single', 'tall'), got {posteriors!r}")
    if isinstance(n_obs, bool) or int(n_obs) < 2:
        raise ValueError(f"n_obs must be an integer >= 2 (the tall posterior), got {n_obs!r}")
    est, task, cfg = train_npse_gaussian_linear(dim=dim, prior_var=prior_var, noise_var=noise_var, n_sims=n_sims,
                                                max_epochs=max_epochs, model=model, seed=seed, progress=progress,
                                                log=log)
    g = torch.Generator().manual_seed(seed + 7)
    theta_true = math.sqrt(prior_var) * torch.randn(dim, generator=g)
    x_set = theta_true + math.sqrt(noise_var) * torch.randn(int(n_obs), dim, generator=g)
    out: dict = {"model": cfg, "theta_true": theta_true.tolist(), "x": x_set.tolist()}
    for which in posteriors:
        t0 = time.time()
        xs = x_set[:1] if which == "single" else x_set
        tol, nn, LL = (eps, n, L) if which == "single" else (eps_tall, n_tall, L_tall)
        lv, info = npse_problem(est, xs, sampler=sampler, eta=eta, M=M, spacing=spacing, clip=clip, seed=seed)
        res = mlmc_test(lv, n=nn, L=LL, eps=tuple(tol), M=M, start_level=start_level, progress=progress,
                        estimates=True)
        _std_cost_beyond_convergence(res, M)
        mean, var = gaussian_linear_moments(prior_var, noise_var, xs)
        res["truth"] = _compare(res["complexity"].pop("estimates"), mean, var)
        res["problem"] = {**info, "n_obs": int(xs.shape[0]), "posterior": which}
        res["seconds"] = time.time() - t0
        s = summary(res)
        rates = " ".join(f"{k}={s[k]:.2f}" if s[k] is not None else f"{k}=nan" for k in ("alpha", "beta", "gamma"))
        log(f"{which}: {rates} l0={s['start_level']} "
            f"savings={[round(v, 1) for v in s['savings']]} rms err vs truth="
            f"{[round(v, 4) for v in res['truth']['rms_error_moments']]} ({res['seconds']:.0f}s)")
        if out_dir is not None:
            what = "one observation" if which == "single" else f"GAUSS, {n_obs} observations"
            title = f"NPSE Gaussian-linear (d={dim}), {what}, {info['sampler']}"
            res["files"] = save_result(res, out_dir, f"npse_{which}", title, log)
        out[which] = res
    return out


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
