"""NPSE: a trained score network against the analytic Gaussian-linear posterior, early stopping,
save/load, priors with and without closed-form diffused scores, and the errors users see."""

import math
import warnings

import pytest
import torch

import telescope as ts
from telescope.estimators.npse import NPSE, ScoreNet
from telescope.priors import BoxUniform, Gaussian, Joint, LogNormal
from telescope.samplers.prior_scores import DiffusedProduct, LearnedPriorScore, PriorScoreError

SMALL = dict(hidden=(64, 64), embed=32, embed_hidden=(32,), frequencies=8)
TINY = dict(hidden=(16, 16), embed=8, embed_hidden=(8,), frequencies=4)
NOISE_VAR = 0.5
X_SET = torch.tensor([[0.4, -0.3], [0.9, 0.2], [0.1, -0.6], [0.7, 0.1], [0.5, 0.0], [0.2, -0.5], [0.8, -0.2],
                      [0.6, 0.3]])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _posterior(x_set):
    """theta ~ N(0, I), x ~ N(theta, 0.5 I): the tall posterior of x_set (n, 2) is N(sum x / (0.5 + n), I / (1 + 2n)).
    """
    n = x_set.shape[0]
    var = 1.0 / (1.0 + n / NOISE_VAR)
    return var * x_set.sum(0) / NOISE_VAR, torch.full((2,), var)


@pytest.fixture(scope="module")
def trained():
    task = ts.tasks.get("gaussian_linear", dim=2, prior_var=1.0, noise_var=NOISE_VAR)
    theta, x = ts.simulate(task.simulator, task.prior, 2000, seed=0, progress_bar=False)
    est = NPSE(task.prior, **SMALL).fit(theta, x, max_epochs=80, batch_size=128, lr=3e-3, ema=0.99,
                                        progress_bar=False)
    return est, task


def _check(s, x_set, mean_tol, var_lo, var_hi):
    mean, var = _posterior(x_set)
    assert torch.isfinite(s).all()
    err = ((s.mean(0) - mean) / var.sqrt()).abs().max()
    ratio = s.var(0) / var
    assert err < mean_tol, (s.mean(0), mean)
    assert bool((ratio > var_lo).all() and (ratio < var_hi).all()), ratio


def test_trained_npse_matches_the_analytic_posterior_of_one_observation(trained):
    est, _ = trained
    s = est.sample(X_SET[0], 2000, seed=0)
    assert s.shape == (2000, 2)
    # Gaussian-linear posterior N(x / 1.5, 1/3): mean within 0.3 sd, variance within [0.7, 1.4]
    _check(s, X_SET[:1], 0.3, 0.7, 1.4)
    assert est.sample_info["method"] == "single" and est.sample_info["eta"] == pytest.approx(0.8)


def test_trained_npse_gauss_tall_posterior_matches_the_analytic_one(trained):
    est, _ = trained
    s = est.sample(X_SET, 1000, method="gauss", seed=0)
    # 8 observations: posterior sd 0.24; mean within 0.6 sd (score errors add up over observations)
    _check(s, X_SET, 0.6, 0.6, 1.5)
    assert est.sample_info["method"] == "gauss" and est.sample_info["n_obs"] == 8
    assert est.sample_info["nfe"] == 8 * 50


def test_sample_batched_is_vectorised_over_observations_and_reproducible(trained):
    est, _ = trained
    s = est.sample_batched(X_SET[:3], 500, steps=50, seed=3)
    assert s.shape == (500, 3, 2)
    for j in range(3):
        _check(s[:, j], X_SET[j:j + 1], 0.35, 0.6, 1.5)
    again = est.sample_batched(X_SET[:3], 500, steps=50, seed=3)
    assert torch.equal(s, again)
    ode = est.sample(X_SET[0], 10, sampler="ode", steps=20, seed=1)
    assert torch.equal(ode, est.sample(X_SET[0], 10, sampler="ode", steps=20, seed=1))
    ddpm = est.sample(X_SET[0], 10, sampler="ddpm", steps=20, seed=1)
    assert est.sample_info["eta"] == 1.0 and ddpm.shape == (10, 2)


def test_fnpse_and_jac_run_on_a_trained_network(trained):
    est, _ = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # JAC may fall back on an imperfect Jacobian
        s = est.sample(X_SET[:4], 200, method="fnpse", steps=50, seed=0)
        _check(s, X_SET[:4], 0.8, 0.4, 2.0)
        j = est.sample(X_SET[:4], 100, method="jac", steps=20, seed=0)
    assert j.shape == (100, 2) and torch.isfinite(j).all()


