"""NRE-C benchmark (paper 2, Section 3.3 and Tables 3-4): telescope NRE-C and NRE-B against sbi's NRE_C.

For every task and simulation budget one set of simulations is drawn and given to every method:

* ``nre_c``      telescope NRE-C, gamma = 1 and large K (bootstrapped from the minibatch);
* ``nre_b``      telescope NRE-B (gamma = inf), same K and network;
* ``sbi_nre_c``  the ``sbi`` package's ``NRE_C`` with its default settings (a peer; skipped with a note when
  sbi is not installed).

Every posterior is sampled with the same sampler for every method, so the comparison is of the trained
ratios: exact rejection from the prior (:func:`telescope.estimators.nre.rejection_sample`) by default, or
slice-sampling MCMC (:func:`telescope.samplers.mcmc.mcmc_posterior`, SIR-initialised chains) for tasks named
in ``--mcmc-tasks`` (default slcp and gaussian_linear_uniform, whose posteriors are so narrow against the box
prior that rejection accepts a vanishing share of proposals).  It is
scored with C2ST against the task's reference posterior on the first ``--observations`` observations.
Also reported per telescope run: the mutual-information bound I^(0) on the validation split (model
selection without the true posterior) and mean |log Z(x_o)| over the observations (the NRE-B bias).
Times are wall-clock training seconds in this one process; ratios against sbi are given per task and budget.

Usage::

    python benchmarks/nre_c.py                                  # two_moons, gaussian_linear at 10^4, 3 obs
    python benchmarks/nre_c.py --tasks two_moons slcp gaussian_mixture --budgets 1000 10000 --observations 10
    python benchmarks/nre_c.py --methods nre_c sbi_nre_c --threads 2 --out results.json

Paper 2's NRE-C at 10^4 simulations (C2ST, lower is better): two_moons 0.594, gaussian_mixture 0.751,
slcp 0.941, gaussian_linear 0.583, gaussian_linear_uniform 0.677.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings

import torch

import telescope as ts
from telescope.diagnostics import log_normalizer
from telescope.estimators.nre import NRE, rejection_sample
from telescope.metrics import c2st
from telescope.samplers.mcmc import mcmc_posterior

PAPER_NRE_C = {  # Tables 3-4, C2ST of NRE-C at 10^3 / 10^4 / 10^5 simulations
    "two_moons": {1000: 0.777, 10000: 0.594, 100000: 0.526},
    "gaussian_mixture": {1000: 0.807, 10000: 0.751, 100000: 0.751},
    "slcp": {1000: 0.973, 10000: 0.941, 100000: 0.810},
    "gaussian_linear": {1000: 0.684, 10000: 0.583, 100000: 0.547},
    "gaussian_linear_uniform": {1000: 0.751, 10000: 0.677, 100000: 0.553},
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "gaussian_linear"])
    p.add_argument("--budgets", nargs="+", type=int, default=[10_000])
    p.add_argument("--observations", type=int, default=3, help="C2ST on observations 1..N")
    p.add_argument("--methods", nargs="+", default=["nre_c", "nre_b", "sbi_nre_c"],
                   choices=["nre_c", "nre_b", "sbi_nre_c"])
    p.add_argument("--samples", type=int, default=10_000, help="posterior and reference samples per observation")
    p.add_argument("--K", type=int, default=None, help="contrastive parameters (default: NRE's default)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:JSON",
                   help='extra telescope NRE runs, e.g. \'k19:{"K": 19, "batch_size": 512}\' (estimator and fit '
                        'keywords; gamma defaults to 1); reported as "nre_c[NAME]"')
    p.add_argument("--mcmc-tasks", nargs="*", default=["slcp", "gaussian_linear_uniform"],
                   help="tasks sampled with slice-sampling MCMC instead of rejection (all methods alike)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (both libraries)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


ESTIMATOR_KEYS = {"gamma", "K", "contrastive", "width", "blocks", "batch_norm", "dropout"}


def telescope_kwargs(args, gamma: float, variant: dict | None = None) -> tuple[dict, dict]:
    est = {"gamma": gamma}
    for k in ("K", "width", "blocks"):
        if getattr(args, k) is not None:
            est[k] = getattr(args, k)
    fit = {"max_epochs": args.max_epochs, "progress_bar": False}
    if args.batch_size is not None:
        fit["batch_size"] = args.batch_size
    if args.lr is not None:
        fit["lr"] = args.lr
    for k, v in (variant or {}).items():
        (est if k in ESTIMATOR_KEYS else fit)[k] = float(v) if k == "gamma" else v
    return est, fit


def parse_variants(items: list[str]) -> dict[str, dict]:
    out = {}
    for item in items:
        name, sep, spec = item.partition(":")
        if not sep:
            raise SystemExit(f"--variant must look like NAME:JSON, got {item!r}")
        out[name] = json.loads(spec)
    return out


def sample_ratio(log_weight, task, n: int, seed: int, mcmc: bool) -> torch.Tensor:
    """``n`` samples of ``prior(theta) exp(log_weight(theta))``, the same way for every method."""
    def lw(theta):
        return log_weight(theta).reshape(-1)

    with torch.no_grad():
        if mcmc:
            def log_prob(theta):
                return task.prior.log_prob(theta) + lw(theta)

            return mcmc_posterior(log_prob, task.prior, n, chains=100, warmup=200, thin=2, n_proposals=100_000,
                                  seed=seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return rejection_sample(lw, task.prior, n, chunk=50_000)[0][:, 0]


def score(sample_fn, task, observations: int, n: int, seed: int) -> tuple[list[float], float]:
    scores, t = [], 0.0
    for i in range(1, observations + 1):
        t0 = time.perf_counter()
        s = sample_fn(task.observation(i), n, seed + i)
        t += time.perf_counter() - t0
        scores.append(c2st(s, task.reference_samples(i, n), seed=seed))
    return scores, t


def run_telescope(task, theta, x, gamma, args, variant: dict | None = None) -> dict:
    est_kw, fit_kw = telescope_kwargs(args, gamma, variant)
    est = NRE(task.prior, seed=args.seed, **est_kw)
    t0 = time.perf_counter()
    est.fit(theta, x, mi_samples=0, **fit_kw)
    train_s = time.perf_counter() - t0
    if est.history.get("epochs"):  # MI bound on the validation split, outside the timed part
        from telescope.diagnostics import mutual_information
        from telescope.training import split

        _, val = split({"theta": theta, "x": x}, 0.1, torch.Generator().manual_seed(args.seed))
        est.history["mi"] = mutual_information(est, val["theta"], val["x"], n_contrast=100, seed=args.seed)

    def sample(x_o, n, seed):
        return sample_ratio(est._log_weight(est._x_set(x_o)), task, n, seed, task.name in args.mcmc_tasks)

    scores, sample_s = score(sample, task, args.observations, args.samples, args.seed)
    obs = torch.stack([task.observation(i) for i in range(1, args.observations + 1)])
    log_z = log_normalizer(est, obs, n=100_000, seed=args.seed)
    return {"c2st": scores, "c2st_mean": sum(scores) / len(scores), "train_s": train_s, "sample_s": sample_s,
            "epochs": est.history["epochs"], "best_epoch": est.history["best_epoch"],
            "I0": est.history["mi"]["I0"], "I1": est.history["mi"]["I1"],
            "mean_abs_log_Z_obs": float(log_z.abs().mean()),
            "config": {**est.config, **{k: v for k, v in fit_kw.items() if k != "progress_bar"}}}


def run_sbi(task, theta, x, args) -> dict:
    try:
        from sbi.inference import NRE_C
    except ImportError as e:  # a peer, installed only for benchmarks
        return {"skipped": f"sbi is not installed ({e}); pip install sbi -c constraints.txt"}
    import sbi

    inference = NRE_C(prior=task.prior, show_progress_bars=False)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.chdir(tmp)  # sbi writes TensorBoard logs under ./sbi-logs
        try:
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            ratio = inference.append_simulations(theta, x).train(max_num_epochs=args.max_epochs)
            train_s = time.perf_counter() - t0
        finally:
            os.chdir(cwd)
    ratio.eval()
    epochs = inference.summary.get("epochs_trained", [None])[-1]

    @torch.no_grad()
    def log_weight_for(x_o):
        def f(theta):
            return ratio(theta, x_o.reshape(1, -1).expand(theta.shape[0], -1))
        return f

    def sample(x_o, n, seed):
        return sample_ratio(log_weight_for(x_o), task, n, seed, task.name in args.mcmc_tasks)

    scores, sample_s = score(sample, task, args.observations, args.samples, args.seed)
    return {"c2st": scores, "c2st_mean": sum(scores) / max(1, len(scores)), "train_s": train_s, "sample_s": sample_s,
            "epochs": epochs, "version": sbi.__version__,
            "config": {"num_classes": 5, "gamma": 1.0, "training_batch_size": 200, "classifier": "resnet"}}


def warm_up(args) -> None:
    """Pay one-time costs (thread pools, allocator, lazy imports) before anything is timed."""
    task = ts.tasks.get("gaussian_linear", dim=2)
    theta, x = ts.simulate(task.simulator, task.prior, 300, seed=0, progress_bar=False)
    NRE(task.prior, K=3).fit(theta, x, max_epochs=2, mi_samples=0, progress_bar=False)
    if "sbi_nre_c" in args.methods:
        warm = argparse.Namespace(**{**vars(args), "observations": 0, "max_epochs": 2})
        run_sbi(task, theta, x, warm)


def main(argv=None) -> dict:
    args = parse(argv)
    variants = parse_variants(args.variant)
    torch.set_num_threads(args.threads)
    out = {"benchmark": "nre_c", "args": vars(args), "torch": torch.__version__, "telescope": ts.__version__,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "load_avg_start": os.getloadavg()[0]},
           "results": []}
    warm_up(args)
    for name in args.tasks:
        task = ts.tasks.get(name)
        for n in args.budgets:
            theta, x = ts.simulate(task.simulator, task.prior, n, seed=args.seed, progress_bar=False)
            row = {"task": name, "simulations": n, "paper_nre_c": PAPER_NRE_C.get(name, {}).get(n)}
            for method in [*args.methods, *(f"nre_c[{v}]" for v in variants)]:
                print(f"[nre_c] {name} n={n} {method} ...", file=sys.stderr, flush=True)
                if method == "nre_c":
                    row[method] = run_telescope(task, theta, x, 1.0, args)
                elif method == "nre_b":
                    row[method] = run_telescope(task, theta, x, math.inf, args)
                elif method == "sbi_nre_c":
                    row[method] = run_sbi(task, theta, x, args)
                else:
                    row[method] = run_telescope(task, theta, x, 1.0, args, variants[method[6:-1]])
                print(f"[nre_c]   -> {json.dumps({k: v for k, v in row[method].items() if k != 'config'})}",
                      file=sys.stderr, flush=True)
            peer = row.get("sbi_nre_c")
            for method in [k for k in row if k.startswith("nre_c")]:
                ours, cmp = row[method], {}
                if peer and "train_s" in peer:
                    cmp["train_time_ratio_vs_sbi"] = ours["train_s"] / peer["train_s"]
                    cmp["c2st_diff_vs_sbi"] = ours["c2st_mean"] - peer["c2st_mean"]
                    cmp["meets_time_target"] = cmp["train_time_ratio_vs_sbi"] <= 0.5 and cmp["c2st_diff_vs_sbi"] <= 0
                if row["paper_nre_c"] is not None:
                    cmp["meets_paper_c2st"] = ours["c2st_mean"] <= row["paper_nre_c"]
                row.setdefault("targets", {})[method] = cmp
            out["results"].append(row)
    out["machine"]["load_avg_end"] = os.getloadavg()[0]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return out


if __name__ == "__main__":
    main()
