"""telescope with sbi and ArviZ: sbi's calls on telescope estimators, sbi posteriors in telescope's
metrics, and telescope samples and MCMC chains as an ArviZ InferenceData (NetCDF).

Neither package is needed by telescope itself: sbi is spoken by duck typing (pip install "telescope-sbi[sbi]"
to run sbi's own code) and ArviZ is imported when used (pip install "telescope-sbi[arviz]").

    python examples/two_moons-interop.py            # a minute or two on 2 CPU cores
    python examples/two_moons-interop.py --tiny     # seconds (what the tests run)
"""

import importlib.util
import os
import sys
import tempfile
import warnings

import telescope as ts

TINY = "--tiny" in sys.argv or os.environ.get("TELESCOPE_EXAMPLE_SCALE") == "tiny"
N_SIM, EPOCHS, N_POST, N_TEST = (500, 2, 100, 10) if TINY else (10_000, 200, 1000, 200)

task = ts.tasks.get("two_moons")
theta, x = ts.simulate(task.simulator, task.prior, N_SIM, seed=0, progress_bar=False)
x_o = task.observation(1)
nle = ts.NLE(task.prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)

# 1. sbi's call forms work on every telescope estimator, next to telescope's own
samples = nle.sample((N_POST,), x=x_o, chains=4)         # sbi: sample(sample_shape, x=...)
same_form = nle.set_default_x(x_o).log_prob(samples[:5])  # sbi: log_prob(theta) at the default x
print("sbi-style samples", tuple(samples.shape), "log probs", tuple(same_form.shape))

# 2. ArviZ: MCMC chains (chains, draws, d) with the observation and the prior's bounds as attributes
draws, chains = nle.sample(x_o, N_POST, chains=4, seed=0, return_chains=True)   # chains: (4, N_POST/4, 2)
if importlib.util.find_spec("arviz") is None:
    print("arviz not installed: skipping InferenceData")
else:
    import arviz as az

    idata = ts.to_inference_data(chains=chains, x_o=x_o, prior=task.prior, names=["theta_1", "theta_2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # tiny runs: too few draws for ArviZ's liking
        print(az.summary(idata, kind="diagnostics"))
    with tempfile.TemporaryDirectory() as folder:
        idata.to_netcdf(os.path.join(folder, "posterior.nc"))

# 3. sbi's own diagnostics on a telescope posterior, and telescope's metrics on an sbi posterior
if importlib.util.find_spec("sbi") is None:
    print("sbi not installed: skipping sbi's run_sbc and sbi's NPE")
else:
    from sbi.diagnostics import run_sbc
    from sbi.inference import NPE as SbiNPE

    npe = ts.NPE(task.prior).fit(theta, x, max_epochs=EPOCHS, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, _ = run_sbc(theta[:N_TEST], x[:N_TEST], npe, num_posterior_samples=N_POST, show_progress_bar=False)
        inference = SbiNPE(prior=task.prior, show_progress_bars=False)
        inference.append_simulations(theta, x).train(max_num_epochs=EPOCHS, show_train_summary=False)
    print("sbi's run_sbc on a telescope NPE: ranks", tuple(ranks.shape))
    posterior = inference.build_posterior()               # an sbi DirectPosterior
    alphas, cov = ts.metrics.coverage(posterior, theta[:N_TEST], x[:N_TEST], n_samples=N_POST)
    print(f"telescope's coverage of sbi's NPE: largest gap {float((cov - alphas).abs().max()):.3f}")
