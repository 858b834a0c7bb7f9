"""MCMC chains kept with their diagnostics, and ArviZ / NetCDF output (issue 21)."""

import warnings

import numpy as np
import pytest
import torch

import telescope as ts
from telescope.samplers import convergence


@pytest.fixture(scope="module")
def nle_run():
    task = ts.tasks.get("two_moons")
    theta, x = ts.simulate(task.simulator, task.prior, 1000, seed=0, progress_bar=False)
    est = ts.NLE(task.prior).fit(theta, x, max_epochs=3, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 3 epochs: the chains may not pass the checks
        samples, chains = est.sample(task.observation(1), 400, chains=8, warmup=30, return_chains=True, seed=0)
    return task, est, samples, chains


def test_chains_and_diagnostics(nle_run):
    task, est, samples, chains = nle_run
    assert samples.shape == (400, 2) and chains.shape == (8, 50, 2)
    assert torch.equal(est.chains, chains)
    # the pooled samples are the chains' draws, shuffled
    assert torch.equal(torch.sort(samples.reshape(-1)).values, torch.sort(chains.reshape(-1)).values)
    diag = est.mcmc_diagnostics
    assert torch.allclose(diag["rhat"], convergence.rhat(chains)) and diag["ess_bulk"].shape == (2,)
    # the same seed gives the same chains; the sbi form passes return_chains through
    s2, c2 = est.sample((400,), x=task.observation(1), chains=8, warmup=30, return_chains=True, seed=0)
    assert torch.equal(c2, chains) and torch.equal(s2, samples)


def test_failed_check_warns():
    task = ts.tasks.get("two_moons")
    theta, x = ts.simulate(task.simulator, task.prior, 500, seed=1, progress_bar=False)
    est = ts.NRE(task.prior).fit(theta, x, max_epochs=2, progress_bar=False)
    with pytest.warns(RuntimeWarning, match="may not have converged|too short"):
        est.sample(task.observation(1), 40, chains=10, warmup=1, thin=1, return_chains=True)  # 4 draws, no warm-up
    with pytest.raises(ValueError, match="return_chains=True needs method='mcmc'"):
        est.sample(task.observation(1), 40, method="rejection", return_chains=True)


def test_arviz_summary_equals_ours_and_netcdf_round_trip(nle_run, tmp_path):
    az = pytest.importorskip("arviz")
    task, est, _, chains = nle_run
    idata = ts.to_inference_data(chains=chains, x_o=task.observation(1), prior=task.prior, names=["a", "b"])
    assert idata.posterior["theta"].dims == ("chain", "draw", "parameter")
    assert idata.posterior["theta"].shape == (8, 50, 2)
    summ = az.summary(idata, round_to="none")
    ours = convergence.summary(chains)
    np.testing.assert_allclose(summ["r_hat"].to_numpy(), ours["rhat"].numpy(), atol=1e-6)
    np.testing.assert_allclose(summ["ess_bulk"].to_numpy(), ours["ess_bulk"].numpy(), atol=1e-6)
    np.testing.assert_allclose(summ["ess_tail"].to_numpy(), ours["ess_tail"].numpy(), atol=1e-6)
    # NetCDF round trip: draws, observation and prior support survive
    path = tmp_path / "posterior.nc"
    idata2 = ts.to_inference_data(estimator=est.set_default_x(task.observation(1)), save=path, names=["a", "b"])
    back = az.from_netcdf(path)
    np.testing.assert_array_equal(back.posterior["theta"].to_numpy(), chains.double().numpy())
    np.testing.assert_allclose(back.observed_data["x_o"].to_numpy(), task.observation(1).numpy())
    assert list(back.posterior.attrs["support_lower"]) == [-1.0, -1.0]
    assert list(back.posterior.attrs["support_upper"]) == [1.0, 1.0]
    assert list(back.posterior["parameter"].to_numpy()) == ["a", "b"]
    assert idata2.posterior["theta"].shape == (8, 50, 2)


def test_samples_and_bad_input():
    pytest.importorskip("arviz")
    idata = ts.to_inference_data(torch.randn(30, 3))
    assert idata.posterior["theta"].shape == (1, 30, 3)
    with pytest.raises(ValueError, match="exactly one of samples"):
        ts.to_inference_data()
    with pytest.raises(ValueError, match="names must hold 3"):
        ts.to_inference_data(torch.randn(30, 3), names=["a"])
    with pytest.raises(ValueError, match=r"chains must have shape \(chains, draws, d\)"):
        ts.to_inference_data(chains=torch.randn(30, 3))
