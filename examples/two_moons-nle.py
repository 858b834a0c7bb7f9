"""Neural likelihood estimation (NLE), and a posterior given several iid observations.

NLE learns the likelihood q(x | theta) and samples the posterior by MCMC, so a set of independent
observations of the same theta ("tall data") is one more product of likelihoods.

    python examples/two_moons-nle.py            # a minute or two on 2 CPU cores
    python examples/two_moons-nle.py --tiny     # a few seconds (what the tests run)
"""

import os
import sys

import torch

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_POST = (500, 3, 100) if TINY else (10_000, 200, 1000)

task = ts.tasks.get("two_moons")
theta, x = ts.simulate(task.simulator, task.prior, N_SIM, seed=0, progress_bar=False)
nle = ts.NLE(task.prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)

x_o = task.observation(1)
samples = nle.sample(x_o, N_POST, seed=0)           # MCMC on q(x_o | theta) p(theta)
print("one observation: posterior mean", samples.mean(0).tolist())

# tall data: 5 observations simulated at the same theta*, shape (5, d_x)
torch.manual_seed(0)                                 # the task's simulator draws from torch's generator
theta_star = task.true_parameters(1)                 # (2,)
x_set = task.simulator(theta_star.expand(5, -1))     # (5, 2)
tall = nle.sample(x_set, N_POST, seed=0)
print("five observations: posterior sd", tall.std(0).tolist(), "(narrower than", samples.std(0).tolist(), ")")
log_post = nle.log_prob(theta_star[None], x_set)    # unnormalised log p(theta) + sum_j log q(x_j | theta): (1,)
print("theta* =", theta_star.tolist(), "unnormalised log posterior there", float(log_post))
