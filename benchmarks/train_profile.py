"""Where a training step's time goes, and how far telescope's loop is from a floor loop (issue 23, item 1).

For each estimator (NPE, NLE, NRE-C, NPSE) on two_moons simulations, at its training defaults but a fixed
number of epochs (no early stop), this script times:

* ``telescope``: :func:`telescope.training.train` on the estimator's network and loss, exactly as ``fit``
  runs it (split, shuffling, finiteness checks, clipping, EMA, validation every epoch);
  ``step_ms`` is its wall time divided by the number of optimiser steps (validation amortised in it);
* ``floor``: a minimal hand-written loop on a copy of the SAME initial network and the SAME training
  tensors: plain Adam, ``for`` over pre-shuffled index batches, ``loss.backward(); opt.step()``, no
  validation, no clipping, no EMA, no checks;
* ``phases``: one extra instrumented telescope run, its time split into the loss forward, backward,
  gradient clipping, optimiser step, EMA update, validation, and the rest (batching and loop overhead).
  Batching alone (index a permutation, gather the rows) is timed separately on the same tensors.

Each side runs ``--repeats`` times, alternated in one process; the fastest of each is reported (the
machine is noisy).  ``ratio`` is telescope's step over the floor's; the issue's target is <= 3 for NPE
and NLE.  Prints JSON (and writes it to ``--out`` when given).

    python benchmarks/train_profile.py                       # all four, 10^4 simulations, 1 thread
    python benchmarks/train_profile.py --methods npe nle --epochs 5 --repeats 3
    python benchmarks/train_profile.py --methods npe --torch-profiler   # + top ops of torch.profiler
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from contextlib import contextmanager

import torch
import torch.optim.optimizer as _opt_mod

import telescope as ts
from telescope.simulation.simulators import seeded
from telescope.training import loop as loop_mod

METHODS = {"npe": lambda p: ts.NPE(p), "nle": lambda p: ts.NLE(p), "nre": lambda p: ts.NRE(p),
           "npse": lambda p: ts.NPSE(p)}


def setup(method: str, theta, x, seed: int = 0):
    est = METHODS[method](ts.tasks.get("two_moons").prior)
    theta_c, x_c = est._prepare(theta, x, None)
    est.x_shape = tuple(x_c.shape[1:])
    with seeded(seed):
        net0 = est._build(theta_c, x_c)
    return est, net0, est._data(theta_c, x_c)


def run_telescope(est, net0, data, epochs: int) -> dict:
    net = copy.deepcopy(net0)
    kw = {**est.train_defaults, "max_epochs": epochs, "patience": 10**9, "min_epochs": epochs,
          "progress_bar": False, "seed": 0}
    h = loop_mod.train(net, est._loss, data, **kw)
    n_tr = next(iter(data.values())).shape[0] - int(round(kw.get("val_fraction", 0.1) * next(iter(data.values())).shape[0]))
    bs = kw.get("batch_size") or min(512, max(50, n_tr // 20))
    steps = math.ceil(n_tr / bs) * h["epochs"]
    return {"seconds": h["seconds"], "steps": steps, "batch_size": bs, "n_train": n_tr,
            "step_ms": 1e3 * h["seconds"] / steps}


def run_floor(est, net0, data, epochs: int, batch_size: int, n_train: int) -> dict:
    """Plain Adam over pre-shuffled index batches of the same tensors (the first ``n_train`` rows)."""
    net = copy.deepcopy(net0)
    net.train()
    tr = {k: v[:n_train] for k, v in data.items()}
    opt = torch.optim.Adam(net.parameters(), lr=est.train_defaults.get("lr", 1e-3))
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(n_train, generator=g).split(batch_size) for _ in range(epochs)]
    steps = 0
    with seeded(0):
        t0 = time.perf_counter()
        for epoch in range(epochs):
            for idx in perms[epoch]:
                loss = est._loss(net, {k: v[idx] for k, v in tr.items()})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
        dt = time.perf_counter() - t0
    return {"seconds": dt, "steps": steps, "step_ms": 1e3 * dt / steps}


class Phases:
    """Accumulate wall time per phase by wrapping the pieces ``train`` calls (CPU: no sync needed)."""

    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, name, dt):
        self.t[name] = self.t.get(name, 0.0) + dt

    def wrap(self, name, fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(name, time.perf_counter() - t0)
        return wrapped


@contextmanager
def instrumented(ph: Phases):
    """Patch clip, optimiser step, EMA update and validation for one run; restored afterwards."""
    orig_clip = torch.nn.utils.clip_grad_norm_
    orig_val = loop_mod._validate
    orig_ema = torch.optim.swa_utils.AveragedModel.update_parameters
    orig_finite = loop_mod._check_finite
    start = {}

    def pre(opt, a, k):
        start["opt"] = time.perf_counter()

    def post(opt, a, k):
        ph.add("optimizer", time.perf_counter() - start["opt"])

    h1 = _opt_mod.register_optimizer_step_pre_hook(pre)
    h2 = _opt_mod.register_optimizer_step_post_hook(post)
    torch.nn.utils.clip_grad_norm_ = ph.wrap("clip", orig_clip)
    loop_mod._validate = ph.wrap("validation", orig_val)
    loop_mod._check_finite = ph.wrap("finite_check", orig_finite)
    torch.optim.swa_utils.AveragedModel.update_parameters = ph.wrap("ema", orig_ema)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()
        torch.nn.utils.clip_grad_norm_ = orig_clip
        loop_mod._validate = orig_val
        loop_mod._check_finite = orig_finite
        torch.optim.swa_utils.AveragedModel.update_parameters = orig_ema


def run_phases(est, net0, data, epochs: int) -> dict:
    ph = Phases()

    def loss_fn(net, batch):
        if not net.training:  # validation forward passes are counted under validation
            return est._loss(net, batch)
        t0 = time.perf_counter()
        out = est._loss(net, batch)
        ph.add("forward", time.perf_counter() - t0)
        return out

    def backward(terms, params):
        t0 = time.perf_counter()
        sum(terms.values()).backward()
        ph.add("backward", time.perf_counter() - t0)

    net = copy.deepcopy(net0)
    kw = {**est.train_defaults, "max_epochs": epochs, "patience": 10**9, "min_epochs": epochs,
          "progress_bar": False, "seed": 0}
    with instrumented(ph):
        h = loop_mod.train(net, loss_fn, data, backward=backward, **kw)
    total = h["seconds"]
    out = {k: round(1e3 * v, 2) for k, v in sorted(ph.t.items())}
    out["total"] = round(1e3 * total, 2)
    out["rest_loop_and_batching"] = round(1e3 * (total - sum(ph.t.values())), 2)
    out["unit"] = "ms over the whole run"
    return out


def batching_ms(data, epochs, batch_size, n_train) -> float:
    tr = {k: v[:n_train] for k, v in data.items()}
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        p = torch.randperm(n_train, generator=g)
        steps = math.ceil(n_train / batch_size)
        for b in range(steps):
            idx = p[(b * n_train) // steps:((b + 1) * n_train) // steps]
            _ = {k: v[idx] for k, v in tr.items()}
    return 1e3 * (time.perf_counter() - t0)


def top_ops(est, net0, data, epochs: int, k: int = 15) -> list:
    from torch.profiler import ProfilerActivity, profile

    net = copy.deepcopy(net0)
    kw = {**est.train_defaults, "max_epochs": epochs, "patience": 10**9, "min_epochs": epochs,
          "progress_bar": False, "seed": 0}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop_mod.train(net, est._loss, data, **kw)
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:k]
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2)} for e in ev]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=4, help="epochs per timed run (no early stopping)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torch-profiler", action="store_true", help="also list the top ops by self CPU time")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = ts.tasks.get("two_moons")
    theta, x = ts.simulate(task.simulator, task.prior, args.n, seed=0, progress_bar=False)
    res = {"benchmark": "train_profile", "task": "two_moons", "n": args.n, "epochs": args.epochs,
           "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__,
           "telescope": ts.__version__, "methods": {}}
    for m in args.methods:
        est, net0, data = setup(m, theta, x)
        tele, floor = [], []
        run_telescope(est, net0, data, 1)  # warm-up (allocator, lazy imports)
        for _ in range(args.repeats):
            tele.append(run_telescope(est, net0, data, args.epochs))
            t = tele[-1]
            floor.append(run_floor(est, net0, data, args.epochs, t["batch_size"], t["n_train"]))
        bt, bf = min(tele, key=lambda r: r["step_ms"]), min(floor, key=lambda r: r["step_ms"])
        row = {"batch_size": bt["batch_size"], "steps_per_run": bt["steps"],
               "telescope_step_ms": round(bt["step_ms"], 3), "floor_step_ms": round(bf["step_ms"], 3),
               "ratio": round(bt["step_ms"] / bf["step_ms"], 3),
               "all_telescope_step_ms": [round(r["step_ms"], 3) for r in tele],
               "all_floor_step_ms": [round(r["step_ms"], 3) for r in floor]}
        ph = run_phases(est, net0, data, args.epochs)
        ph["batching_alone"] = round(batching_ms(data, args.epochs, bt["batch_size"], bt["n_train"]), 2)
        row["phases_ms"] = ph
        row["phases_per_step_ms"] = {k: round(v / bt["steps"], 3) for k, v in ph.items() if isinstance(v, float)}
        if args.torch_profiler:
            row["top_ops"] = top_ops(est, net0, data, max(1, args.epochs // 2))
        res["methods"][m] = row
        print(json.dumps({m: {k: row[k] for k in ("telescope_step_ms", "floor_step_ms", "ratio")}}), flush=True)
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
