"""``telescope mlmc-test``: MLMC convergence and complexity tests with plots.

``add_parsers(subparsers)`` registers it; the handler returns an exit code::

    telescope mlmc-test                                   # exact Gaussian, DDPM (seconds)
    telescope mlmc-test --experiment gaussian --sampler ode --eps 0.02 0.01 0.005
    telescope mlmc-test --experiment digits --task inpaint --model runs/digits.pt --out runs/mlmc
    telescope mlmc-test --experiment npse --posterior tall --model runs/npse.pt --out runs/mlmc

Each run writes ``<name>.json`` (the convergence test per level, the complexity test per
tolerance, alpha/beta/gamma, savings) and ``<name>.png`` (the Figure-3 panels) to ``--out``,
and prints a JSON summary.  The exact-Gaussian check runs in the library
(:func:`telescope.mlmc.gaussian.run_gaussian`); the digits and NPSE experiments train networks, so
their runners live with the benchmarks (``benchmarks/mlmc_digits.py``, ``benchmarks/mlmc_npse.py``)
and these two experiments run from a source checkout.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from ..mlmc.gaussian import run_gaussian
from ..mlmc.report import summary

__all__ = ["add_parsers", "cmd_mlmc_test"]


def add_parsers(subparsers) -> None:
    """Register ``mlmc-test`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "mlmc-test", help="MLMC convergence and complexity tests for diffusion sampling, with plots",
        description="Run Giles' convergence test (per-level means, variances, kurtosis, consistency; "
                    "fitted alpha, beta, gamma) and complexity test (MLMC vs standard MC cost per "
                    "tolerance) on coupled diffusion levels, and draw the Figure-3 panels. "
                    "'gaussian' uses data N(mu, 0.25 I) with its exact noise prediction (fast); "
                    "'digits' trains a small network on scikit-learn's 8x8 digits (a few minutes); "
                    "'npse' trains telescope's NPSE on the Gaussian-linear task and estimates posterior "
                    "means and second moments, one observation and a tall GAUSS posterior (minutes).")
    p.add_argument("--experiment", choices=("gaussian", "digits", "npse"), default="gaussian",
                   help="test problem (default gaussian)")
    p.add_argument("--task", choices=("denoise", "inpaint", "superres", "all"), default="all",
                   help="digits problem (default all three)")
    p.add_argument("--posterior", choices=("single", "tall", "all"), default="all",
                   help="npse: one observation, the tall GAUSS posterior of --n-obs observations, or both")
    p.add_argument("--n-obs", type=int, default=8, help="npse: observations of the tall posterior (default 8)")
    p.add_argument("--eps-tall", type=float, nargs="+", default=None,
                   help="npse: tolerances for the tall posterior (default 0.008 0.004 0.002)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "ode"), default=None,
                   help="reverse sampler (default: ddpm for gaussian and npse; per task for digits)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta with --sampler ddim")
    p.add_argument("--dim", type=int, default=4, help="gaussian: dimension (default 4)")
    p.add_argument("-M", type=int, default=2, help="refinement factor between levels (default 2)")
    p.add_argument("-L", "--levels", type=int, default=None,
                   help="finest level of the convergence test (default 8 gaussian, 9 digits, 10 npse; "
                        "npse tall: 9)")
    p.add_argument("--n", type=int, default=None,
                   help="samples per level in the convergence test (default 20000 gaussian, 1000 digits, "
                        "2000 npse; npse tall: 1000)")
    p.add_argument("--eps", type=float, nargs="+", default=None,
                   help="tolerances (rms error per component) of the complexity test")
    p.add_argument("--start-level", default="auto", help="base level l0, or 'auto' for eq. (19) (default)")
    p.add_argument("--model", default=None,
                   help="digits / npse: model file; loaded when it exists, else trained and saved there")
    p.add_argument("--train-steps", type=int, default=12000, help="digits: training steps (default 12000)")
    p.add_argument("--out", default="mlmc-test", help="output folder (default ./mlmc-test)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=cmd_mlmc_test)


def _benchmark(name: str, experiment: str):
    """The experiment runner ``benchmarks/<name>.py`` of a source checkout (beside the package, or in the
    working directory); a ``ValueError`` that says where it was looked for when there is none."""
    roots = [Path(__file__).resolve().parents[3] / "benchmarks", Path.cwd() / "benchmarks"]
    for root in roots:
        if (root / f"{name}.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module(name)
    raise ValueError(f"--experiment {experiment} runs benchmarks/{name}.py of a telescope source checkout, not "
                     f"found in {' or '.join(str(r) for r in roots)}; run telescope from the checkout or "
                     f"python benchmarks/{name}.py")


def cmd_mlmc_test(args) -> int:
    import torch

    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"[telescope] {msg}", file=sys.stderr, flush=True))
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    start = args.start_level
    if start != "auto":
        try:
            start = int(start)
        except ValueError:
            print(f"error: --start-level must be an integer >= 0 or 'auto', got {start!r}", file=sys.stderr)
            return 2
    try:
        if args.experiment == "gaussian":
            res = run_gaussian(args.out, d=args.dim, sampler=args.sampler or "ddpm", eta=args.eta,
                                  n=args.n or 20000, L=args.levels or 8,
                                  eps=tuple(args.eps or (0.02, 0.01, 0.005, 0.0025)), M=args.M, start_level=start,
                                  seed=args.seed, progress=not args.quiet, log=log)
            out = {"gaussian": {**summary(res), "exact_alpha": res["exact"]["alpha"],
                                "exact_beta": res["exact"]["beta"], "error_vs_truth": res["error"]["vs_truth"],
                                "files": res.get("files")}}
        elif args.experiment == "npse":
            run_npse = _benchmark("mlmc_npse", "npse").run_npse
            posts = ("single", "tall") if args.posterior == "all" else (args.posterior,)
            res = run_npse(args.out, model=args.model, n_obs=args.n_obs, posteriors=posts,
                           sampler=args.sampler or "ddpm", eta=args.eta, n=args.n or 2000, L=args.levels or 10,
                           n_tall=args.n or 1000, L_tall=args.levels or 9,
                           eps=tuple(args.eps or (0.01, 0.005, 0.0025)),
                           eps_tall=tuple(args.eps_tall or (0.008, 0.004, 0.002)), M=args.M, start_level=start,
                           seed=args.seed, progress=not args.quiet, log=log)
            out = {p: {**summary(res[p]), "truth": res[p]["truth"], "files": res[p].get("files")} for p in posts}
        else:
            digits = _benchmark("mlmc_digits", "digits")
            tasks = digits.TASKS if args.task == "all" else (args.task,)
            res = digits.run_digits(args.out, tasks=tasks, model=args.model, train_steps=args.train_steps,
                                n=args.n or 1000, L=args.levels or 9,
                                eps=tuple(args.eps or (0.008, 0.004, 0.002, 0.001)), M=args.M,
                                start_level=start, sampler=args.sampler, seed=args.seed,
                                progress=not args.quiet, log=log)
            out = {t: {**summary(res[t]), "files": res[t].get("files")} for t in tasks}
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0
