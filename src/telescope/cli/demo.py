"""``telescope demo``: simulate a task, train an estimator, sample, score against the reference, write a report.

    telescope demo [--task two_moons] [--method npe] [--n 10000] [--out telescope-report]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._common import say as _say

__all__ = ["add_parsers", "cmd_demo"]


def cmd_demo(args) -> int:
    """Simulate a task, train an estimator, sample, score against the reference, write a report."""
    import torch

    import telescope as ts

    from .. import metrics, plots

    task = ts.tasks.get(args.task)
    _check_demo_args(args, task)  # before any work: no error after minutes of training
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    _say(f"task {task.name}: dim_theta={task.dim_theta}, dim_x={task.dim_x}")
    _say(f"simulating {args.n} parameter/data pairs (seed {args.seed})")
    t0 = time.perf_counter()
    theta, x = ts.simulate(task.simulator, task.prior, args.n, seed=args.seed, progress_bar=not args.quiet)
    t_sim = time.perf_counter() - t0
    method = {"npe": ts.NPE, "nle": ts.NLE}[args.method]
    _say(f"training {args.method.upper()} (early stopping on a 10% validation split, at most {args.max_time:.0f} s)")
    t0 = time.perf_counter()
    est = method(task.prior, seed=args.seed).fit(theta, x, max_time=args.max_time, progress_bar=not args.quiet)
    t_train = time.perf_counter() - t0
    _say(f"trained for {est.history['epochs']} epochs in {t_train:.1f} s (best epoch {est.history['best_epoch']})")
    results = {"task": task.name, "method": args.method, "n_simulations": args.n, "seed": args.seed,
               "simulate_seconds": t_sim, "train_seconds": t_train, "epochs": est.history["epochs"],
               "observations": []}
    for i in range(1, args.observations + 1):
        x_o = task.observation(i)
        t0 = time.perf_counter()
        samples = est.sample(x_o, args.samples, seed=i)
        t_s = time.perf_counter() - t0
        ref = task.reference_samples(i, n=args.samples) if task.reference_kind else None
        row = {"observation": i, "sample_seconds": t_s}
        if ref is not None:
            row["c2st"] = metrics.c2st(samples, ref, seed=i)
        row["nlpd_true_theta"] = float(-est.log_prob(task.true_parameters(i)[None], x_o)[0])
        results["observations"].append(row)
        _say(f"observation {i}: sampled {args.samples} in {t_s:.1f} s"
             + (f", C2ST vs reference = {row['c2st']:.3f}" if "c2st" in row else ""))
        if i == 1:
            plots.corner(samples, reference=ref, truth=task.true_parameters(i), path=out / "posterior_obs1.png")
    c2sts = [r["c2st"] for r in results["observations"] if "c2st" in r]
    if c2sts:
        results["c2st_mean"] = sum(c2sts) / len(c2sts)
    if args.method == "npe" and args.coverage > 0:
        _say(f"expected coverage on {args.coverage} fresh simulations")
        th_c, x_c = ts.simulate(task.simulator, task.prior, args.coverage, seed=args.seed + 1, progress_bar=False)
        alphas, cov = metrics.coverage(est, th_c, x_c, n_samples=500)
        results["coverage_max_deviation"] = float((cov - alphas).abs().max())
        plots.coverage_plot(alphas, cov, label=args.method.upper(), path=out / "coverage.png")
    plots.training_curves(est.history, path=out / "training.png")
    est.save(out / "estimator")
    results["total_seconds"] = time.perf_counter() - t_all
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    _say(f"report written to {out}/ (metrics.json, posterior_obs1.png, training.png"
         + (", coverage.png" if "coverage_max_deviation" in results else "") + ", estimator/)")
    if c2sts:
        _say(f"mean C2ST over {len(c2sts)} observations: {results['c2st_mean']:.3f} (0.5 is perfect)")
    _say(f"done in {results['total_seconds']:.0f} s")
    return 0


def _check_demo_args(args, task) -> None:
    """Check the demo's numbers up front; a ValueError names the option, the value and the range."""
    k = task.num_observations
    checks = [("--n", args.n, 2, "simulations (at least 2 to train)"),
              ("--observations", args.observations, 1, f"observations to score, 1..{k} for task {task.name}"),
              ("--samples", args.samples, 2, "posterior samples per observation"),
              ("--coverage", args.coverage, 0, "simulations for the coverage check (0 skips it)")]
    for opt, value, low, what in checks:
        if value < low:
            raise ValueError(f"{opt} must be >= {low} ({what}), got {value}")
    if args.observations > k:
        raise ValueError(f"--observations must be at most {k} (task {task.name} has observations 1..{k}), "
                         f"got {args.observations}")
    if not args.max_time > 0:
        raise ValueError(f"--max-time must be > 0 seconds, got {args.max_time}")


def add_parsers(subparsers) -> None:
    """Register ``demo`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    d = subparsers.add_parser("demo", help="simulate, train, sample and score a benchmark task; write a report")
    d.add_argument("--task", default="two_moons")
    d.add_argument("--method", choices=["npe", "nle"], default="npe")
    d.add_argument("--n", type=int, default=10_000, help="number of simulations")
    d.add_argument("--observations", type=int, default=3, help="observations to score (1..10)")
    d.add_argument("--samples", type=int, default=2_000, help="posterior samples per observation")
    d.add_argument("--coverage", type=int, default=200, help="simulations for the coverage check (0: skip)")
    d.add_argument("--max-time", type=float, default=150.0, help="training time limit in seconds")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="telescope-report", help="report folder")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
