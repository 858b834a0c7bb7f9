"""Paper 3 Fig. 3: tall-data posteriors from one score network, against N_train and n.

Linhart et al., "Diffusion posterior sampling for simulation-based inference in tall data
settings", Section 4.2 and Fig. 3 (Fig. 8 for the same data against n): a score network (NPSE) is
trained on N_train simulations of SLCP, SIR and Lotka-Volterra, and the tall posterior
p(theta | x_1..x_n) is sampled with GAUSS, JAC and F-NPSE (eq. 6, the Langevin baseline of
Geffner et al.) for n in {1, 8, 14, 22, 30}.  Each sample set is scored against an MCMC reference
of the exact tall posterior by the sliced Wasserstein distance (paper: 10^4 slices, 10^3 samples)
and the squared MMD.

This is a thin driver over ``telescope bench`` (so it resumes where it stopped): methods
``npse_gauss``, ``npse_jac`` and ``npse_fnpse`` share one trained score network per task and
budget.  It prints JSON (mean and sd over the observations, i.e. over theta*, as in the paper)
and draws the figure: one row per task, one column per n, sW against N_train.  The grey band is
the sW between two disjoint reference sets of the same size: the floor a perfect sampler reaches
(the paper subtracts a similar term for its toy examples).

CPU settings (say so when quoting): JAC runs ``--jac-steps`` (default 250, paper 1000) and F-NPSE
``--fnpse-steps`` (default 200 with 5 Langevin steps each, paper 400); GAUSS runs the library's 50.
Paper: 10 theta* per task, N_train up to 3*10^4.

    python benchmarks/tall_data.py --tasks sir --observations 1 --threads 1
    python benchmarks/tall_data.py --summary-only runs/tall_data_sir.jsonl runs/tall_data_slcp.jsonl \
        --plot runs/tall_data.png                        # JSON and one figure from several results files
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
from pathlib import Path

import torch

import telescope as ts
from telescope import bench
from telescope.metrics import sliced_wasserstein

METHODS = ("npse_gauss", "npse_jac", "npse_fnpse")
LABELS = {"npse_gauss": "GAUSS", "npse_jac": "JAC", "npse_fnpse": "F-NPSE"}
COLOURS = {"npse_gauss": "C0", "npse_jac": "C1", "npse_fnpse": "C2"}  # fixed: a method with no points keeps its colour


def floor(task_name: str, i: int, n_obs: int, samples: int) -> float:
    """sW between two disjoint reference sets of ``samples`` draws."""
    ref = bench._reference(ts.tasks.get(task_name), i, n_obs, 2 * samples)
    return float(sliced_wasserstein(ref[:samples], ref[samples:], seed=i))


def collect(rows: list[dict], spec: dict) -> list[dict]:
    """Mean and sd over observations (theta*) of each metric per (task, method, budget, n_obs)."""
    out = []
    for r in rows:
        if "error" in r:
            out.append({**r["cell"], "error": r["error"]})
            continue
        row = {**r["cell"], "train_s": round(r["train_s"], 1), "sample_s": round(r["sample_s"], 1)}
        for m in spec["metrics"]:
            vals = [o[m] for o in r["observations"] if m in o and math.isfinite(o[m])]
            if vals:
                row[m] = round(statistics.fmean(vals), 4)
                row[m + "_sd"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
            row[m + "_nonfinite"] = len(r["observations"]) - len(vals)
        out.append(row)
    return out


def plot(table: list[dict], floors: dict, spec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, n_obs = spec["tasks"], spec["n_obs"]
    fig, axes = plt.subplots(len(tasks), len(n_obs), figsize=(2.6 * len(n_obs), 2.3 * len(tasks)),
                             squeeze=False, sharex=True)
    for a, task in enumerate(tasks):
        for b, n in enumerate(n_obs):
            ax = axes[a][b]
            for method in spec["methods"]:
                pts = sorted((r["budget"], r["swd"], r["swd_sd"]) for r in table
                             if r["task"] == task and r["n_obs"] == n and r["method"] == method and "swd" in r)
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=LABELS.get(method, method),
                                color=COLOURS.get(method))
            f = floors.get(f"{task}|{n}")
            if f is not None:
                ax.axhspan(0, f, color="grey", alpha=0.25, lw=0)
            ax.set_xscale("log")
            ax.set_xticks(spec["budgets"], [f"{b:.0e}".replace("e+0", "e") for b in spec["budgets"]], fontsize=7)
            ax.minorticks_off()
            if a == 0:
                ax.set_title(f"n = {n}")
            if b == 0:
                ax.set_ylabel(f"{task}\nsW")
            if a == len(tasks) - 1:
                ax.set_xlabel("N_train")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["slcp", "sir", "lotka_volterra"])
    p.add_argument("--budgets", nargs="+", type=int, default=[1000, 3000, 10000])
    p.add_argument("--n-obs", nargs="+", type=int, default=[1, 8, 14, 22, 30])
    p.add_argument("--observations", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--jac-steps", type=int, default=250)
    p.add_argument("--fnpse-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="results file (default runs/tall_data_<tasks>.jsonl)")
    p.add_argument("--plot", default=None, help="figure (default: the results file with .png)")
    p.add_argument("--summary-only", nargs="*", metavar="FILE", default=None,
                   help="no new cells: JSON and figure of results files (default: --out), merged into one figure")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/tall_data_{'_'.join(args.tasks)}.jsonl")
    options = {"npse_jac": {"steps": args.jac_steps}, "npse_fnpse": {"steps": args.fnpse_steps}}
    spec = bench.make_spec(methods=args.methods, tasks=args.tasks, budgets=args.budgets, seeds=[args.seed],
                           observations=args.observations, n_obs=args.n_obs, metrics=["swd", "mmd"],
                           samples=args.samples,
                           sample_options={m: o for m, o in options.items() if m in args.methods})
    if args.summary_only is not None:
        rows, union = [], {"tasks": [], "budgets": [], "n_obs": [], "observations": []}
        for path in args.summary_only or [out]:
            spec, more = bench.read_results(path)
            rows += more
            for k, seen in union.items():
                seen += [v for v in spec[k] if v not in seen]
        spec = {**spec, **{k: v if k == "tasks" else sorted(v) for k, v in union.items()}}
        rows = list({bench.cell_key(r["cell"]): r for r in rows}.values())  # a cell in two files: the later one
    else:
        with contextlib.redirect_stdout(sys.stderr):  # progress lines to stderr: stdout is the JSON
            rows = bench.run(spec, out)
    table = collect(rows, spec)
    floors = {}
    for task in spec["tasks"]:
        for n in spec["n_obs"]:
            if any(r["task"] == task and r["n_obs"] == n for r in table):
                floors[f"{task}|{n}"] = round(statistics.fmean(floor(task, i, n, spec["samples"])
                                                               for i in spec["observations"]), 4)
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(table, floors, spec, png)
    json.dump({"paper": "Linhart et al., Section 4.2, Fig. 3", "spec": spec, "swd_floor": floors, "cells": table,
               "figure": str(png)}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
