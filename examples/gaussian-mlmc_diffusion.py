"""Multilevel Monte Carlo for diffusion samplers: E f(X) at a fraction of the network evaluations.

Level l runs the reverse diffusion with T0 * M**l steps; coarse and fine paths share their Gaussian
increments (`ts.mlmc.CoupledDiffusion`, Haji-Ali et al. 2025, arXiv 2409.15511), so the corrections
E[f(X_l) - f(X_{l-1})] have small variance and Giles' adaptive driver (`ts.mlmc.mlmc`) puts most samples
on the cheap levels.  Any noise-prediction network eps(x_t, t, y) works (e.g. an NPSE's); here the data
are N(0, s^2 I), whose exact eps is known, so the answer E[x^2] = s^2 is too.

    python examples/gaussian-mlmc_diffusion.py          # about a minute on 2 CPU cores
    python examples/gaussian-mlmc_diffusion.py --tiny   # a few seconds (what the tests run)
"""

import os
import sys

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
EPS, N_TEST, L_TEST = (0.05, 200, 3) if TINY else (0.005, 2000, 6)

S = 0.5                                                  # data: x0 ~ N(0, S^2 I) in 4 dimensions
schedule = ts.diffusion.VPSchedule()


def eps(x_t, t, y):
    """E[noise | x_t] for Gaussian data: x_t = sqrt(a) x0 + sqrt(1 - a) noise."""
    a = schedule.alpha_bar(t).reshape(-1, *([1] * (x_t.dim() - 1)))
    return (1 - a).sqrt() * x_t / (a * S**2 + 1 - a)


levels = ts.mlmc.CoupledDiffusion(eps, shape=(4,), schedule=schedule, sampler="ddpm", T0=8, M=2, seed=0)

# convergence test: how fast the corrections' means and variances fall with the level
conv = ts.mlmc.convergence_test(levels, n=N_TEST, L=L_TEST)
print("fitted rates: alpha (bias)", round(conv["alpha"], 2), "beta (variance)", round(conv["beta"], 2))

result = ts.mlmc.mlmc(levels, EPS, M=2)                  # adaptive: levels and samples chosen for rmse EPS
print("estimate of E[x^2]:", result.estimate.round(4).tolist(), "exact:", S**2)
print("levels", result.levels, "samples", result.N)
print(f"cost {result.cost:.0f} network evaluations; plain Monte Carlo would need {result.std_cost:.0f}")
