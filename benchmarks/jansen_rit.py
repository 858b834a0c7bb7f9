"""Section 4.3 of Linhart et al. (2024): tall-data posteriors of the Jansen–Rit neural mass model (Figs. 4, 5).

Paper 3 (diffusion-posterior-sampling-tall-data.md), Section 4.3.  For each setting — ``3d``:
``theta = (C, mu, sigma)`` with the gain fixed to ``g = 0`` (Fig. 4), and ``4d``: ``(C, mu, sigma, g)``
(Fig. 5) — the script

1. simulates ``--n-train`` pairs from the uniform prior (``ts.tasks.get("jansen_rit")``: log-PSD
   summaries, 33 numbers); **default 10,000 — the paper uses 50,000** (CPU budget);
2. trains one NPSE (Appendix E network, the library's defaults; ``--max-epochs`` caps training,
   the paper trains 5000 epochs);
3. simulates ``max(--n)`` i.i.d. observations at ``theta* = (125, 220, 2000, 0)`` (``PAPER_THETA``;
   its first three entries in 3-D) and, for each ``n`` in ``--n`` (default 1, 8, 14, 22, 30),
   samples the tall posterior ``p(theta | x*_{1:n})`` of the nested set ``x*_{1:n}`` with GAUSS, JAC
   and LANGEVIN (F-NPSE) (``--methods``) at the paper's 1000 / 1000 / 400 steps (``--steps``);
4. reports per method and ``n``: posterior mean and sd per parameter, the squared MMD between each
   1-D marginal and the Dirac at ``theta*`` (:func:`telescope.metrics.mmd_to_point`) and its average
   over parameters, the fraction of samples outside the prior box or non-finite, and wall times.

Choices the paper leaves open, stated here:

* the MMD is computed on parameters standardised by the prior range, ``(theta - low) / (high - low)``,
  so the values are comparable across parameters, with a Gaussian kernel of ``--bandwidth`` (0.1 of
  the prior range by default);
* samples are the raw output of the sampler (``telescope.samplers.tall.TallSampler``), one draw of
  ``--samples`` with no redraw of samples outside the prior support (``NPSE.sample`` redraws them):
  a diverging method shows up in the MMD, as in the paper, instead of stalling the run.  Non-finite
  samples count as infinitely far from ``theta*`` (kernel 0) and are left out of the mean and sd;
* unclipped samplers (the paper's solid lines) by default; ``--clip`` gives the clipped variants
  (denoised estimates clamped to the widened training range; F-NPSE clamps its states);
* ``n = 1`` uses each method's own sampler with one observation (the paper's Fig. 4 shows 30 single
  observations; here ``x*_1`` only);
* simulations of 8 s after 2 s of burn-in (``--duration``, ``--burn-in``) at ``dt = 1/1024 s``: they
  cost ~3 s per 1000 on one core, so the simulator is not what limits the budget here.

Outputs: JSON on stdout and in ``--out`` (default ``runs/jansen_rit.json``), the samples in
``<out>.samples.pt``, and the figure (``--plot``, default ``runs/jansen_rit.png``, unless
``--no-plot``): per setting, MMD against ``n`` per method (left) and histograms of the GAUSS 1-D
marginals for increasing ``n`` with ``theta*`` marked (right).

Measured with the defaults (one thread, shared 2-core machine, 16 min: per setting 28 s simulating,
95 s / 137 s training, 309 s / 363 s sampling, JAC most of it): mean MMD^2 over marginals for
GAUSS / JAC / LANGEVIN, 3-D: n = 1 0.097 / 0.114 / 0.094, n = 14 0.0008 / 0.0016 / 0.0021,
n = 30 0.021 / 0.022 / 0.236 (the posterior narrows, mu drifts 2-4 sd above theta* for n >= 22);
4-D: n = 1 0.42 / 0.47 / 0.39, n = 30 0.61 / 0.82 / 1.35 (the posterior narrows onto the
gain ridge g ~ -2, mu and sigma ~1.5x theta*).  Full table in README.md.

    python benchmarks/jansen_rit.py --threads 1 2> runs/jansen_rit.log
    python benchmarks/jansen_rit.py --quick      # a smoke run (minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

import telescope as ts
from telescope.metrics import mmd_to_point
from telescope.samplers.tall import TallSampler
from telescope.tasks.jansen_rit import PAPER_THETA

NAMES = {"gauss": "GAUSS", "jac": "JAC", "fnpse": "LANGEVIN"}
PARAMS = ("C", "mu", "sigma", "g")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def draw(est, x_set, n: int, method: str, steps: int, clip: bool, seed: int):
    """One draw of ``n`` raw tall-posterior samples ``(n, d)`` (no redraws) and the sampler's info."""
    net = est.net
    sampler = TallSampler(est._eps_set(x_set), x_set.shape[0], est.prior_score(), method=method, schedule=est.schedule,
                          steps=steps, clip=net.clip_range() if clip else None,
                          generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z = sampler.sample(n)
    return net.from_working(z), sampler.info


def summarise(samples, theta_star, low, high, bandwidth):
    """Mean, sd, MMD-to-Dirac per (prior-range standardised) marginal and the failure counts."""
    finite = torch.isfinite(samples).all(-1)
    inside = finite & ((samples >= low) & (samples <= high)).all(-1)
    s = samples[finite].double()
    u = (samples.double() - low) / (high - low)
    u_star = (theta_star - low) / (high - low)
    per = mmd_to_point(u, u_star, bandwidth, marginals=True, nonfinite="far")
    q = torch.quantile(s, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0) if len(s) else None
    return {"mean": s.mean(0).tolist() if len(s) else None,
            "sd": s.std(0).tolist() if len(s) > 1 else None,
            "median": q[1].tolist() if q is not None else None,
            "iqr_sd": ((q[2] - q[0]) / 1.349).tolist() if q is not None else None,  # robust sd: IQR / 1.349
            "mmd_dirac": per.tolist(), "mmd_dirac_mean": float(per.mean()),
            "non_finite": int((~finite).sum()), "outside_prior": int((finite & ~inside).sum())}


def run_setting(dim: int, args) -> tuple[dict, dict]:
    task = ts.tasks.get("jansen_rit", fix_gain=dim == 3, duration=args.duration, burn_in=args.burn_in)
    low, high = task.prior.low.double(), task.prior.high.double()
    theta_star = torch.tensor(PAPER_THETA[:dim], dtype=torch.float64)
    out: dict = {"dim": dim, "params": list(PARAMS[:dim]), "theta_star": theta_star.tolist(),
                 "prior_low": low.tolist(), "prior_high": high.tolist()}

    t0 = time.perf_counter()
    theta, x = ts.simulate(task.simulator, task.prior, args.n_train, seed=args.seed, progress_bar=False)
    out["simulate_s"] = time.perf_counter() - t0
    out["n_train"] = int(theta.shape[0])
    log(f"[{dim}d] simulated {theta.shape[0]} pairs in {out['simulate_s']:.0f} s")

    t0 = time.perf_counter()
    est = ts.NPSE(task.prior, seed=args.seed).fit(theta, x, max_epochs=args.max_epochs, progress_bar=False)
    h = est.history
    out["train_s"] = time.perf_counter() - t0
    out["train"] = {"epochs": h["epochs"], "best_epoch": h["best_epoch"], "best_val_loss": h["best_val_loss"]}
    log(f"[{dim}d] trained {h['epochs']} epochs (best {h['best_epoch']}, val loss {h['best_val_loss']:.4f}) "
        f"in {out['train_s']:.0f} s")

    x_obs = task.simulator(theta_star.float().expand(max(args.n), dim), seed=args.seed + 1)
    steps = dict(zip(("gauss", "jac", "fnpse"), args.steps))
    rows, kept = [], {}
    for n in args.n:
        for i, method in enumerate(args.methods):
            row = {"n": n, "method": NAMES[method], "steps": steps[method]}
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    s, info = draw(est, x_obs[:n], args.samples, method, steps[method], args.clip,
                                   seed=1000 * args.seed + 10 * n + i)
                    row.update(summarise(s, theta_star, low, high, args.bandwidth))
                    row["info"] = {k: v for k, v in info.items() if isinstance(v, (int, float, bool, str))}
                    kept[(n, method)] = s
                except (RuntimeError, ValueError) as e:  # e.g. a linear-algebra failure: record, go on
                    row["error"] = f"{type(e).__name__}: {e}"
            row["seconds"] = time.perf_counter() - t0
            row["warnings"] = sorted({str(w.message)[:160] for w in caught})
            rows.append(row)
            if "error" in row:
                log(f"[{dim}d] n={n:2d} {row['method']:8s} FAILED {row['error'][:120]}")
            else:
                log(f"[{dim}d] n={n:2d} {row['method']:8s} MMD {row['mmd_dirac_mean']:.4f} "
                    f"({', '.join(f'{v:.3f}' for v in row['mmd_dirac'])}) sd "
                    f"{', '.join(f'{v:.3g}' for v in row['sd'] or [])} robust sd "
                    f"{', '.join(f'{v:.3g}' for v in row['iqr_sd'] or [])} outside {row['outside_prior']} "
                    f"non-finite {row['non_finite']} {row['seconds']:.0f} s")
    out["rows"] = rows
    out["sample_s"] = sum(r["seconds"] for r in rows)
    return out, kept


def plot(results: list[dict], samples: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 1 + max(r["dim"] for r in results)
    fig, axes = plt.subplots(len(results), ncols, figsize=(3.2 * ncols, 2.9 * len(results)), squeeze=False)
    for row_axes, res in zip(axes, results):
        dim = res["dim"]
        ax = row_axes[0]
        for name in NAMES.values():
            pts = [r for r in res["rows"] if r["method"] == name and "error" not in r]
            if pts:
                ax.plot([r["n"] for r in pts], [r["mmd_dirac_mean"] for r in pts], marker="o", ms=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("n observations")
        ax.set_ylabel("MMD$^2$ to $\\delta_{\\theta^*}$ (mean of marginals)")
        ax.set_title(f"{dim}-D JRNMM" + (" (g = 0)" if dim == 3 else ""), fontsize=9)
        ax.legend(fontsize=7)
        ns = sorted({n for (n, m) in samples[dim] if m == "gauss"})
        colours = plt.cm.viridis([k / max(len(ns) - 1, 1) for k in range(len(ns))])
        for j in range(dim):
            ax = row_axes[1 + j]
            low, high = res["prior_low"][j], res["prior_high"][j]
            vals = [samples[dim][(n, "gauss")][:, j] for n in ns]
            vals = [v[torch.isfinite(v) & (v >= low) & (v <= high)] for v in vals]  # inside the prior box
            pooled = torch.cat(vals) if vals else torch.zeros(1)
            lo, hi = torch.quantile(pooled, torch.tensor([0.005, 0.995])).tolist() if pooled.numel() > 1 else (0, 1)
            star = res["theta_star"][j]
            lo, hi = min(lo, star), max(hi, star)
            for n, v, c in zip(ns, vals, colours):
                if v.numel() == 0:
                    continue
                ax.hist(v.numpy(), bins=30, range=(lo, hi), density=True, histtype="step", color=c, label=f"n={n}")
            ax.axvline(star, color="k", ls=":", lw=1)
            ax.set_title(f"GAUSS: {PARAMS[j]}", fontsize=9)
            ax.set_yticks([])
            if j == dim - 1:
                ax.legend(fontsize=6)
        for ax in row_axes[1 + dim:]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", type=int, choices=(3, 4), default=[3, 4],
                   help="3: gain fixed to 0 (Fig. 4); 4: full model (Fig. 5)")
    p.add_argument("--n-train", type=int, default=10_000, help="training simulations (paper: 50,000)")
    p.add_argument("--max-epochs", type=int, default=1000, help="training cap (early stopping as NPSE defaults)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 8, 14, 22, 30], help="observation set sizes")
    p.add_argument("--methods", nargs="+", choices=list(NAMES), default=list(NAMES))
    p.add_argument("--steps", type=int, nargs=3, default=[1000, 1000, 400], metavar=("GAUSS", "JAC", "LANGEVIN"))
    p.add_argument("--samples", type=int, default=250, help="posterior samples per method and n")
    p.add_argument("--clip", action="store_true", help="the clipped samplers (default: unclipped, as the paper)")
    p.add_argument("--bandwidth", type=float, default=0.1, help="MMD kernel length scale, in prior ranges")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of simulated signal")
    p.add_argument("--burn-in", type=float, default=2.0, help="seconds simulated and discarded first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 2000 sims, 30 epochs, few steps")
    p.add_argument("--out", default="runs/jansen_rit.json")
    p.add_argument("--plot", default="runs/jansen_rit.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.max_epochs, args.steps, args.samples, args.n = 2000, 30, [50, 50, 20], 200, [1, 8, 30]
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results, samples = [], {}
    for dim in args.settings:
        res, kept = run_setting(dim, args)
        results.append(res)
        samples[dim] = kept
    out = {"benchmark": "jansen_rit", "paper": "Linhart et al. 2024, Section 4.3, Figs. 4 and 5",
           "note": f"{args.n_train} training simulations (the paper: 50,000); max {args.max_epochs} epochs "
                   f"(the paper: 5000); MMD^2 to the Dirac at theta* per 1-D marginal on prior-range "
                   f"standardised parameters, Gaussian kernel of bandwidth {args.bandwidth}; raw sampler output, "
                   f"{'clipped' if args.clip else 'unclipped'}",
           "settings": {k: v for k, v in vars(args).items() if k not in ("out", "plot", "no_plot")},
           "results": results, "seconds": time.perf_counter() - t0}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        torch.save({dim: {f"{m}_n{n}": s for (n, m), s in kept.items()} for dim, kept in samples.items()},
                   Path(args.out).with_suffix(".samples.pt"))
    if not args.no_plot and args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(results, samples, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
