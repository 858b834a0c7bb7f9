"""Memory and time of training from a simulation store (issue 20, case 11); prints JSON.

Target: training NPE from a store of 10^6 simulations with ``d_x = 100`` peaks at most 1.5 GB of
resident memory above the process's baseline, with an epoch time within 1.5x of training on the
same data in memory.

    python benchmarks/store_training_memory.py [--n 1000000] [--dx 100] [--store /tmp/telescope_mem]

Three ways are compared: ``memory`` (``ts.simulate`` then ``fit``), ``store`` (``load_simulations``
then ``fit``) and ``fit_store`` (``est.fit_store(store)``: memory-mapped export, minibatches read
from the page cache; the peak includes the mapped pages the process touched).

Each measurement runs in a fresh Python process (``ru_maxrss`` is a process-wide peak): the
baseline is the resident size after importing telescope and torch; ``load`` is
:func:`telescope.load_simulations` from the store; ``fit`` one epoch of NPE (batch 2048, one
transform) on what was loaded, or on the same simulations made in memory by
:func:`telescope.simulate` without a store.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, os, resource, sys, time, warnings
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import telescope as ts

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

mode, path, n, dx = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prior = ts.BoxUniform([-1.0] * 5, [1.0] * 5)

def sim(theta):
    return theta.repeat(1, dx // 5) + 0.1 * torch.randn(theta.shape[0], dx)

base = rss()
t0 = time.perf_counter()
if mode == "store":
    theta, x = ts.load_simulations(path)
elif mode == "fit_store":
    from telescope.simulation.store import export_arrays
    theta, x, _ = export_arrays(path)  # exported once next to the store (or reused), memory-mapped
else:
    theta, x = ts.simulate(sim, prior, n, seed=0, batch_size=10_000, progress_bar=False)
t_data = time.perf_counter() - t0
p_data = peak() - base
t0 = time.perf_counter()
est = ts.NPE(prior, transforms=1, hidden=(32,))
if mode == "fit_store":
    est.fit_store(path, max_epochs=1, batch_size=2048, progress_bar=False)
else:
    est.fit(theta, x, max_epochs=1, batch_size=2048, progress_bar=False)
t_fit = time.perf_counter() - t0
status = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("RssAnon", "RssFile")))
anon, filemb = (round(int(status[k].split()[0]) / 1024) for k in ("RssAnon", "RssFile"))
print(json.dumps({"mode": mode, "rss_anon_mb_at_end": anon, "rss_file_mb_at_end": filemb, "n": int(theta.shape[0]), "d_x": int(x.shape[1]), "baseline_mb": round(base),
                  "peak_above_baseline_after_data_mb": round(p_data),
                  "peak_above_baseline_mb": round(peak() - base), "data_seconds": round(t_data, 2),
                  "epoch_seconds": round(t_fit, 2)}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dx", type=int, default=100)
    ap.add_argument("--store", default="/tmp/telescope_store_training_memory")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    make = (f"import torch, telescope as ts\n"
            f"dx = {args.dx}\n"
            f"def sim(theta):\n    return theta.repeat(1, dx // 5) + 0.1 * torch.randn(theta.shape[0], dx)\n"
            f"ts.simulate(sim, ts.BoxUniform([-1.0] * 5, [1.0] * 5), {args.n}, seed=0, batch_size=10_000, "
            f"store={args.store!r}, progress_bar=False)\n")
    subprocess.run([sys.executable, "-c", make], check=True, env=env)  # resumes (no-op) if already complete
    rows = []
    for mode in ("memory", "store", "fit_store"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, args.store, str(args.n), str(args.dx)],
                             check=True, env=env, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    mem, st, fs = rows
    print(json.dumps({"runs": rows,
                      "load_then_fit_peak_above_baseline_gb": round(st["peak_above_baseline_mb"] / 1024, 3),
                      "fit_store_peak_above_baseline_gb": round(fs["peak_above_baseline_mb"] / 1024, 3),
                      "epoch_time_ratio_load_then_fit_over_memory": round(st["epoch_seconds"] / mem["epoch_seconds"], 3),
                      "epoch_time_ratio_fit_store_over_memory": round(fs["epoch_seconds"] / mem["epoch_seconds"], 3),
                      "targets": {"peak_gb_max": 1.5, "epoch_ratio_max": 1.5}}, indent=2))


if __name__ == "__main__":
    main()
