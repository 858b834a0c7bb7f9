"""telescope against the ``sbi`` package at DEFAULTS: time and accuracy together (issue 23, item 5).

For each task and method, both libraries train on the same simulations in this one process, each
``--repeats`` times (alternated: telescope, sbi, telescope, sbi, ...); the fastest run of each is
reported with its C2ST against the task's reference posterior (mean over ``--observations``), and the
ratio telescope / sbi.  Every setting is each library's default: ``ts.NPE(prior).fit(theta, x)``
against ``sbi.inference.NPE(prior).append_simulations(theta, x).train()``, and so on.

* ``npe``:  train time (sampling is reported, not in the ratio);
* ``nle``:  train + sample (MCMC in both libraries);
* ``nre``:  NRE-C (telescope ``ts.NRE`` defaults: gamma=1, K=9; sbi ``NRE_C`` defaults), train + sample;
* ``npse``: train time.

    python benchmarks/peer_speed.py --methods npe --tasks two_moons gaussian_linear   # 10^4 simulations
    python benchmarks/peer_speed.py --large                                           # 10^5 as well
    python benchmarks/peer_speed.py --methods nle nre --tasks two_moons --observations 1

Writes JSON to ``--out`` (default runs/peer_speed.json; rows are merged into an existing file, keyed by
task, n and method).  ``sbi`` is a benchmark peer only: ``pip install -c constraints.txt "sbi==0.27.*"``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

import telescope as ts
from telescope import metrics

TASKS = ("two_moons", "slcp", "gaussian_linear")
METHODS = ("npe", "nle", "nre", "npse")
IN_RATIO = {"npe": ("train",), "nle": ("train", "sample"), "nre": ("train", "sample"), "npse": ("train",)}


def run_telescope(method, task, theta, x, obs, n_samples, seed):
    cls = {"npe": ts.NPE, "nle": ts.NLE, "nre": ts.NRE, "npse": ts.NPSE}[method]
    t0 = time.perf_counter()
    est = cls(task.prior, seed=seed).fit(theta, x, progress_bar=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = [est.sample(task.observation(i), n_samples, seed=i) for i in obs]
    return {"train_s": train_s, "sample_s": time.perf_counter() - t0, "epochs": est.history["epochs"]}, samples


def run_sbi(method, task, theta, x, obs, n_samples, seed):
    import sbi.inference as si

    cls = {"npe": si.NPE, "nle": si.NLE, "nre": si.NRE_C, "npse": si.NPSE}[method]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.chdir(tmp)  # sbi writes TensorBoard logs under ./sbi-logs
        try:
            torch.manual_seed(seed)
            inf = cls(prior=task.prior, show_progress_bars=False)
            t0 = time.perf_counter()
            inf.append_simulations(theta, x).train()
            train_s = time.perf_counter() - t0
            post = inf.build_posterior()
            t0 = time.perf_counter()
            samples = [post.sample((n_samples,), x=task.observation(i), show_progress_bars=False) for i in obs]
            sample_s = time.perf_counter() - t0
        finally:
            os.chdir(cwd)
    epochs = inf.summary.get("epochs_trained", [None])[-1]
    return {"train_s": train_s, "sample_s": sample_s, "epochs": epochs}, samples


def c2st_of(task, samples, obs, n_samples):
    out = []
    for i, s in zip(obs, samples):
        try:
            ref = task.reference_samples(i, n_samples)
        except Exception as e:  # noqa: BLE001 - a task without references
            return None, f"{type(e).__name__}: {e}"
        out.append(float(metrics.c2st(s.float().cpu(), ref.float().cpu(), seed=0)))
    return out, None


def bench(method, task_name, n, args) -> dict:
    task = ts.tasks.get(task_name)
    theta, x = ts.simulate(task.simulator, task.prior, n, seed=args.seed, progress_bar=False)
    obs = list(range(1, args.observations + 1))
    runs = {"telescope": [], "sbi": []}
    samples = {}
    for r in range(args.repeats):
        for lib, fn in (("telescope", run_telescope), ("sbi", run_sbi)):
            try:
                row, s = fn(method, task, theta, x, obs, args.samples, args.seed)
            except Exception as e:  # noqa: BLE001 - report, do not stop the grid
                row, s = {"error": f"{type(e).__name__}: {str(e)[:300]}"}, None
            if s is not None:
                row["cost_s"] = sum(row[k + "_s"] for k in IN_RATIO[method])
            runs[lib].append(row)
            if s is not None and (lib not in samples or row["cost_s"] <= min(
                    q["cost_s"] for q in runs[lib] if "cost_s" in q)):
                samples[lib] = s
            print(json.dumps({"task": task_name, "n": n, "method": method, "lib": lib, "run": r, **row}), flush=True)
    out = {"task": task_name, "n": n, "method": method, "observations": obs, "samples": args.samples,
           "ratio_of": "+".join(IN_RATIO[method]), "runs": runs}
    for lib in runs:
        ok = [q for q in runs[lib] if "cost_s" in q]
        if not ok:
            continue
        best = min(ok, key=lambda q: q["cost_s"])
        scores, err = c2st_of(task, samples[lib], obs, args.samples)
        out[lib] = {**best, "c2st": scores, "c2st_mean": None if scores is None else sum(scores) / len(scores)}
        if err:
            out[lib]["c2st_error"] = err
    if "telescope" in out and "sbi" in out:
        out["ratio"] = out["telescope"]["cost_s"] / out["sbi"]["cost_s"]
        out["train_ratio"] = out["telescope"]["train_s"] / out["sbi"]["train_s"]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--n", type=int, nargs="+", default=[10_000])
    p.add_argument("--large", action="store_true", help="also 10^5 simulations")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--observations", type=int, default=1)
    p.add_argument("--samples", type=int, default=1_000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/peer_speed.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import sbi
    except ImportError:
        raise SystemExit('sbi is not installed: pip install -c constraints.txt "sbi==0.27.*"') from None
    ns = list(args.n) + ([100_000] if args.large and 100_000 not in args.n else [])
    avail = set(ts.tasks.list())
    path = Path(args.out)
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({"benchmark": "peer_speed", "telescope": ts.__version__, "sbi": sbi.__version__,
                "torch": torch.__version__, "threads": torch.get_num_threads()})
    rows = {(r["task"], r["n"], r["method"]): r for r in res.get("rows", [])}
    for n in ns:
        for t in args.tasks:
            if t not in avail:
                print(json.dumps({"task": t, "skipped": "not in ts.tasks"}))
                continue
            for m in args.methods:
                row = bench(m, t, n, args)
                row["date"] = time.strftime("%Y-%m-%d %H:%M")
                rows[(t, n, m)] = row
                res["rows"] = list(rows.values())
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(res, indent=1))
                print(json.dumps({k: row.get(k) for k in ("task", "n", "method", "ratio", "train_ratio")} | {
                    lib: {k: row[lib].get(k) for k in ("train_s", "sample_s", "epochs", "c2st_mean")}
                    for lib in ("telescope", "sbi") if lib in row}), flush=True)
    return res


if __name__ == "__main__":
    main()
