"""Contrastive neural ratio estimation (NRE-C) on your own prior and simulator, with its diagnostics.

NRE-C (Miller, Weniger & Forré 2022, arXiv 2210.06170) learns the ratio r(x | theta) = p(x | theta) / p(x)
by telling 1 true pair from K contrastive ones; gamma weighs the independent class (gamma = inf is NRE-B).
Without a reference posterior, the mutual-information bound and log Z(x) ~ 0 check the ratio.

    python examples/gaussian-nre_c.py           # a minute on 2 CPU cores
    python examples/gaussian-nre_c.py --tiny    # a few seconds (what the tests run)
"""

import os
import sys

import torch

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_POST = (500, 3, 200) if TINY else (10_000, 200, 2000)

# any torch Distribution with event shape (d,) is a prior; any callable theta (n, d) -> x (n, d_x) a simulator
prior = ts.BoxUniform(low=[-2.0, -2.0], high=[2.0, 2.0])


def simulator(theta):
    return theta + 0.3 * torch.randn_like(theta)


theta, x = ts.simulate(simulator, prior, N_SIM, seed=0, progress_bar=False)
nre = ts.NRE(prior, gamma=1.0, K=9).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)

x_o = torch.tensor([0.5, -1.0])
log_r = nre.log_ratio(torch.zeros(3, 2), x_o)              # (3,): log r(x_o | theta)
samples = nre.sample(x_o, N_POST, seed=0)                  # rejection from the prior, or MCMC when it is slow
print("posterior mean", samples.mean(0).tolist(), "(the truth is near x_o)")

# diagnostics on held-out pairs (ts.diagnostics): larger MI bounds are better; log Z(x) = 0 for a normalised ratio
theta_test, x_test = ts.simulate(simulator, prior, 200, seed=1, progress_bar=False)
print("mutual information bounds", ts.diagnostics.mutual_information(nre, theta_test, x_test))
log_z = ts.diagnostics.log_normalizer(nre, x_test[:20], n=2000)
print(f"log Z(x): mean {float(log_z.mean()):+.3f}, sd {float(log_z.std()):.3f}")
