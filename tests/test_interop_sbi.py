"""sbi in both directions: sbi's calls on telescope estimators, sbi posteriors in telescope's metrics (issue 21)."""

import warnings

import pytest
import torch

import telescope as ts
from telescope.interop.sbi import from_sbi, is_sbi_posterior


@pytest.fixture(scope="module")
def moons():
    task = ts.tasks.get("two_moons")
    theta, x = ts.simulate(task.simulator, task.prior, 1000, seed=0, progress_bar=False)
    return task, theta, x


@pytest.fixture(scope="module")
def npe(moons):
    task, theta, x = moons
    return ts.NPE(task.prior).fit(theta, x, max_epochs=3, progress_bar=False)


def test_both_call_forms(moons, npe):
    task, theta, x = moons
    xo = task.observation(1)
    assert npe.sample(xo, 20, seed=1).shape == (20, 2)                       # telescope's form
    assert torch.equal(npe.sample((20,), x=xo, seed=1), npe.sample(xo, 20, seed=1))  # same draws either way
    assert npe.sample((4, 5), x=xo).shape == (4, 5, 2)
    assert npe.sample(sample_shape=(3,), x=xo).shape == (3, 2)
    assert npe.sample_batched((7,), x[:3]).shape == (7, 3, 2)
    assert npe.sample_batched(x[:3], 7).shape == (7, 3, 2)
    th = torch.zeros(6, 2)
    assert torch.allclose(npe.log_prob(th, x=xo), npe.log_prob(th, xo))
    assert npe.log_prob(torch.zeros(2, 3, 2), x=xo).shape == (2, 3)          # sbi's (*batch, d)
    # the default observation
    with pytest.raises(ValueError, match="set_default_x"):
        ts.NPE(task.prior).fit(theta[:50], x[:50], max_epochs=1, progress_bar=False).sample((5,))
    est = ts.NPE(task.prior).fit(theta[:200], x[:200], max_epochs=1, progress_bar=False)
    assert est.set_default_x(xo) is est and torch.equal(est.default_x, xo)
    assert est.sample((5,)).shape == (5, 2) and est.sample().shape == (2,)
    assert torch.allclose(est.log_prob(th), est.log_prob(th, xo))
    # sbi keywords: translated, ignored or refused with a clear error
    est.sample((5,), show_progress_bars=False, max_sampling_batch_size=10, max_sampling_time=30.0)
    est.log_prob(th, norm_posterior=False, track_gradients=False)
    with pytest.raises(ValueError, match="reject_outside_prior=False"):
        est.sample((5,), reject_outside_prior=False)
    with pytest.raises(ValueError, match="track_gradients"):
        est.log_prob(th, track_gradients=True)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        est.set_default_x(torch.zeros(3))
    with pytest.raises(TypeError, match="sample_shape"):
        est.sample(sample_shape=5)


def test_map_is_a_mode(moons, npe):
    task, _, _ = moons
    xo = task.observation(1)
    theta_map = npe.map(x=xo, num_iter=200, num_init_samples=500)
    assert theta_map.shape == (2,)
    lp_map = npe.log_prob(theta_map, xo)
    lp_samples = npe.log_prob(npe.sample(xo, 500, seed=3), xo)
    assert float(lp_map) >= float(lp_samples.max())   # at least as high as any posterior draw
    assert torch.equal(npe.map(x=xo, num_iter=200, num_init_samples=500), theta_map)  # cached


def test_npse_has_no_density_but_a_map():
    task = ts.tasks.get("gaussian_linear")
    theta, x = ts.simulate(task.simulator, task.prior, 300, seed=0, progress_bar=False)
    est = ts.NPSE(task.prior).fit(theta, x, max_epochs=1, progress_bar=False)
    with pytest.raises(NotImplementedError, match="no posterior density"):
        est.log_prob(torch.zeros(2, 10), x=task.observation(1))
    assert est.sample((3,), x=task.observation(1), steps=5).shape == (3, 10)
    assert est.map(x=task.observation(1), num_init_samples=100).shape == (10,)


@pytest.mark.parametrize("method", ["NPE", "NLE", "NRE"])
def test_sbi_run_sbc_and_c2st_on_telescope(moons, method):
    sbi_diag = pytest.importorskip("sbi.diagnostics")
    from sbi.utils.metrics import c2st

    task, theta, x = moons
    est = getattr(ts, method)(task.prior).fit(theta, x, max_epochs=3, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns that 10 SBC points and 30 samples are few
        ranks, dap = sbi_diag.run_sbc(theta[:10], x[:10], est, num_posterior_samples=30, show_progress_bar=False)
        checks = sbi_diag.check_sbc(ranks, theta[:10], dap, num_posterior_samples=30)
    assert ranks.shape == (10, 2) and ranks.min() >= 0 and ranks.max() <= 30
    assert dap.shape == (10, 2) and set(checks) >= {"ks_pvals", "c2st_ranks"}
    s = est.sample((200,), x=task.observation(1))
    score = float(c2st(s, task.reference_samples(1)[:200], classifier="mlp"))
    assert 0.0 <= score <= 1.0


def test_telescope_metrics_on_sbi_posterior(moons):
    sbi_inference = pytest.importorskip("sbi.inference")
    task, theta, x = moons
    inference = sbi_inference.NPE(prior=task.prior, show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference.append_simulations(theta, x).train(max_num_epochs=3, show_train_summary=False)
    posterior = inference.build_posterior()
    assert is_sbi_posterior(posterior) and not is_sbi_posterior(ts.NPE(task.prior))
    alphas, cov = ts.metrics.coverage(posterior, theta[:20], x[:20], n_samples=100)
    assert cov.shape == alphas.shape and cov[0] <= cov[50] <= cov[-1] == 1.0
    ranks = ts.metrics.sbc(posterior, theta[:20], x[:20], n_samples=50)
    assert ranks.shape == (20, 2) and 0 <= ranks.min() and ranks.max() <= 50
    wrapped = from_sbi(posterior)
    assert wrapped.sample(task.observation(1), 10).shape == (10, 2)
    assert wrapped.log_prob_batched(torch.zeros(4, 3, 2), x[:3]).shape == (4, 3)


def test_metrics_sbc_on_telescope_matches_ranks(moons, npe):
    _, theta, x = moons
    ranks = ts.metrics.sbc(npe, theta[:10], x[:10], n_samples=40, seed=0)
    torch.manual_seed(0)
    want = ts.metrics.sbc_ranks(npe.sample_batched(x[:10], 40), theta[:10])
    assert torch.equal(ranks, want)
    with pytest.raises(ValueError, match="x must have shape"):
        ts.metrics.sbc(npe, theta[:10], x[:9], n_samples=5)
