"""NPE and NLE against analytic posteriors, and their handling of bad input."""


import pytest
import torch

import telescope as ts
from telescope import metrics


def _linear_problem(n=4000, seed=0):
    prior = ts.Gaussian(torch.zeros(2), 0.5 * torch.ones(2))
    sim = ts.Simulator(lambda th, u: th + 0.5 * u, noise=lambda k, g: torch.randn(k, 2, generator=g), name="lin2")
    theta, x = ts.simulate(sim, prior, n, seed=seed, progress_bar=False)
    return prior, theta, x


def _analytic(x_o):  # prior var 0.5, noise var 0.25 -> posterior var 1/(2+4)
    var = 1.0 / (1 / 0.5 + 1 / 0.25)
    return var * x_o / 0.25, var


@pytest.fixture(scope="module")
def npe():
    prior, theta, x = _linear_problem()
    return ts.NPE(prior, transforms=3, hidden=(32, 32)).fit(theta, x, max_epochs=60, progress_bar=False)


def test_npe_matches_analytic_gaussian_posterior(npe):
    x_o = torch.tensor([0.4, -0.6])
    s = npe.sample(x_o, 4000, seed=0)
    mean, var = _analytic(x_o)
    assert torch.allclose(s.mean(0), mean, atol=0.05)
    assert torch.allclose(s.var(0), torch.full((2,), var), rtol=0.2)
    # log_prob is a normalised density: compare with the analytic one at the samples
    exact = torch.distributions.MultivariateNormal(mean, var * torch.eye(2)).log_prob(s[:500])
    assert (npe.log_prob(s[:500], x_o) - exact).abs().mean() < 0.3


def test_npe_batched_sampling_and_coverage(npe):
    prior, theta, x = _linear_problem(200, seed=7)
    s = npe.sample_batched(x[:5], 300, seed=1)
    assert s.shape == (300, 5, 2)
    lp = npe.log_prob_batched(s, x[:5])
    assert lp.shape == (300, 5) and torch.isfinite(lp).all()
    alphas, cov = metrics.coverage(npe, theta, x, n_samples=300)
    assert (cov - alphas).abs().max() < 0.15  # calibrated within the noise of 200 pairs


def test_npe_rejects_outside_a_bounded_prior_and_reports_acceptance():
    prior = ts.BoxUniform([0.0, 0.0], [1.0, 1.0])
    sim = ts.Simulator(lambda th, u: th + 0.3 * u, noise=lambda k, g: torch.randn(k, 2, generator=g), name="box")
    theta, x = ts.simulate(sim, prior, 2000, seed=0, progress_bar=False)
    est = ts.NPE(prior, transforms=2, hidden=(32, 32)).fit(theta, x, max_epochs=20, progress_bar=False)
    s = est.sample(torch.tensor([0.0, 0.0]), 1000, seed=0)  # posterior piles up at the corner
    assert ((s >= 0) & (s <= 1)).all()
    assert 0.0 < est.acceptance_rate < 1.0
    with pytest.raises(RuntimeError, match="max_time"):
        est.sample(torch.tensor([40.0, 40.0]), 10**7, seed=0, max_time=0.5)


def test_npe_rejection_in_many_small_rounds_gives_the_same_posterior(monkeypatch):
    """Rounds of at most ``_ROUND`` flow draws bound memory; many small rounds must fill every slot with
    in-support draws of the same truncated distribution as one large round."""
    import telescope.estimators.npe as npe_mod

    prior = ts.BoxUniform([0.0, 0.0], [1.0, 1.0])
    sim = ts.Simulator(lambda th, u: th + 0.3 * u, noise=lambda k, g: torch.randn(k, 2, generator=g), name="box")
    theta, x = ts.simulate(sim, prior, 2000, seed=0, progress_bar=False)
    est = ts.NPE(prior, transforms=2, hidden=(32, 32)).fit(theta, x, max_epochs=20, progress_bar=False)
    x_o = torch.tensor([[0.0, 0.0], [0.5, 0.9]])
    big = est.sample_batched(x_o, 4000, seed=0)
    monkeypatch.setattr(npe_mod, "_ROUND", 256)
    small = est.sample_batched(x_o, 4000, seed=1)
    assert small.shape == (4000, 2, 2) and ((small >= 0) & (small <= 1)).all()
    assert (small.mean(0) - big.mean(0)).abs().max() < 0.03  # sd of a mean of 4000 draws <= 0.005


