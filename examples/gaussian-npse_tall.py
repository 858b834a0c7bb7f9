"""Score-based posteriors (NPSE) and tall data: one network, any number of iid observations.

NPSE learns the score of the diffused posterior from single (theta, x) pairs; `sample(x_set, n, method=...)`
composes it over a set of observations of the same theta (Linhart et al. 2024, arXiv 2404.07593):
"gauss" (the default for tall data, fast), "jac" (more accurate with many steps) or "fnpse" (Langevin
baseline).  Here the exact tall posterior is Gaussian, so the error is measurable.

    python examples/gaussian-npse_tall.py           # a couple of minutes on 2 CPU cores
    python examples/gaussian-npse_tall.py --tiny    # a few seconds (what the tests run)
"""

import os
import sys

import torch

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_POST, STEPS = (500, 2, 100, 10) if TINY else (10_000, 300, 1000, 50)

prior = ts.Gaussian(torch.zeros(2), torch.eye(2))          # N(0, I)
SIGMA = 0.5


def simulator(theta):
    return theta + SIGMA * torch.randn_like(theta)         # x | theta ~ N(theta, 0.25 I)


theta, x = ts.simulate(simulator, prior, N_SIM, seed=0, progress_bar=False)
npse = ts.NPSE(prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)

torch.manual_seed(1)
theta_star = torch.tensor([0.7, -0.4])
x_set = simulator(theta_star.expand(8, 2))                 # n = 8 observations, (8, 2)
one = npse.sample(x_set[0], N_POST, steps=STEPS, seed=0)   # the posterior of one observation
tall = npse.sample(x_set, N_POST, method="gauss", steps=STEPS, seed=0)

# exact tall posterior: N(sum x / (n + sigma^2), sigma^2 / (n + sigma^2) I)
n = x_set.shape[0]
mean = x_set.sum(0) / (n + SIGMA**2)
sd = (SIGMA**2 / (n + SIGMA**2)) ** 0.5
print("one observation: sd", one.std(0).tolist())
print("8 observations:  mean", tall.mean(0).tolist(), "exact", mean.tolist())
print("                 sd  ", tall.std(0).tolist(), "exact", [sd, sd])
exact = mean + sd * torch.randn(N_POST, 2)
print(f"sliced Wasserstein to exact samples: {ts.metrics.sliced_wasserstein(tall, exact):.3f}")
