"""NRE-C: the loss and its corner cases (exact), bad input, and a trained estimator against a known ratio."""

import math

import pytest
import torch
import torch.nn.functional as F

from _nre_gaussian import PRIOR, SIMULATOR, TRUE_MI, ExactRatio, S, posterior, simulate, trained, true_log_ratio
from telescope.diagnostics import mutual_information
from telescope.estimators.nre import NRE, _other_rows, nre_c_loss, rejection_sample
from telescope.priors import BoxUniform


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _logits(B=64, K=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(B, generator=g, dtype=torch.float64), 3 * torch.randn(B, K, generator=g, dtype=torch.float64)


# -- the loss ---------------------------------------------------------------------------------------


def test_loss_is_eq9_written_with_probabilities():
    """Eq. (7) probabilities plugged into eq. (9), in float64, for several gamma and K."""
    for gamma in (0.1, 1.0, 3.0, 10.0):
        for K in (1, 2, 7):
            h_joint, h_marg = _logits(K=K, seed=K)
            r_marg, r_joint = h_marg.exp(), h_joint.exp()
            q0 = K / (K + gamma * r_marg.sum(1))
            joint_set = torch.cat([r_joint[:, None], r_marg[:, : K - 1]], 1)
            qK = gamma * r_joint / (K + gamma * joint_set.sum(1))
            direct = -(q0.log().mean() / (1 + gamma) + gamma / (1 + gamma) * qK.log().mean())
            assert torch.allclose(nre_c_loss(h_joint, h_marg, gamma), direct, rtol=1e-10, atol=1e-12)


def test_gamma_1_K_1_is_nre_a_eq10():
    h_joint, h_marg = _logits(K=1)
    nre_a = -(F.logsigmoid(-h_marg[:, 0]).sum() + F.logsigmoid(h_joint).sum()) / (2 * h_joint.shape[0])
    assert torch.allclose(nre_c_loss(h_joint, h_marg, 1.0), nre_a, rtol=0, atol=1e-12)


def test_gamma_inf_is_nre_b_eq11():
    for K in (1, 2, 10):
        h_joint, h_marg = _logits(K=K, seed=K)
        classes = torch.cat([h_joint[:, None], h_marg[:, : K - 1]], 1)  # the true parameter is class 0 here
        nre_b = F.cross_entropy(classes, torch.zeros(classes.shape[0], dtype=torch.long))
        assert torch.allclose(nre_c_loss(h_joint, h_marg, math.inf), nre_b, rtol=0, atol=1e-12)
        # and it is the limit gamma -> inf of eq. (9)
        assert torch.allclose(nre_c_loss(h_joint, h_marg, 1e12), nre_b, rtol=0, atol=1e-8)


def test_loss_is_stable_for_extreme_logits():
    h_joint, h_marg = torch.tensor([500.0, -500.0]), torch.tensor([[-400.0, 300.0], [600.0, -10.0]])
    for gamma in (1.0, math.inf):
        assert torch.isfinite(nre_c_loss(h_joint, h_marg, gamma))


def test_bootstrap_rows_are_distinct_and_never_the_own_row():
    idx = _other_rows(50, 49, torch.Generator().manual_seed(0), "cpu")
    assert idx.shape == (50, 49)
    assert not (idx == torch.arange(50)[:, None]).any()
    assert all(len(set(r.tolist())) == 49 for r in idx)


# -- bad input -------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="gamma"):
        NRE(PRIOR, gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        NRE(PRIOR, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        NRE(PRIOR, gamma=float("nan"))
    with pytest.raises(TypeError, match="gamma"):
        NRE(PRIOR, gamma="big")
    with pytest.raises(ValueError, match="K"):
        NRE(PRIOR, K=0)
    with pytest.raises(ValueError, match="contrastive"):
        NRE(PRIOR, contrastive="shuffle")

    class NoLogProb(torch.distributions.Distribution):
        arg_constraints: dict = {}

        def __init__(self):
            super().__init__(event_shape=torch.Size([2]), validate_args=False)

        def sample(self, shape=torch.Size()):
            return torch.zeros(*shape, 2)

    with pytest.raises(TypeError, match="prior.*log_prob"):
        NRE(NoLogProb())


def test_K_too_large_for_the_batch_is_refused_before_training():
    theta, x = simulate(200, seed=0)
    with pytest.raises(ValueError, match=r"K=60 .*batch_size=50"):
        NRE(PRIOR, K=60).fit(theta, x, batch_size=50, max_epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="validation"):  # 20 validation rows cannot hold 40 contrastive
        NRE(PRIOR, K=40).fit(theta, x, batch_size=100, max_epochs=1, progress_bar=False)
    # drawn from the prior instead, any K works
    NRE(PRIOR, K=60, contrastive="prior", width=8, blocks=1).fit(theta, x, batch_size=50, max_epochs=1,
                                                                progress_bar=False, mi_samples=0)


def test_wrong_observation_shapes_are_refused():
    est = trained(1.0)
    with pytest.raises(ValueError, match="x_o"):
        est.sample(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="x_o"):
        est.sample(torch.zeros(4, 3), 10)
    with pytest.raises(ValueError, match="theta"):
        est.log_ratio(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="same number of rows"):
        est.log_ratio(torch.zeros(5, 2), torch.zeros(4, 2))
    with pytest.raises(RuntimeError, match="not trained"):
        NRE(PRIOR).log_ratio(torch.zeros(1, 2), torch.zeros(1, 2))


# -- a trained estimator against the true ratio -------------------------------------------------------


def test_trained_nre_c_log_ratio_is_close_to_the_truth():
    est = trained(1.0)
    theta, x = simulate(2000, seed=11)  # held out
    err = est.log_ratio(theta, x) - true_log_ratio(theta, x)
    # on joint pairs (where the posterior mass is) the true log ratio spans about [-3, 3]
    assert err.abs().mean() < 0.3, float(err.abs().mean())
    assert abs(float(err.mean())) < 0.2
    # the learned ratio ranks parameters like the truth for a fixed x
    th = PRIOR.sample((500,))
    a, b = est.log_ratio(th, x[0]), true_log_ratio(th, x[0])
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9


def test_rejection_and_mcmc_recover_the_gaussian_posterior():
    est = trained(1.0)
    x_o = torch.tensor([0.6, -0.4])
    mean, var = posterior(x_o)
    for method in ("rejection", "mcmc"):
        s = est.sample(x_o, 2000, method=method, seed=1, warmup=30, chains=50)
        assert est.method == method
        assert s.shape == (2000, 2)
        assert torch.allclose(s.mean(0), mean, atol=0.1), (method, s.mean(0))
        assert torch.allclose(s.var(0), torch.full((2,), var), rtol=0.3), (method, s.var(0))
    assert 0 < est.acceptance_rate < 1 or est.method == "mcmc"


def test_tall_data_sums_log_ratios_over_iid_observations():
    est = trained(1.0)
    theta_true = torch.tensor([0.5, -0.5])
    k = 8
    x_set = theta_true + S * torch.randn(k, 2, generator=torch.Generator().manual_seed(3))
    # exact: N(sum x / (k + s^2), s^2 / (k + s^2))
    mean = x_set.sum(0) / (k + S**2)
    lp = est.log_prob(torch.stack([mean, mean + 0.3]), x_set)
    exact = torch.stack([true_log_ratio(t, x_set).sum() for t in torch.stack([mean, mean + 0.3])])
    assert lp.shape == (2,)
    assert abs(float((lp[0] - lp[1]) - (exact[0] - exact[1]))) < 0.6 * k ** 0.5
    for method in ("rejection", "mcmc"):
        s = est.sample(x_set, 1000, seed=0, method=method, warmup=30, chains=50)
        assert torch.allclose(s.mean(0), mean, atol=0.1), (method, s.mean(0))
        # exact sd 0.17; the single-observation posterior sd is 0.45
        assert 0.1 < float(s.std(0).mean()) < 0.3, (method, s.std(0))


def test_sample_batched_and_log_prob_batched_shapes_and_values():
    est = trained(1.0)
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-0.5, 0.8]])
    for method in ("rejection", "sir", "mcmc"):
        s = est.sample_batched(x, 400, method=method, seed=0, warmup=30)
        assert s.shape == (400, 3, 2)
        for j in range(3):
            assert torch.allclose(s[:, j].mean(0), posterior(x[j])[0], atol=0.15), (method, j)
    lp = est.log_prob_batched(s, x)
    assert lp.shape == (400, 3)
    assert torch.allclose(lp[:, 1], est.log_prob(s[:, 1], x[1]), atol=1e-5)


