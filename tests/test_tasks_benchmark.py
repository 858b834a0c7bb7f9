"""Tasks of the full SBI benchmark (issue 8): bernoulli_glm(_raw), sir, lotka_volterra,
slcp_distractors, jansen_rit.  Fast checks against independent computations; the full-size
references are marked slow."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from telescope import tasks
from telescope.tasks._benchmark import checked_mcmc, ess, rk4

NEW = ["bernoulli_glm", "bernoulli_glm_raw", "sir", "lotka_volterra", "slcp_distractors", "jansen_rit"]
DIMS = {"bernoulli_glm": (10, 10), "bernoulli_glm_raw": (10, 100), "sir": (2, 10), "lotka_volterra": (4, 20),
        "slcp_distractors": (5, 100)}


def _task(name):
    if name == "jansen_rit":
        return tasks.get(name, duration=2.0, burn_in=0.5)  # short series keep the test fast
    return tasks.get(name)


@pytest.mark.parametrize("name", NEW)
def test_registered_shapes_support_and_seeding(name):
    torch.manual_seed(0)
    assert name in tasks.list()
    task = _task(name)
    theta = task.prior.sample((7,))
    assert theta.shape == (7, task.dim_theta)
    assert torch.isfinite(task.prior.log_prob(theta)).all()
    x1 = task.simulator(theta, seed=3)
    assert x1.shape == (7, task.dim_x) and x1.dtype == torch.float32
    assert torch.isfinite(x1).all()
    assert torch.equal(x1, task.simulator(theta, seed=3))  # same seed, same x
    assert not torch.equal(x1, task.simulator(theta, seed=4))
    if name in DIMS:
        assert (task.dim_theta, task.dim_x) == DIMS[name]
    assert task.observation(2).shape == (task.dim_x,)
    assert torch.equal(task.observation(2), _task(name).observation(2))
    assert task.true_parameters(2).shape == (task.dim_theta,)


def test_unknown_task_lists_the_new_ones():
    with pytest.raises(ValueError, match="available tasks:.*bernoulli_glm.*lotka_volterra.*sir"):
        tasks.get("sir_model")


def test_checked_mcmc_rejects_unknown_kernel_and_ess_of_iid_and_ar1():
    g = torch.Generator().manual_seed(0)
    assert abs(ess(torch.randn(200, 20, 1, generator=g)).item() / 4000 - 1) < 0.15
    z = torch.zeros(4000, 10, 1, dtype=torch.float64)
    e = torch.randn(4000, 10, 1, generator=g, dtype=torch.float64)
    for t in range(1, 4000):
        z[t] = 0.8 * z[t - 1] + e[t]
    assert abs(ess(z).item() / (40_000 / 9) - 1) < 0.2  # AR(1): tau = (1 + 0.8) / (1 - 0.8) = 9
    with pytest.raises(ValueError, match="kernel"):
        checked_mcmc(lambda t: -t.pow(2).sum(-1), torch.randn(10, 2), 10, seed=0, kernel="hmc")


# -- bernoulli_glm -----------------------------------------------------------------------------
def test_bernoulli_glm_prior_and_likelihood_by_direct_formulas():
    task = tasks.get("bernoulli_glm")
    raw = tasks.get("bernoulli_glm_raw")
    # prior precision written out: offset 1/2, filter F^T F with F = D^2 + diag(sqrt(k/9))
    D = np.eye(9) - np.eye(9, k=-1)
    F = D @ D + np.diag(np.sqrt(np.arange(9) / 9))
    prec = np.zeros((10, 10))
    prec[0, 0] = 0.5
    prec[1:, 1:] = F.T @ F
    assert np.allclose(np.linalg.inv(task.prior.covariance_matrix.double().numpy()), prec, atol=1e-4)
    # the design: ones and the stimulus lagged by 0..8 bins
    V = task.design.numpy()
    stim = V[:, 1]
    assert np.allclose(V[:, 0], 1) and np.allclose(V[5:, 6], stim[:-5]) and np.allclose(V[:5, 6], 0)
    # raw and summary observations agree; the summary is V^T y
    y = raw.observation(3).double()
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(task.observation(3).double(), y @ task.design, atol=1e-4)
    # log-likelihood: a loop over bins of log Bernoulli(y_t; sigmoid(v_t . theta))
    theta = task.prior.sample((5,)).double()
    want = []
    for th in theta.numpy():
        ll = 0.0
        for t in range(100):
            p = 1 / (1 + math.exp(-float(V[t] @ th)))
            ll += math.log(p) if y[t] == 1 else math.log(1 - p)
        want.append(ll)
    assert np.allclose(raw.log_likelihood(theta, y).double().numpy(), want, rtol=1e-5)
    assert np.allclose(task.log_likelihood(theta, task.observation(3)).double().numpy(), want, rtol=1e-4)
    # the spike probabilities of the simulator are sigmoid(V theta)
    th = theta[:1].float()
    sims = raw.simulator(th.expand(20_000, -1), seed=1).double().mean(0)
    p = torch.sigmoid(task.design @ theta[0])
    assert (sims - p).abs().max() < 4 * math.sqrt(0.25 / 20_000) + 1e-3
    # tall likelihood: the sum over the set
    xs = task.tall_observation(3, 4)
    assert xs.shape == (4, 10) and torch.equal(xs[0], task.observation(3))
    tall = task.tall_log_likelihood(theta, xs)
    assert torch.allclose(tall, sum(task.log_likelihood(theta, xj) for xj in xs), rtol=1e-5)


def test_bernoulli_glm_small_reference_converges_and_matches_importance_sampling():
    task = tasks.get("bernoulli_glm", chains=100, warmup=100, thin=4, n_proposals=5_000, reference="mcmc")
    s = task.reference_samples(1, 3000, cache=False).double()
    assert s.shape == (3000, 10)
    assert task.diagnostics["rhat"].max() < 1.01
    assert task.diagnostics["ess"].min() >= 200
    # independent check: self-normalised importance sampling from a wide Gaussian around the samples
    g = torch.Generator().manual_seed(5)
    mu, cov = s.mean(0), torch.cov(s.T) * 2.0
    q = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    z = mu + torch.randn(40_000, 10, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x = task.observation(1).double()
    lw = task._log_post64(z, x.reshape(1, -1)) - q.log_prob(z)
    w = torch.softmax(lw, 0)
    assert 1 / (w**2).sum() > 2000
    is_mean = (w[:, None] * z).sum(0)
    is_sd = ((w[:, None] * (z - is_mean) ** 2).sum(0)).sqrt()
    assert ((s.mean(0) - is_mean).abs() / is_sd).max() < 0.15  # MC error ~ 1/sqrt(ESS) ~ 0.03 sd
    assert ((s.std(0) / is_sd) - 1).abs().max() < 0.1


def test_reference_checks_raise_when_not_converged():
    # two far-apart modes: chains started in both never cross, so split-R-hat is huge
    def log_prob(t):
        return torch.logaddexp(-0.5 * ((t - 20) ** 2).sum(-1), -0.5 * ((t + 20) ** 2).sum(-1))

    g = torch.Generator().manual_seed(0)
    props = torch.cat([torch.randn(50, 2, generator=g) + 20, torch.randn(50, 2, generator=g) - 20])
    # a failed check is retried with twice the warm-up and thinning (twice), then raises
    with pytest.warns(RuntimeWarning, match="running again with warmup 20 and thin 4") as seen, \
            pytest.raises(RuntimeError, match="convergence checks.*R-hat"):
        checked_mcmc(log_prob, props, 400, seed=0, chains=20, warmup=10)
    assert any("warmup 40 and thin 8" in str(w.message) for w in seen)
    with pytest.warns(RuntimeWarning, match="convergence checks"):
        _, diag = checked_mcmc(log_prob, props, 400, seed=0, chains=20, warmup=10, strict=False, retries=0)
    assert diag["rhat"].max() > 1.5  # rank-normalised R-hat is bounded (about 1.7 for two chains never mixing)
    # one mode: the same settings pass
    s, diag = checked_mcmc(lambda t: -0.5 * ((t - 20) ** 2).sum(-1), props[:50], 1000, seed=0, chains=20,
                           warmup=20)
    assert diag["rhat"].max() < 1.01 and diag["ess"].min() > 100 and s.shape == (1000, 2)


def test_regenerate_overwrites_the_cache(tmp_path):
    from telescope.tasks import cache_dir
    from telescope.tasks._benchmark import regenerate

    task = tasks.get("bernoulli_glm", chains=50, warmup=40, thin=1, n_proposals=2000, strict=False,
                     observations="telescope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        path = cache_dir() / "references" / "bernoulli_glm" / "obs2_n100.pt"
        torch.save(torch.zeros(100, 10), path) if path.parent.exists() else None
        s = regenerate(task, 2, 100)
    assert path.exists() and torch.equal(torch.load(path), s) and s.abs().sum() > 0
    with pytest.raises(ValueError, match="no reference"):
        regenerate(tasks.get("jansen_rit"), 1, 10)


# -- ODE tasks ---------------------------------------------------------------------------------
def test_rk4_matches_exponential_decay():
    y = rk4(lambda y: -0.7 * y, torch.ones(3, 1, dtype=torch.float64), torch.tensor([0.0, 1.0, 2.5]), 0.05)
    assert torch.allclose(y[:, :, 0], torch.exp(-0.7 * torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64)), rtol=1e-7)


def test_sir_ode_matches_solve_ivp_and_likelihood_is_binomial():
    from telescope.tasks.sir import TIMES, sir_infected

    task = tasks.get("sir")
    theta = task.prior.sample((12,)).double()
    theta[0] = torch.tensor([1.5, 0.1], dtype=torch.float64)  # a fast epidemic
    got = sir_infected(theta).numpy()
    for th, row in zip(theta.numpy(), got):
        b, g = th
        sol = integrate.solve_ivp(lambda t, y: [-b * y[0] * y[1], b * y[0] * y[1] - g * y[1]], (0, TIMES[-1]),
                                  [1 - 1e-6, 1e-6], t_eval=TIMES, method="DOP853", rtol=1e-11, atol=1e-18)
        assert np.allclose(row, sol.y[1], rtol=1e-4, atol=1e-12)
    x = task.observation(1)
    p = task.infected(theta).numpy()
    want = stats.binom.logpmf(x.numpy()[None].astype(int), 1000, p).sum(-1)
    assert np.allclose(task.log_likelihood(theta, x).double().numpy(), want, rtol=1e-5)
    sims = task.simulator(theta[1:2].float().expand(4000, -1), seed=2).double()
    assert (sims.mean(0).numpy() - 1000 * p[1]).__abs__().max() < 4 * math.sqrt(1000 * 0.25 / 4000) + 0.1


def test_lotka_volterra_ode_matches_solve_ivp_and_likelihood_is_lognormal():
    from telescope.tasks.lotka_volterra import TIMES, lv_solution

    task = tasks.get("lotka_volterra")
    theta = task.prior.sample((12,)).double()
    got = lv_solution(theta).numpy()
    for th, row in zip(theta.numpy(), got):
        a, b, c, d = th
        sol = integrate.solve_ivp(lambda t, y: [a - b * np.exp(y[1]), -c + d * np.exp(y[0])], (0, TIMES[-1]),
                                  np.log([30.0, 1.0]), t_eval=TIMES, method="DOP853", rtol=1e-11, atol=1e-11)
        assert np.abs(np.log(row) - sol.y.T).max() < 1e-4
    x = task.observation(1)
    w = got.transpose(0, 2, 1).reshape(12, 20)
    want = stats.lognorm.logpdf(x.double().numpy()[None], s=0.1, scale=np.clip(w, 1e-10, 1e4)).sum(-1)
    assert np.allclose(task.log_likelihood(theta, x).double().numpy(), want, rtol=1e-5)
    assert torch.isfinite(task.log_likelihood(task.true_parameters(1)[None], x)).all()


# -- slcp_distractors --------------------------------------------------------------------------
def test_slcp_tall_reference_matches_importance_sampling_of_the_pooled_likelihood():
    task = tasks.get("slcp", observations="telescope")  # the library's own draws: IS from the prior suffices there
    task.chains, task.warmup = 200, 200
    x_set = task.tall_observation(2, 2)
    assert x_set.shape == (2, 8) and torch.equal(x_set[0], task.observation(2))
    ref = task.tall_reference_samples(2, 2, 2000, cache=False).double()
    # importance sampling from the uniform prior with the exact likelihood of all 8 draws
    theta = (torch.rand(1_000_000, 5, generator=torch.Generator().manual_seed(0)) * 6 - 3).double()
    w = torch.softmax(task._ll64(theta, x_set.double().reshape(-1), draws=8), 0)
    assert 1 / (w**2).sum() > 1000

    def folded(a):  # the posterior is symmetric in the signs of theta_3, theta_4
        return torch.cat([a[:, :2], a[:, 2:4].abs(), a[:, 4:]], 1)
    mean = (w[:, None] * folded(theta)).sum(0)
    sd = (w[:, None] * (folded(theta) - mean) ** 2).sum(0).sqrt()
    assert ((folded(ref).mean(0) - mean).abs() < 0.15 * sd).all()
    assert ((folded(ref).std(0) / sd - 1).abs() < 0.1).all()
    assert ((ref[:, 2:4] > 0).double().mean(0) - 0.5).abs().max() < 0.05  # both signs of each mode


def test_slcp_reference_reruns_unconverged_chains_then_warns(monkeypatch):
    import telescope.tasks.slcp as slcp_module

    calls = []

    def unconverged(*args, **kwargs):
        calls.append((kwargs["warmup"], kwargs["thin"]))
        samples, r = real(*args, **kwargs)
        return samples, r + 0.5
    real = slcp_module.mcmc_reference
    monkeypatch.setattr(slcp_module, "mcmc_reference", unconverged)
    task = tasks.get("slcp")
    task.chains, task.warmup, task.thin = 50, 10, 1
    with pytest.warns(RuntimeWarning, match="split-R-hat .* after 3 runs"):
        task.tall_reference_samples(1, 2, 200, cache=False)
    assert calls == [(10, 1), (20, 2), (40, 4)] and task.diagnostics["attempts"] == 3


def test_slcp_distractors_is_slcp_plus_a_theta_free_mixture():
    task, slcp = tasks.get("slcp_distractors"), tasks.get("slcp")
    x = task.observation(4)
    inf, d = task.split(x)
    assert torch.allclose(inf, slcp.observation(4), atol=1e-5)  # the same informative draws
    torch.manual_seed(0)
    theta = task.prior.sample((6,))
    ll = task.log_likelihood(theta, x).double()
    diff = ll - slcp.log_likelihood(theta, inf).double()
    tol = 1e-6 * ll.abs().max().item() + 1e-3  # float32 outputs
    assert torch.allclose(diff, diff[:1].expand(6), atol=tol)  # the distractors add a constant
    # the sbibm construction: one 92-d draw of a 20-component Student-t (df 2) mixture
    assert task.locs.shape == (20, 92) and task.scale_tril.shape == (20, 92, 92)
    assert torch.equal(task.scale_tril, torch.tril(task.scale_tril))
    assert (torch.diagonal(task.scale_tril, dim1=-2, dim2=-1) > 0).all()


def test_slcp_distractor_density_and_sampler_agree_with_scipy():
    # the benchmark's random triangular scale factors are too ill-conditioned for scipy's
    # covariance route, so check the code on well-conditioned factors of the same form
    task = tasks.get("slcp_distractors")
    g = torch.Generator().manual_seed(3)
    tril = 0.1 * torch.tril(torch.randn(20, 92, 92, generator=g, dtype=torch.float64), -1)
    task.scale_tril = 3.0 * (tril + torch.diag_embed(torch.exp(0.3 * torch.randn(20, 92, generator=g,
                                                                                   dtype=torch.float64))))
    theta = task.prior.sample((3000,))
    d = task.split(task.simulator(theta, seed=5))[1].double()
    L, mu = task.scale_tril.numpy(), task.locs.numpy()
    lp = np.stack([stats.multivariate_t(mu[k], L[k] @ L[k].T, df=2).logpdf(d[:20].numpy()) for k in range(20)], -1)
    want = special.logsumexp(lp, -1) - math.log(20)
    assert np.allclose(task.distractor_log_density(d[:20]).numpy(), want, rtol=1e-8, atol=1e-6)
    # under its own component, delta / 92 of a multivariate t_2 follows F(92, 2)
    sol = torch.linalg.solve_triangular(task.scale_tril, (d.unsqueeze(0) - task.locs.unsqueeze(1)).transpose(1, 2),
                                        upper=False)
    delta = (sol**2).sum(1).min(0).values  # the components are far apart: the nearest is the generating one
    assert stats.kstest(delta.numpy() / 92, stats.f(92, 2).cdf).pvalue > 1e-3


def test_slcp_distractors_small_reference_is_on_slcp_posterior():
    task = tasks.get("slcp_distractors", chains=100, warmup=30, thin=1, n_proposals=5000, reference="mcmc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = task.reference_samples(1, 500, cache=False)
    assert s.shape == (500, 5)
    assert torch.isfinite(task.log_posterior_unnorm(s, task.observation(1))).all()
    assert "rhat" in task.diagnostics


# -- slow: full references ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["bernoulli_glm", "sir", "lotka_volterra"])
def test_full_reference_passes_checks(name):
    task = tasks.get(name, reference="mcmc")
    s = task.reference_samples(1, 10_000, cache=False)
    assert task.diagnostics["rhat"].max() < 1.01 and task.diagnostics["ess"].min() >= 1000
    assert torch.isfinite(task.log_posterior_unnorm(s, task.observation(1))).all()


# -- jansen_rit --------------------------------------------------------------------------------
def test_jansen_rit_exact_linear_step_and_noise_covariance():
    from scipy.linalg import expm

    from telescope.tasks.jansen_rit import _flow, _noise_chol

    for k, h in [(100.0, 1 / 1024), (50.0, 1 / 512)]:
        M = np.array([[0.0, 1.0], [-k * k, -2 * k]])
        assert np.allclose(_flow(k, h).numpy(), expm(h * M), rtol=1e-12, atol=1e-12)
        L = _noise_chol(k, h).numpy()

        def entry(i, j):
            return integrate.quad(lambda s: (expm(s * M)[:, 1][i] * expm(s * M)[:, 1][j]), 0, h, epsabs=1e-16)[0]

        want = np.array([[entry(0, 0), entry(0, 1)], [entry(1, 0), entry(1, 1)]])
        assert np.allclose(L @ L.T, want, rtol=1e-8, atol=1e-16)


def test_jansen_rit_psd_is_welch_gain_shifts_it_and_alpha_rhythm():
    from scipy import signal

    from telescope.tasks.jansen_rit import PAPER_THETA, welch_log_psd

    task = tasks.get("jansen_rit", duration=4.0, burn_in=1.0)
    assert (task.dim_theta, task.dim_x) == (4, 33)
    th = torch.tensor([PAPER_THETA, [125.0, 220.0, 2000.0, 10.0], [10.0, 50.0, 100.0, -20.0],
                       [250.0, 500.0, 5000.0, 20.0]])
    x = task.signal(th, torch.Generator().manual_seed(0))
    assert x.shape == (4, 512) and torch.isfinite(x).all()  # stable at the corners of the prior
    f, p = signal.welch(x.numpy(), fs=128, nperseg=64)
    assert np.allclose(welch_log_psd(x).numpy(), np.log10(p), atol=1e-10)
    s = torch.cat([task.simulator(th[:1], seed=7), task.simulator(th[1:2], seed=7)]).double()  # same noise
    assert torch.allclose(s[1] - s[0], torch.full((33,), 10 / 5, dtype=torch.float64), atol=1e-4)
    assert 8.0 <= f[int(s[0].argmax())] <= 12.0  # the paper's theta gives an alpha rhythm
    raw = tasks.get("jansen_rit", summary=False, fix_gain=True, duration=1.0, burn_in=0.25)
    assert (raw.dim_theta, raw.dim_x) == (3, 128) and raw.reference_kind is None
    with pytest.raises(NotImplementedError):
        raw.reference_samples(1, 10)
    with pytest.raises(ValueError, match="dt"):
        tasks.get("jansen_rit", dt=0.003)


def test_cli_regenerate_rejects_unknown_and_reference_free_tasks(capsys):
    from telescope.cli import main

    assert main(["tasks", "--regenerate", "sir_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'sir_model'" in err and "lotka_volterra" in err
    assert main(["tasks", "--regenerate", "jansen_rit"]) == 2
    assert "no reference posterior" in capsys.readouterr().err