def test_save_and_load_give_the_same_samples(trained, tmp_path):
    est, task = trained
    est.save(tmp_path / "npse")
    back = NPSE.load(tmp_path / "npse", task.prior)
    assert isinstance(back, NPSE) and back.config == est.config
    assert torch.equal(back.sample(X_SET[:3], 20, steps=10, pilot_steps=5, seed=1),
                       est.sample(X_SET[:3], 20, steps=10, pilot_steps=5, seed=1))


def test_bad_inputs_are_explained(trained):
    est, _ = trained
    with pytest.raises(ValueError, match=r"shape \(n, 2\) or \(2,\).*got shape \(5, 3\)"):
        est.sample(torch.zeros(5, 3), 10)
    with pytest.raises(ValueError, match="no observations"):
        est.sample(torch.zeros(0, 2), 10)
    with pytest.raises(ValueError, match=r"method must be one of \['gauss', 'jac', 'fnpse', 'auto'\]"):
        est.sample(X_SET, 10, method="langevin")
    with pytest.raises(ValueError, match="NaN"):
        est.sample(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), 10)
    with pytest.raises(ValueError, match="n must be"):
        est.sample(X_SET, 0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        est.sample(X_SET[0], 5, sampler="heun")
    with pytest.raises(RuntimeError, match="not trained"):
        NPSE(Gaussian([0.0], [1.0])).sample(torch.zeros(1), 3)


def test_prior_without_a_closed_form_score_says_which_options_exist():
    gamma = Joint([torch.distributions.Gamma(2.0, 1.0), torch.distributions.Normal(0.0, 1.0)])
    with pytest.raises(PriorScoreError, match="supported priors.*prior_score='learned'"):
        NPSE(gamma, prior_score="analytic")
    with pytest.raises(ValueError, match="prior_score must be"):
        NPSE(gamma, prior_score="numerical")
    with pytest.raises(ValueError, match="transform must be"):
        NPSE(gamma, transform="logit")
    est = NPSE(gamma, **TINY)  # "auto": learned, classifier-free
    assert est.learns_prior and est.config["prior_score"] == "learned"
    theta = gamma.sample((300,))
    x = theta + 0.3 * torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    est.fit(theta, x, max_epochs=3, progress_bar=False)
    assert isinstance(est.prior_score(), LearnedPriorScore)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = est.sample(x[:3], 20, steps=10, pilot_steps=5, seed=0)
    assert s.shape == (20, 2) and bool((s[:, 0] > 0).all())  # the Gamma coordinate is diffused in log space


def test_lognormal_and_uniform_priors_keep_samples_in_their_support():
    prior = Joint([LogNormal([0.0], [0.5]), BoxUniform([-1.0], [1.0])])
    est = NPSE(prior, **TINY)
    assert not est.learns_prior and est.log_dims.tolist() == [True, False]
    theta = prior.sample((300,))
    x = torch.cat([theta[:, :1].log(), theta[:, 1:]], 1) + 0.2 * torch.randn(300, 2)
    est.fit(theta, x, max_epochs=3, progress_bar=False)
    assert isinstance(est.prior_score(), DiffusedProduct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = est.sample(x[:4], 50, steps=10, pilot_steps=5, seed=0)
    assert bool((s[:, 0] > 0).all()) and bool((s[:, 1].abs() <= 1).all())


class _RecordingNPSE(NPSE):
    """Records the validation batches the training loop evaluates (net in eval mode)."""

    def _loss(self, net, batch):
        if not net.training and not hasattr(self, "val_batches"):
            self.val_batches = {k: v.clone() for k, v in batch.items()}
        return super()._loss(net, batch)


def test_early_stopping_really_stops_and_restores_the_best_weights():
    task = ts.tasks.get("gaussian_linear", dim=2, prior_var=1.0, noise_var=NOISE_VAR)
    theta, x = ts.simulate(task.simulator, task.prior, 120, seed=1, progress_bar=False)
    est = _RecordingNPSE(task.prior, **TINY)
    est.fit(theta, x, max_epochs=2000, patience=5, lr=1e-2, ema=0.9, batch_size=32, progress_bar=False)
    h = est.history
    assert h["epochs"] < 2000  # it stopped early ...
    assert h["epochs"] == h["best_epoch"] + 1 + 5  # ... exactly `patience` epochs after the best one
    # the weights in place are the best ones: their (deterministic) validation loss is the best seen
    est.net.eval()
    with torch.no_grad():
        val = float(est._loss(est.net, est.val_batches))
    assert val == pytest.approx(h["best_val_loss"], rel=1e-5)
    assert val == pytest.approx(min(h["val_loss"]), rel=1e-5)
    assert h["val_loss"][-1] > h["best_val_loss"]


def test_validation_loss_is_deterministic_given_the_weights(trained):
    est, task = trained
    theta, x = ts.simulate(task.simulator, task.prior, 64, seed=5, progress_bar=False)
    est.net.eval()
    with torch.no_grad():
        a = est._loss(est.net, {"theta": theta, "x": x})
        b = est._loss(est.net, {"theta": theta, "x": x})
    assert float(a) == float(b)


def test_score_net_pieces():
    prior = Gaussian([1.0, -1.0], [4.0, 1.0])
    est = NPSE(prior, **TINY)
    theta = prior.sample((200,))
    est.fit(theta, theta + torch.randn(200, 2), max_epochs=1, progress_bar=False)
    net = est.net
    assert isinstance(net, ScoreNet)
    z = net.to_working(theta)
    assert torch.allclose(net.from_working(z), theta, atol=1e-5)
    assert z.mean(0).abs().max() < 1e-4 and (z.std(0) - 1).abs().max() < 1e-3
    lo, hi = net.clip_range()
    assert bool((lo < z.min(0).values).all() and (hi > z.max(0).values).all())
    sc = est.score(z[:5], theta[:5], 0.5)
    assert sc.shape == (5, 2) and torch.isfinite(sc).all()
    with pytest.raises(ValueError, match="t must lie"):
        est.score(z[:5], theta[:5], 0.0)
    assert math.isclose(float(net.time(torch.tensor(0.25))[0]), math.cos(math.pi / 4), rel_tol=1e-6)


# -- MLMC over sampler steps on NPSE posteriors (issue 7, experiment b) ------------------------
def test_noise_predictor_is_the_network_and_the_gauss_composition(trained):
    from telescope.mlmc.npse import npse_problem  # noqa: F401  (the module imports cleanly)

    est, _ = trained
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    eps = est.noise_predictor(X_SET[0], clip=False)
    sigma = float(est.schedule.sigma(torch.tensor(0.3, dtype=torch.float64)))
    assert torch.allclose(eps(z, torch.full((6,), 0.3)), -sigma * est.score(z, X_SET[0], 0.3), atol=1e-5)
    assert eps.nfe_per_row == 1
    tall = est.noise_predictor(X_SET, clip=False, pilot_samples=256, seed=1)
    assert tall.nfe_per_row == 8 and tall(z, 0.3).shape == (6, 2) and tall.info["method"] == "gauss"
    with pytest.raises(ValueError, match="one diffusion time"):
        tall(z, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))


def test_coupled_levels_on_npse_posteriors_decay_and_match_the_analytic_moments(trained):
    """The NPSE eps-callable in CoupledDiffusion: V_l decays (beta > 1), the coarse path of a level has the law
    of the level below (consistency), and the fine samples give the analytic posterior moments (one observation
    and the tall GAUSS posterior of 8), within the network's accuracy."""
    from telescope.mlmc import convergence_test
    from telescope.mlmc.npse import gaussian_linear_moments, npse_problem

    est, _ = trained
    for xs, n_conv, mean_tol, var_lo, var_hi in ((X_SET[:1], 300, 0.3, 0.7, 1.4), (X_SET, 150, 0.6, 0.6, 1.5)):
        lv, info = npse_problem(est, xs, seed=0, pilot_samples=512)
        assert info["nfe_per_row"] == xs.shape[0]
        conv = convergence_test(lv, n_conv, 5, warn=False)
        v = conv["var"]
        assert v[5] < v[4] < v[3] and v[3] / v[5] > 5, v  # beta ~ 1.5-2 on these levels (runs/mlmc_npse: 1.7)
        assert max(conv["consistency"]) < 1, conv["consistency"]
        assert conv["cost"][5] == xs.shape[0] * (32 + 16)  # NFEs per pair: n_obs per composed prediction
        pf, _, _ = lv(6 if xs.shape[0] == 1 else 5, 1000, coarse=False)
        mean, var = gaussian_linear_moments(1.0, NOISE_VAR, xs)
        m = pf[:, :2].double().mean(0)
        s2 = pf[:, 2:].double().mean(0) - m**2
        assert ((m - mean) / var.sqrt()).abs().max() < mean_tol, (m, mean)
        assert bool(((s2 / var) > var_lo).all() and ((s2 / var) < var_hi).all()), s2 / var