def test_rejection_sample_is_exact_on_a_known_target():
    """prior N(0, 1), weight exp(-theta^2 / 2) => target N(0, 1/2)."""
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)
    torch.manual_seed(0)
    s, rate = rejection_sample(lambda t: -0.5 * t[:, 0] ** 2, prior, 20_000, chunk=5000)
    assert s.shape == (20_000, 1, 1)
    assert abs(float(s.var()) - 0.5) < 0.03
    assert abs(rate - 1 / math.sqrt(2)) < 0.03  # Z / max weight


def test_save_and_load_round_trip(tmp_path):
    import telescope as ts

    theta, x = simulate(50, seed=5)
    for gamma in (1.0, math.inf):
        est = trained(gamma)
        est.save(tmp_path / str(gamma))
        for back in (NRE.load(tmp_path / str(gamma), PRIOR), ts.load(tmp_path / str(gamma), PRIOR)):
            assert type(back) is ts.NRE
            assert back.gamma == gamma and back.K == est.K and back.contrastive == est.contrastive
            assert torch.allclose(back.log_ratio(theta, x), est.log_ratio(theta, x), atol=1e-6)
        s_back = back.sample(x[0], 200, seed=3, method="rejection")
        assert torch.equal(s_back, est.sample(x[0], 200, seed=3, method="rejection"))
    with pytest.raises(ValueError, match="not a NPE"):
        ts.NPE.load(tmp_path / "1.0", PRIOR)


