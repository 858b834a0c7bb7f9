"""Validation curve per epoch and C2ST at epoch checkpoints, for one method, task and training config (issue 23, item 3).

    OMP_NUM_THREADS=1 python benchmarks/stop_curve.py --method nre --task two_moons --seed 0 --obs 1 2 3 \\
        --kw '{"lr": 3e-3, "schedule": "plateau", "tol": 1e-3, "patience": 12}' --ckpt 60 100

One JSON row per run is appended to --out (C2ST of the returned network on each observation, 1000 samples,
and of the weights validated at each --ckpt epoch; the validation loss of every epoch).
"""
import argparse
import copy
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

torch.set_num_threads(1)
import telescope as ts
from telescope import metrics
from telescope.training import loop as L

p = argparse.ArgumentParser()
p.add_argument("--method", default="npse")
p.add_argument("--task", default="two_moons")
p.add_argument("--n", type=int, default=10_000)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--data-seed", type=int, default=0)
p.add_argument("--ckpt", type=int, nargs="*", default=[])
p.add_argument("--obs", type=int, nargs="+", default=[1])
p.add_argument("--samples", type=int, default=1000)
p.add_argument("--kw", default="{}")
p.add_argument("--tag", default="")
p.add_argument("--out", default="runs/stop_curves.jsonl")
a = p.parse_args()
kw = json.loads(a.kw)

snaps = {}
orig = L._Loop.validate


def validate(self, net, fn, epoch):
    if epoch + 1 in a.ckpt:
        snaps[epoch + 1] = copy.deepcopy(net.state_dict())
    return orig(self, net, fn, epoch)


L._Loop.validate = validate
task = ts.tasks.get(a.task)
theta, x = ts.simulate(task.simulator, task.prior, a.n, seed=a.data_seed, progress_bar=False)
cls = {"npe": ts.NPE, "nle": ts.NLE, "nre": ts.NRE, "npse": ts.NPSE}[a.method]
t0 = time.perf_counter()
est = cls(task.prior, seed=a.seed).fit(theta, x, progress_bar=False, **kw)
train_s = time.perf_counter() - t0
h = est.history
refs = {i: task.reference_samples(i, a.samples) for i in a.obs}


def c2st_now():
    t = time.perf_counter()
    out = [float(metrics.c2st(est.sample(task.observation(i), a.samples, seed=i).float().cpu(), refs[i].float(), seed=0))
           for i in a.obs]
    return out, time.perf_counter() - t


final, samp_s = c2st_now()
ck = {}
best_state = copy.deepcopy(est.net.state_dict())
for e in sorted(snaps):
    est.net.load_state_dict(snaps[e])
    ck[e] = c2st_now()[0]
est.net.load_state_dict(best_state)
row = {"tag": a.tag, "method": a.method, "task": a.task, "n": a.n, "seed": a.seed, "kw": kw, "train_s": train_s,
       "sample_s": samp_s, "loop_s": h.get("seconds"), "epochs": h["epochs"], "best_epoch": h["best_epoch"], "c2st": final,
       "c2st_mean": sum(final) / len(final), "ckpt_c2st": ck, "val_loss": h["val_loss"], "lr": h["lr"][-1:]}
print(json.dumps({k: v for k, v in row.items() if k != "val_loss"}), flush=True)
with open(a.out, "a") as f:
    f.write(json.dumps(row) + "\n")
