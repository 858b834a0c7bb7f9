"""Tall-data NPSE against the ``sbi`` package (its NPSE with ``iid_method`` "gauss", "jac_gauss", "fnpe").

Both libraries train a score network on the SAME simulations of a Gaussian-linear task
(theta ~ N(0, I_d), x | theta ~ N(theta, s2 I_d)), whose tall posterior p(theta | x_1..n) is Gaussian
and known.  For each number of observations n, both sample ``--samples`` draws of the tall
posterior of the same observations, in this one process, and we report sampling time and
accuracy against exact reference draws (sliced Wasserstein, standardised mean error, variance
ratio).  Ratios telescope / sbi are printed in ``summary``.

``sbi`` is a peer installed only for this benchmark::

    pip install sbi -c constraints.txt
    python benchmarks/npse_peer_sbi.py --n-obs 8 32 --out npse_sbi.json

The reported time is sampling only (training budgets differ between the libraries' defaults and
are reported separately).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import torch

import telescope as ts
from telescope.estimators.npse import NPSE
from telescope.metrics import sliced_wasserstein

TS_METHODS = {"gauss": {"method": "gauss", "steps": 50}, "jac": {"method": "jac", "steps": 200},
              "fnpse": {"method": "fnpse", "steps": 200}}
SBI_METHODS = ("gauss", "jac_gauss", "fnpe")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def accuracy(s, ref, mean, var, seed):
    s = s.double()
    ok = bool(torch.isfinite(s).all())
    return {"sw": sliced_wasserstein(s, ref, n_projections=1000, seed=seed) if ok else float("nan"),
            "mean_error_sd": float(((s.mean(0) - mean) / var.sqrt()).abs().max()) if ok else float("nan"),
            "var_ratio": [float(v) for v in (s.var(0) / var)] if ok else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=3)
    p.add_argument("--noise-var", type=float, default=0.5)
    p.add_argument("--simulations", type=int, default=5000)
    p.add_argument("--n-obs", type=int, nargs="+", default=[8, 32])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--max-epochs", type=int, default=400)
    p.add_argument("--sbi-steps", type=int, default=500, help="sbi's sampling steps (its default)")
    p.add_argument("--sbi-methods", nargs="*", default=list(SBI_METHODS))
    p.add_argument("--ts-methods", nargs="*", default=list(TS_METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import sbi
        from sbi.inference import NPSE as SbiNPSE
    except ImportError:
        print(json.dumps({"benchmark": "npse_peer_sbi", "error": "sbi is not installed: pip install sbi -c "
                          "constraints.txt"}))
        return

    d, s2 = args.dim, args.noise_var
    task = ts.tasks.get("gaussian_linear", dim=d, prior_var=1.0, noise_var=s2)
    theta, x = ts.simulate(task.simulator, task.prior, args.simulations, seed=args.seed, progress_bar=False)
    g = torch.Generator().manual_seed(args.seed + 1)
    theta_star = torch.randn(d, generator=g) * 0.5
    x_all = theta_star + math.sqrt(s2) * torch.randn(max(args.n_obs), d, generator=g)
    out = {"benchmark": "npse_peer_sbi", "sbi_version": sbi.__version__, "torch": torch.__version__,
           "threads": args.threads, "task": {"dim": d, "noise_var": s2, "simulations": args.simulations},
           "samples": args.samples, "results": []}

    # -- training (reported, not compared) ----------------------------------------------------------
    t0 = time.perf_counter()
    est = NPSE(task.prior, hidden=(64, 128, 64), embed=32, embed_hidden=(32, 32)).fit(
        theta, x, max_epochs=args.max_epochs, patience=40, progress_bar=False)
    out["telescope_train_seconds"] = time.perf_counter() - t0
    out["telescope_epochs"] = est.history["epochs"]
    log(f"telescope trained in {out['telescope_train_seconds']:.0f}s ({est.history['epochs']} epochs)")
    prior_sbi = torch.distributions.MultivariateNormal(torch.zeros(d), torch.eye(d))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference = SbiNPSE(prior=prior_sbi, sde_type="vp", show_progress_bars=False)
        score_est = inference.append_simulations(theta, x).train(max_num_epochs=args.max_epochs)
        posterior = inference.build_posterior(score_est)
    out["sbi_train_seconds"] = time.perf_counter() - t0
    log(f"sbi trained in {out['sbi_train_seconds']:.0f}s")

    # -- tall sampling, both libraries, same observations ---------------------------------------------
    for n in args.n_obs:
        xs = x_all[:n]
        var = torch.full((d,), 1.0 / (1.0 + n / s2), dtype=torch.float64)
        mean = var * xs.double().sum(0) / s2
        ref = mean + var.sqrt() * torch.randn(args.samples, d, generator=g, dtype=torch.float64)
        for name in args.ts_methods:
            kw = TS_METHODS[name]
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                s = est.sample(xs, args.samples, seed=args.seed, **kw)
            dt = time.perf_counter() - t0
            row = {"library": "telescope", "method": name, "n_obs": n, "steps": kw["steps"], "seconds": dt,
                   **accuracy(s, ref, mean, var, args.seed)}
            out["results"].append(row)
            log(f"n={n:3d} telescope {name:9s} {dt:7.1f}s sW={row['sw']:.4f} mean err={row['mean_error_sd']:.2f} sd")
        for name in args.sbi_methods:
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = posterior.sample((args.samples,), x=xs, iid_method=name, steps=args.sbi_steps,
                                         show_progress_bars=False)
                dt = time.perf_counter() - t0
                row = {"library": "sbi", "method": name, "n_obs": n, "steps": args.sbi_steps, "seconds": dt,
                       **accuracy(s, ref, mean, var, args.seed)}
            except Exception as e:  # a peer failing is a result, not a crash
                dt = time.perf_counter() - t0
                row = {"library": "sbi", "method": name, "n_obs": n, "seconds": dt, "error": f"{type(e).__name__}: {e}"}
            out["results"].append(row)
            log(f"n={n:3d} sbi       {name:9s} {dt:7.1f}s sW={row.get('sw', float('nan')):.4f}")

    # -- summary: telescope GAUSS against every sbi method at the same n ---------------------------------
    summary = []
    for n in args.n_obs:
        mine = [r for r in out["results"] if r["library"] == "telescope" and r["method"] == "gauss" and r["n_obs"] == n]
        for r in out["results"]:
            if r["library"] == "sbi" and r["n_obs"] == n and mine and "sw" in r:
                summary.append({"n_obs": n, "sbi_method": r["method"], "time_ratio": mine[0]["seconds"] / r["seconds"],
                                "telescope_sw": mine[0]["sw"], "sbi_sw": r["sw"],
                                "as_accurate": bool(mine[0]["sw"] <= r["sw"])})
    out["summary"] = summary
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