def test_ts_load_finds_nre_in_a_fresh_interpreter(tmp_path):
    """``ts.load`` must know the NRE class without the user importing telescope.estimators.nre."""
    import subprocess
    import sys

    trained(1.0).save(tmp_path / "nre")
    theta, x = simulate(5, seed=6)
    expected = trained(1.0).log_ratio(theta, x)
    code = (
        "import sys, torch, telescope as ts\n"
        "est = ts.load(sys.argv[1], ts.Gaussian(torch.zeros(2), torch.ones(2)))\n"
        "print(type(est).__name__, *est.log_ratio(torch.tensor(eval(sys.argv[2])), torch.tensor(eval(sys.argv[3]))).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nre"), repr(theta.tolist()), repr(x.tolist())],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    name, *vals = out.stdout.split()
    assert name == "NRE"
    assert torch.allclose(torch.tensor([float(v) for v in vals]), expected, atol=1e-5)


# -- training regimes ---------------------------------------------------------------------------------


def test_training_regimes_run_and_learn():
    theta, x = simulate(1000, seed=2)
    small = {"width": 32, "blocks": 1, "K": 5}
    # plain weights: three epochs are too short for the default moving average to catch up
    kw = {"max_epochs": 3, "batch_size": 100, "lr": 5e-3, "progress_bar": False, "ema": None}
    fixed = NRE(PRIOR, **small).fit(theta, x, **kw)
    prior = NRE(PRIOR, contrastive="prior", **small).fit(theta, x, **kw)
    online = NRE(PRIOR, **small).fit_online(SIMULATOR, n_per_epoch=1000, **kw)
    assert fixed.history["regime"] == "fixed" and prior.history["regime"] == "prior"
    assert online.history["regime"] == "online"
    # epoch 1 uses the 900 training simulations, epochs 2-3 draw 900 fresh ones each
    assert online.history["simulations"] == 1000 + 2 * 900
    for est in (fixed, prior, online):
        assert est.history["epochs"] == 3
        assert est.history["mi"]["I0"] > 0.5  # true I = 1.61 nats; an untrained net gives about 0


