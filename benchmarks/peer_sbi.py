"""telescope vs the `sbi` package: NPE and NLE on the same simulations, in one run.

Prints JSON: per method, C2ST against the task's reference posterior on each observation,
training wall time, sampling wall time, and the ratios telescope / sbi.

    python benchmarks/peer_sbi.py --task two_moons --n 10000 --observations 10
    python benchmarks/peer_sbi.py --methods npe --observations 3      # quicker

Requires `pip install sbi` (a peer for benchmarks, not a dependency of telescope).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import telescope as ts
from telescope import metrics


def run_telescope(method, task, theta, x, obs, n_samples, seed, variant=None):
    est_cls = {"npe": ts.NPE, "nle": ts.NLE}[method]
    v = variant or {}
    t0 = time.perf_counter()
    est = est_cls(task.prior, seed=seed, **v.get("init", {})).fit(theta, x, progress_bar=False, **v.get("fit", {}))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = [est.sample(task.observation(i), n_samples, seed=i, **v.get("sample", {})) for i in obs]
    return train_s, time.perf_counter() - t0, samples, est.history["epochs"]


def run_sbi(method, task, theta, x, obs, n_samples, seed):
    import sbi.inference as si
    from sbi.utils import BoxUniform

    torch.manual_seed(seed)
    low, high = ts.priors.prior_bounds(task.prior)
    prior = BoxUniform(low, high)
    cls = {"npe": si.NPE, "nle": si.NLE}[method]
    inf = cls(prior=prior, show_progress_bars=False)
    t0 = time.perf_counter()
    inf.append_simulations(theta, x).train()
    train_s = time.perf_counter() - t0
    epochs = inf.summary["epochs_trained"][-1] if "epochs_trained" in inf.summary else None
    post = inf.build_posterior()
    t0 = time.perf_counter()
    samples = [post.sample((n_samples,), x=task.observation(i), show_progress_bars=False) for i in obs]
    return train_s, time.perf_counter() - t0, samples, epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="two_moons")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--observations", type=int, default=10)
    p.add_argument("--samples", type=int, default=2_000)
    p.add_argument("--methods", default="npe,nle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:JSON",
                   help="an extra telescope configuration scored against the same sbi run, e.g. "
                        "'fast:{\"fit\": {\"schedule\": \"cosine\", \"max_epochs\": 50}, \"sample\": {\"warmup\": 10}}' "
                        "(keys init, fit, sample: keywords of the estimator, fit and sample)")
    a = p.parse_args()
    variants = {}
    for spec in a.variant:
        name, _, js = spec.partition(":")
        try:
            variants[name] = json.loads(js)
        except json.JSONDecodeError as e:
            p.error(f"--variant {spec!r}: expected NAME:JSON, the JSON does not parse ({e})")
        if not isinstance(variants[name], dict) or set(variants[name]) - {"init", "fit", "sample"}:
            p.error(f"--variant {name}: the JSON must be an object with keys among init, fit, sample")
    if a.threads:
        torch.set_num_threads(a.threads)
    # torch imports its compiler stack lazily on the first optimizer; pay that one-time cost here so
    # that neither library's timed training (telescope runs first) is charged for it
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    task = ts.tasks.get(a.task)
    theta, x = ts.simulate(task.simulator, task.prior, a.n, seed=a.seed, progress_bar=False)
    obs = list(range(1, a.observations + 1))
    refs = {i: task.reference_samples(i, n=a.samples) for i in obs}
    out = {"task": a.task, "n": a.n, "observations": len(obs), "samples": a.samples,
           "torch_threads": torch.get_num_threads(), "methods": {}}
    def scored(train_s, sample_s, samples, epochs) -> dict:
        c = [metrics.c2st(smp, refs[i], seed=i) for smp, i in zip(samples, obs)]
        return {"train_s": train_s, "sample_s": sample_s, "epochs": epochs, "c2st": c, "c2st_mean": sum(c) / len(c)}

    def against(t: dict, s: dict) -> dict:
        return {"train_time_ratio": t["train_s"] / s["train_s"],
                "total_time_ratio": (t["train_s"] + t["sample_s"]) / (s["train_s"] + s["sample_s"]),
                "c2st_diff": t["c2st_mean"] - s["c2st_mean"]}

    for method in a.methods.split(","):
        tr_t, sa_t, s_t, ep_t = run_telescope(method, task, theta, x, obs, a.samples, a.seed)
        print(f"telescope {method}: train {tr_t:.1f}s ({ep_t} epochs), sample {sa_t:.1f}s", file=sys.stderr, flush=True)
        tr_s, sa_s, s_s, ep_s = run_sbi(method, task, theta, x, obs, a.samples, a.seed)
        print(f"sbi {method}: train {tr_s:.1f}s ({ep_s} epochs), sample {sa_s:.1f}s", file=sys.stderr, flush=True)
        r = {"telescope": scored(tr_t, sa_t, s_t, ep_t), "sbi": scored(tr_s, sa_s, s_s, ep_s)}
        r.update(against(r["telescope"], r["sbi"]))
        for name, v in variants.items():
            tr_v, sa_v, s_v, ep_v = run_telescope(method, task, theta, x, obs, a.samples, a.seed, v)
            print(f"telescope {method}[{name}]: train {tr_v:.1f}s ({ep_v} epochs), sample {sa_v:.1f}s", file=sys.stderr,
                  flush=True)
            rv = {"config": v, **scored(tr_v, sa_v, s_v, ep_v)}
            r[f"telescope[{name}]"] = {**rv, **against(rv, r["sbi"])}
        out["methods"][method] = r
        print(json.dumps({method: {k: r[k] for k in ("train_time_ratio", "total_time_ratio", "c2st_diff")}}),
              flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
