"""Simulation campaigns for expensive simulators: a crash-safe store that resumes, and parallel backends.

Every finished batch is committed to an on-disk store (SQLite), so an interrupted campaign resumes where
it stopped; the data depend only on (seed, n, batch_size), never on the backend: serial, local worker
processes, any executor with submit(fn, *args) (concurrent.futures, loky, MPI, submitit/SLURM) or a Dask
cluster.  Estimators train straight from the store without loading it into memory (`fit_store`).

    python examples/campaign-store_dask.py          # a minute on 2 CPU cores
    python examples/campaign-store_dask.py --tiny   # a few seconds (what the tests run)
"""

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N, BATCH, EPOCHS = (400, 100, 2) if TINY else (20_000, 1000, 100)


def simulator(theta):
    """Stands in for an expensive model: (n, 3) -> (n, 5); defined at module level so workers can import it."""
    time.sleep(0.001 * theta.shape[0])
    return torch.cat([theta, theta.sum(-1, keepdim=True), (theta**2).sum(-1, keepdim=True)], -1) \
        + 0.1 * torch.randn(theta.shape[0], 5)


def main():
    prior = ts.BoxUniform([0.0] * 3, [1.0] * 3)
    with tempfile.TemporaryDirectory() as folder:
        store = os.path.join(folder, "campaign")
        # half the campaign, then "crash"; the same call with a larger n resumes and simulates only the rest
        ts.simulate(simulator, prior, N // 2, seed=0, batch_size=BATCH, store=store, progress_bar=False)
        theta, x = ts.simulate(simulator, prior, N, seed=0, batch_size=BATCH, store=store, workers=2,
                               progress_bar=False)                       # 2 local worker processes
        info = ts.simulation.store_info(store)
        print("stored:", info["levels"][0]["n_stored"], "failed:", info["levels"][0]["n_failed"])

        # the same campaign on any executor gives bitwise the same data
        with ThreadPoolExecutor(2) as pool:
            theta2, x2 = ts.simulate(simulator, prior, N, seed=0, batch_size=BATCH, executor=pool,
                                     progress_bar=False)
        print("executor gives the same data:", torch.equal(x, x2))

        try:                                                             # pip install "telescope-sbi[dask]"
            from dask.distributed import Client, LocalCluster
        except ImportError:
            print("dask not installed: skipping the Dask backend")
        else:
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c, \
                    Client(c) as client:
                theta3, x3 = ts.simulate(simulator, prior, N, seed=0, batch_size=BATCH, client=client,
                                         progress_bar=False)
            print("dask gives the same data:", torch.equal(x, x3))

        theta_s, x_s = ts.load_simulations(store)                        # the store, in memory
        npe = ts.NPE(prior).fit_store(store, max_epochs=EPOCHS, progress_bar=False)  # or memory-mapped batches
        print("trained on", theta_s.shape[0], "stored simulations; best epoch", npe.history["best_epoch"])


if __name__ == "__main__":                                               # worker processes re-import this script
    main()