def test_nre_a_and_nre_b_are_corner_cases_of_the_estimator():
    theta, x = simulate(600, seed=4)
    a = NRE(PRIOR, gamma=1.0, K=1, width=16, blocks=1, batch_norm=True)  # the paper's networks use batch norm
    b = NRE(PRIOR, gamma=math.inf, K=5, width=16, blocks=1)
    assert "NRE-A" in repr(a) and "NRE-B" in repr(b)
    for est in (a, b):
        est.fit(theta, x, max_epochs=2, progress_bar=False, mi_samples=10)
        assert math.isfinite(est.history["train_loss"][-1])


def test_box_prior_and_x_dimension_other_than_theta():
    prior = BoxUniform([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    theta = prior.sample((400,))
    x = torch.cat([theta.sum(-1, keepdim=True), theta[:, :1] ** 2], 1) + 0.05 * torch.randn(400, 2)
    est = NRE(prior, K=3, width=16, blocks=1).fit(theta, x, max_epochs=2, progress_bar=False, mi_samples=10)
    s = est.sample(x[0], 50, method="rejection", seed=0)
    assert s.shape == (50, 3) and bool(((s >= -1) & (s <= 1)).all())


def test_mi_bounds_are_logged_every_epoch():
    est = trained(1.0)
    mi = est.history["mi_per_epoch"]
    assert len(mi["I0"]) == len(mi["I1"]) == est.history["epochs"] == len(est.history["val_loss"])
    assert all(b <= a + 1e-9 for a, b in zip(mi["I0"], mi["I1"]))  # I1 <= I0 always (log z <= z - 1)
    best = est.history["best_epoch"]
    # training raises the bound from the first epoch to the best ...
    assert mi["I0"][best] > mi["I0"][0]
    # ... to what the exact ratio scores with the same M = K = 9 contrastive draws (above the true I = 1.61
    # nats: log of a mean of 9 ratios underestimates log Z = 0)
    theta, x = simulate(4000, seed=12)
    exact = mutual_information(ExactRatio(), theta, x, n_contrast=9, seed=0)
    assert exact["I0"] > TRUE_MI + 0.2
    # the logged value (400 validation rows) agrees with the same bound for the final weights on fresh data
    fresh = mutual_information(est, theta, x, n_contrast=9, seed=0)
    assert abs(mi["I0"][best] - fresh["I0"]) < 0.2, (mi["I0"][best], fresh["I0"])
    assert fresh["I0"] < exact["I0"]  # the gap is E_x KL(p(theta|x) || p_w(theta|x)) (eq. 15)
    assert max(mi["I0"]) < exact["I0"] + 0.1  # no epoch beats the exact ratio (beyond noise)


def test_rejection_gives_up_when_a_late_large_weight_drops_the_realised_acceptance():
    # a rare region (theta > 3.5, prior mass 2.3e-4) carries weight e^20: the first 100 prior draws almost surely
    # miss it and estimate an acceptance of 1; once it is found, every earlier acceptance is thinned away
    from telescope.estimators.nre import _LowAcceptance

    torch.manual_seed(0)
    prior = torch.distributions.Normal(torch.zeros(1), torch.ones(1))
    log_w = lambda t: 20.0 * (t[:, 0] > 3.5).double()  # noqa: E731
    with pytest.raises(_LowAcceptance) as info:
        rejection_sample(log_w, prior, 5000, chunk=100, min_acceptance=0.01, max_time=60)
    assert info.value.rate < 0.01
    # without a floor the same target is sampled exactly: nearly all mass sits beyond 3.5
    s, rate = rejection_sample(log_w, prior, 200, chunk=20_000, max_time=60)
    assert (s[:, 0, 0] > 3.5).float().mean() > 0.9
