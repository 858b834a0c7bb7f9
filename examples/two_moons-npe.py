"""Neural posterior estimation (NPE) on the two-moons benchmark task.

Simulate, train a normalising flow on (theta, x), sample the posterior of one observation, score it
against the task's reference posterior with C2ST (0.5 = indistinguishable), save and reload.

    python examples/two_moons-npe.py            # about a minute on 2 CPU cores
    python examples/two_moons-npe.py --tiny     # a few seconds (what the tests run)
"""

import os
import sys
import tempfile

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_POST = (500, 3, 200) if TINY else (10_000, 200, 1000)

task = ts.tasks.get("two_moons")
theta, x = ts.simulate(task.simulator, task.prior, N_SIM, seed=0, progress_bar=False)

npe = ts.NPE(task.prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)   # fit returns self
x_o = task.observation(1)                          # (d_x,): one observation
samples = npe.sample(x_o, N_POST, seed=0)          # (N_POST, 2), inside the prior's support
log_q = npe.log_prob(samples, x_o)                 # (N_POST,): a normalised density
print("posterior mean", samples.mean(0).tolist(), "mean log q", float(log_q.mean()))

c2st = ts.metrics.c2st(samples, task.reference_samples(1, n=N_POST))
print(f"C2ST against the reference posterior: {c2st:.3f}")

with tempfile.TemporaryDirectory() as folder:       # a JSON config + a state dict, no pickles
    npe.save(folder)
    again = ts.load(folder, task.prior)
    assert (again.sample(x_o, 10, seed=1) == npe.sample(x_o, 10, seed=1)).all()
