"""Multilevel NPE on a fidelity ladder: many cheap simulations, a few expensive ones.

The g-and-k ladder's cheap level replaces the exact quantile function by a truncated series; both
levels read the same noise (seed matching), so a pair (cheap, expensive) is strongly coupled.
`MultilevelNPE(prior).fit(levels)` pre-trains on the cheap simulations, fine-tunes with the multilevel
(telescoping) loss and gradient adjustment of Hikida et al. 2025 (arXiv 2506.06087), compares the
result with networks trained on the expensive simulations alone (the safeguard), and finally stacks
the multilevel and transfer networks into one mixture (ensemble=True).  `fit(ladder, budget=C)`
plans the allocation n_0, n_1 from a pilot run (Theorem 2) and simulates it for you.

    python examples/g_and_k-multilevel_npe.py           # several minutes on 2 CPU cores
    python examples/g_and_k-multilevel_npe.py --tiny    # a few seconds (what the tests run)
"""

import os
import sys
import tempfile
import warnings

import telescope as ts
from telescope.tasks.g_and_k import gk_ladder

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_CHEAP, N_EXPENSIVE, EPOCHS = (300, 40, 2) if TINY else (10_000, 300, 200)
small = {"transforms": 1, "hidden": (16,)} if TINY else {}

task = ts.tasks.get("g_and_k")
prior = task.prior
ladder = gk_ladder(n_draws=10)             # [cheap, exact] g-and-k quantiles of the same 10 uniforms; costs 1, 2
print("levels:", len(ladder), "costs:", ladder.costs)

# seed-matched simulations: level 0 (theta, x_0), level 1 (theta, x_1, x_0 at the same noise)
levels = ts.simulate_levels(ladder, prior, n=[N_CHEAP, N_EXPENSIVE], seed=0, progress_bar=False)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")                        # tiny runs: the safeguard warns, as it should
    ml = ts.MultilevelNPE(prior, **small).fit(levels, max_epochs=EPOCHS, progress_bar=False)
print("safeguard (held-out losses):", sorted(ml.history["multilevel"]["safeguard"]))

x_o = task.observation(1)
samples = ml.sample(x_o, 200, seed=0)                      # used like any NPE
print("posterior mean", samples.mean(0).tolist(), "truth", task.true_parameters(1).tolist())

# or give a budget in the ladder's cost units: a pilot, the allocation, simulation (into a store), training
budget = 2_000 if TINY else 50_000
with tempfile.TemporaryDirectory() as store, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    planned = ts.MultilevelNPE(prior, **small).fit(ladder, budget=budget, seed=0, store=store,
                                                    max_epochs=EPOCHS, progress_bar=False)
plan = planned.allocation                                  # a dict: the pilot, variances, the chosen n_l
print("allocation n_l:", plan["n"], "used:", plan.get("used", "multilevel"))
