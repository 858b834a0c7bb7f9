"""Is the posterior calibrated?  Expected coverage, SBC, TARP, a predictive check, and the figures.

All checks run on fresh (theta*, x) pairs from the prior and the simulator, so they need no reference
posterior: expected HPD coverage (on the diagonal = calibrated, below = overconfident), simulation-based
calibration ranks (uniform = calibrated) with their ECDF and simultaneous bands, TARP (Lemos et al. 2023)
and a posterior predictive check.  Figures are written to --out (default runs/examples/diagnostics).

    python examples/two_moons-diagnostics.py            # about a minute on 2 CPU cores
    python examples/two_moons-diagnostics.py --tiny     # a few seconds (what the tests run)
"""

import argparse
import os
from pathlib import Path

import telescope as ts

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true")
parser.add_argument("--out", default="runs/examples/diagnostics")
args = parser.parse_args()
TINY = args.tiny or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_TEST, N_POST = (500, 3, 30, 100) if TINY else (10_000, 200, 300, 1000)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

task = ts.tasks.get("two_moons")
theta, x = ts.simulate(task.simulator, task.prior, N_SIM, seed=0, progress_bar=False)
npe = ts.NPE(task.prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)
theta_test, x_test = ts.simulate(task.simulator, task.prior, N_TEST, seed=1, progress_bar=False)

alphas, cov = ts.metrics.coverage(npe, theta_test, x_test, n_samples=N_POST)
print(f"largest coverage gap: {float((cov - alphas).abs().max()):.3f} (negative = overconfident)")
ts.plots.coverage_plot(alphas, cov, label="NPE", n_pairs=N_TEST, path=out / "coverage.png")

ranks = ts.metrics.sbc(npe, theta_test, x_test, n_samples=N_POST)           # (N_TEST, 2)
print("SBC uniformity p-values:", ts.metrics.sbc_ecdf_pvalues(ranks, N_POST).tolist())
ts.plots.sbc_ecdf_plot(ranks, N_POST, out / "sbc_ecdf.png", histogram=True)

alphas_t, ecp = ts.metrics.tarp_coverage(npe, theta_test, x_test, n_samples=N_POST)
ts.plots.tarp_plot(alphas_t, ecp, label="NPE", n_pairs=N_TEST, path=out / "tarp.png")

x_o = task.observation(1)
samples = npe.sample(x_o, N_POST, seed=0)
check = ts.metrics.posterior_predictive_check(task.simulator, samples, x_o)
ts.plots.ppc_plot(check, out / "ppc.png")
ts.plots.corner(samples, reference=task.reference_samples(1), truth=task.true_parameters(1),
                labels=["theta_1", "theta_2"], path=out / "corner.png")
ts.plots.training_curves(npe.history, out / "training.png")
print("figures:", sorted(p.name for p in out.glob("*.png")), "in", out)