def test_nle_matches_analytic_posterior_and_tall_data():
    prior, theta, x = _linear_problem()
    # an affine (MAF) flow represents this Gaussian likelihood exactly, so the tolerances below test the
    # MCMC and the tall-data sum rather than the flow's capacity (ten observations multiply any error in
    # the learned likelihood's width by ten in the posterior precision)
    est = ts.NLE(prior, flow="maf", transforms=2, hidden=(32, 32)).fit(theta, x, max_epochs=60, progress_bar=False)
    x_o = torch.tensor([0.4, -0.6])
    s = est.sample(x_o, 2000, seed=0)
    mean, var = _analytic(x_o)
    assert torch.allclose(s.mean(0), mean, atol=0.07)
    assert torch.allclose(s.var(0), torch.full((2,), var), rtol=0.25)
    # tall data: 10 iid observations -> posterior precision 1/0.5 + 10/0.25
    x_set = torch.tensor([0.3, -0.2]) + 0.5 * torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    s = est.sample(x_set, 2000, seed=1)
    var_t = 1.0 / (2.0 + 40.0)
    mean_t = var_t * x_set.sum(0) / 0.25
    assert torch.allclose(s.mean(0), mean_t, atol=0.04)
    assert torch.allclose(s.var(0), torch.full((2,), var_t), rtol=0.3)
    b = est.sample_batched(x[:3], 100, seed=0)
    assert b.shape == (100, 3, 2)


def test_nle_finds_both_modes_of_a_bimodal_posterior():
    # x = |theta| + noise: the posterior given x = 1 has modes at +1 and -1 of equal mass
    prior = ts.BoxUniform([-2.0], [2.0])
    sim = ts.Simulator(lambda th, u: th.abs() + 0.1 * u, noise=lambda k, g: torch.randn(k, 1, generator=g), name="abs")
    theta, x = ts.simulate(sim, prior, 3000, seed=0, progress_bar=False)
    est = ts.NLE(prior, transforms=2, hidden=(32, 32)).fit(theta, x, max_epochs=40, progress_bar=False)
    s = est.sample(torch.tensor([1.0]), 2000, seed=0)
    frac = (s > 0).float().mean().item()
    assert 0.35 < frac < 0.65
    assert (s.abs() - 1.0).abs().mean() < 0.15


def test_nan_simulations_dropped_with_a_count(npe):
    prior, theta, x = _linear_problem(300)
    x[:7] = float("nan")
    with pytest.warns(UserWarning, match="dropping 7 of 300"):
        ts.NPE(prior, transforms=1, hidden=(8,)).fit(theta, x, max_epochs=1, progress_bar=False)


def test_bad_input_errors_name_the_argument(npe):
    prior, theta, x = _linear_problem(50)
    est = ts.NPE(prior)
    with pytest.raises(RuntimeError, match="fit"):
        est.sample(x[0], 10)
    with pytest.raises(ValueError, match="theta must have shape"):
        est.fit(theta[:, :1], x)
    with pytest.raises(ValueError, match="same number of rows"):
        est.fit(theta, x[:10])
    with pytest.raises(ValueError, match="x_o must have shape"):
        npe.sample(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="n must be"):
        npe.sample(torch.zeros(2), 0)
    with pytest.raises(ValueError, match="NaN"):
        npe.sample(torch.tensor([float("nan"), 0.0]), 10)
    box = ts.BoxUniform([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="outside the prior support"):
        ts.NPE(box).fit(torch.full((10, 2), 2.0), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="flow must be one of"):
        ts.NPE(prior, flow="glow").fit(theta, x, max_epochs=1, progress_bar=False)


def test_save_and_load_roundtrip(npe, tmp_path):
    x_o = torch.tensor([0.1, 0.2])
    theta = torch.randn(20, 2)
    npe.save(tmp_path / "est")
    prior = ts.Gaussian(torch.zeros(2), 0.5 * torch.ones(2))
    loaded = ts.load(tmp_path / "est", prior)
    assert isinstance(loaded, ts.NPE)
    assert torch.allclose(loaded.log_prob(theta, x_o), npe.log_prob(theta, x_o), atol=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        ts.load(tmp_path / "est", ts.Gaussian(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="not a NLE"):
        ts.NLE.load(tmp_path / "est", prior)
    with pytest.raises(FileNotFoundError):
        ts.load(tmp_path / "missing", prior)
