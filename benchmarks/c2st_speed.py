"""C2ST backends: telescope's batched torch classifier against scikit-learn's MLPClassifier.

Both backends of :func:`telescope.metrics.c2st` follow the SBI benchmark's recipe (two ReLU layers of
``10 d`` units, Adam, L2 1e-4, minibatches of 200, stop after 10 epochs without improvement) on the same
five folds; ``"torch"`` trains the five fold classifiers together with hand-written gradients, ``"sklearn"``
fits one ``MLPClassifier`` per fold as the benchmark's code does.  For each dimension and sample size this
script scores the same pairs of samples with both, in one process, and prints one JSON line per case with
the two accuracies, their difference and the wall-time ratio, then a summary line.

The pairs are ``p = N(0, I)`` against ``q = N(shift, scale^2 I)`` (``shift = 0.1``, ``scale = 1.1``: a
posterior that is slightly off, the regime the benchmark tables live in) and ``q = N(0, I)`` (the null,
accuracy 0.5).

Usage::

    python benchmarks/c2st_speed.py                       # d in {2, 10}, n in {2000, 10000}, one thread
    python benchmarks/c2st_speed.py --dims 5 --samples 4000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from telescope.metrics import c2st


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 10])
    p.add_argument("--samples", type=int, nargs="+", default=[2000, 10000], help="samples per side")
    p.add_argument("--threads", type=int, default=1, help="torch threads; sklearn folds run in this many processes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for d in args.dims:
        for n in args.samples:
            g = torch.Generator().manual_seed(args.seed + 1000 * d + n)
            a = torch.randn(n, d, generator=g)
            for case, b in (("shifted", torch.randn(n, d, generator=g) * 1.1 + 0.1),
                            ("null", torch.randn(n, d, generator=g))):
                row = {"d": d, "n": n, "case": case}
                for backend in ("torch", "sklearn"):
                    t0 = time.perf_counter()
                    row[backend] = round(c2st(a, b, seed=args.seed, backend=backend, n_jobs=args.threads), 4)
                    row[f"{backend}_s"] = round(time.perf_counter() - t0, 2)
                row["difference"] = round(row["torch"] - row["sklearn"], 4)
                row["time_ratio_torch_vs_sklearn"] = round(row["torch_s"] / row["sklearn_s"], 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    total = {b: sum(r[f"{b}_s"] for r in rows) for b in ("torch", "sklearn")}
    print(json.dumps({"summary": {"threads": args.threads, "torch_s": round(total["torch"], 1),
                                  "sklearn_s": round(total["sklearn"], 1),
                                  "time_ratio_torch_vs_sklearn": round(total["torch"] / total["sklearn"], 3),
                                  "max_abs_difference": max(abs(r["difference"]) for r in rows)}}), flush=True)


if __name__ == "__main__":
    main()
