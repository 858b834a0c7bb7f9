"""Tall-data sampling with non-Gaussian priors (issue 22), checked against exact tall posteriors.

The single-observation scores here are EXACT (a diffused truncated normal: box-uniform prior,
Gaussian likelihood), so every tolerance is about the sampler; the trained-network numbers are
in benchmarks/README_tall.md.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import telescope as ts
from telescope.diffusion import VPSchedule
from telescope.samplers.prior_scores import (
    DiffusedFlat,
    DiffusedGaussian,
    DiffusedProduct,
    DiffusedUniform,
    diffused_prior,
    exact_kernel_prior,
    uniform_score_std,
)
from telescope.samplers.tall import TallSampler, auto_settings, prior_family, split_check
from telescope.samplers.tall.refine import truncated_mean, untruncated_mean
from telescope.samplers.unconstrained import DiffusedLogistic, Logistic, LogitBox


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class BoxModel:
    """theta ~ U[-1, 1]^3, x = theta + sigma N(0, I): exact diffused single-observation scores, exact tall posterior."""

    def __init__(self, theta, sigma=(0.1, 0.4, 1.5), n=32, seed=1):
        self.sigma = torch.tensor(sigma, dtype=torch.float64)
        self.lo, self.hi = -torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        g = _gen(seed)
        self.x = (torch.tensor(theta, dtype=torch.float64) + self.sigma * torch.randn(n, 3, generator=g,
                                                                                   dtype=torch.float64)).float()
        self.schedule = VPSchedule()
        self.prior = DiffusedUniform(self.lo, self.hi)

    def eps_set(self, x):
        mu, s2 = x.double(), self.sigma ** 2

        def eps(z, t):
            a = float(self.schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64)))
            v = 1.0 - a
            zd = z.double()
            sp2 = 1.0 / (1.0 / s2 + a / v)
            mp = sp2 * (mu / s2 + math.sqrt(a) * zd / v)
            sp = sp2.sqrt()
            score = -(zd - math.sqrt(a) * mu) / (a * s2 + v) \
                + uniform_score_std((mp - self.lo) / sp, (mp - self.hi) / sp) / sp * (sp2 * math.sqrt(a) / v)
            return (-math.sqrt(v) * score).float()

        return eps

    def exact_moments(self, n):
        m, sd = self.x[:n].double().mean(0).numpy(), (self.sigma / math.sqrt(n)).numpy()
        a, b = (-1 - m) / sd, (1 - m) / sd
        return stats.truncnorm.mean(a, b, loc=m, scale=sd), stats.truncnorm.std(a, b, loc=m, scale=sd)

    def sample(self, n, k, **kw):
        s = TallSampler(self.eps_set(self.x[:n]), n, self.prior, generator=_gen(0), **kw).sample(k)
        return s[((s >= -1) & (s <= 1)).all(-1)]


def _errors(model, n, s):
    mean, sd = model.exact_moments(n)
    return (np.abs(s.mean(0).numpy() - mean) / sd).max(), (np.abs(s.std(0).numpy() / sd - 1)).max()


# -- prior kernels -----------------------------------------------------------------------------
def test_exact_kernel_prior_replaces_uniform_parts_only():
    p = DiffusedProduct([DiffusedUniform(torch.zeros(2), torch.ones(2)), DiffusedGaussian(torch.zeros(1), torch.ones(1))])
    q = exact_kernel_prior(p)
    assert isinstance(q.parts[0], DiffusedFlat) and isinstance(q.parts[1], DiffusedGaussian)
    assert torch.equal(q.precision0[:2, :2], torch.zeros(2, 2)) and float(q.precision0[2, 2]) == 1.0
    z = torch.randn(4, 3)
    assert torch.equal(q.score(z, 0.5)[:, :2], torch.zeros(4, 2))
    assert torch.allclose(q.score(z, 0.5)[:, 2], p.score(z, 0.5)[:, 2])


def test_prior_family_and_auto_settings():
    box = DiffusedUniform(-torch.ones(3), torch.ones(3))
    gauss = DiffusedGaussian(torch.zeros(3), torch.ones(3))
    assert prior_family(box) == "uniform" and prior_family(gauss) == "gaussian"
    assert prior_family(DiffusedProduct([box, gauss])) == "uniform"
    assert prior_family(DiffusedLogistic(torch.zeros(2), torch.ones(2))) == "learned"
    for p in (box, gauss):
        assert auto_settings(p, 1)["method"] == "gauss"
        assert auto_settings(p, 32)["method"] == "gauss"
    assert auto_settings(box, 32)["pilot_samples"] == 1024 and "pilot_samples" not in auto_settings(gauss, 32)
    assert auto_settings(box, 8)["stop_t"] == 0.05 and auto_settings(box, 8)["stop_cov"] == "pilot"
    assert "stop_t" not in auto_settings(gauss, 8) and "stop_t" not in auto_settings(box, 1)


def test_new_options_are_validated():
    m = BoxModel((0.3, -0.5, 0.6))
    eps = m.eps_set(m.x[:4])
    with pytest.raises(ValueError, match="prior_kernel"):
        TallSampler(eps, 4, m.prior, prior_kernel="moment")
    with pytest.raises(ValueError, match="fnpse"):
        TallSampler(eps, 4, m.prior, method="fnpse", refine_steps=3)
    with pytest.raises(ValueError, match="refine_steps"):
        TallSampler(eps, 4, m.prior, refine_steps=-1)
    with pytest.raises(ValueError, match="stop_t"):
        TallSampler(eps, 4, m.prior, stop_t=1.5)
    with pytest.raises(ValueError, match="stop_kernel"):
        TallSampler(eps, 4, m.prior, stop_kernel="exact")


def test_switches_off_by_default_give_the_same_samples():
    m = BoxModel((0.3, -0.5, 0.6))
    eps = m.eps_set(m.x[:4])
    kw = dict(steps=10, pilot_samples=32, pilot_steps=5)
    a = TallSampler(eps, 4, m.prior, generator=_gen(3), **kw).sample(20)
    b = TallSampler(eps, 4, m.prior, generator=_gen(3), prior_kernel="gaussian", corrector_steps=0, refine_steps=0,
                    stop_t=0.0, **kw).sample(20)
    assert torch.equal(a, b)


# -- against the exact tall posterior (exact single-observation scores) -------------------------
@pytest.mark.parametrize("n", [8, 32])
def test_refinement_recovers_the_truncated_tall_posterior(n):
    m = BoxModel((0.3, -0.5, 0.6))
    s = m.sample(n, 800, spacing="quadratic", refine_steps=30)
    mean_err, sd_err = _errors(m, n, s)
    assert mean_err < 0.2 and sd_err < 0.12, (mean_err, sd_err)


def test_refinement_where_the_box_binds_beats_plain_gauss():
    m = BoxModel((0.97, -0.99, 0.9))
    plain = _errors(m, 32, m.sample(32, 600))
    refined = _errors(m, 32, m.sample(32, 600, spacing="quadratic", refine_steps=30))
    assert refined[0] < 0.3 and refined[1] < 0.2, refined
    assert max(refined) < max(plain), (plain, refined)


def test_gaussian_kernel_tail_stays_close_for_a_gaussian_model():
    # box so wide it never binds: the tall posterior is Gaussian, N(mean x, sigma^2 / n).  The tail is
    # exact given the state at stop_t; the 50-step DDIM state there is somewhat too wide, hence 20 %.
    m = BoxModel((0.1, -0.2, 0.3), sigma=(0.3, 0.5, 0.8), n=16)
    m.lo, m.hi = -20 * torch.ones(3, dtype=torch.float64), 20 * torch.ones(3, dtype=torch.float64)
    m.prior = DiffusedUniform(m.lo, m.hi)
    s = TallSampler(m.eps_set(m.x), 16, m.prior, generator=_gen(0), stop_t=0.05, stop_cov="pilot",
                    prior_kernel="exact", pilot_samples=512).sample(2000)
    sd = m.sigma / 4
    assert (((s.double().mean(0) - m.x.double().mean(0)) / sd).abs() < 0.15).all()
    assert ((s.double().std(0) / sd - 1).abs() < 0.2).all()


# -- the box-truncated kernel of a stopped path ---------------------------------------------------
def test_truncated_mean_matches_scipy_and_is_inverted():
    mu = torch.tensor([-3.0, 0.0, 5.0, -40.0, 0.3], dtype=torch.float64)
    sd = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.01], dtype=torch.float64)
    lo = torch.tensor([-1.0, -1.0, -1.0, -1.0, -math.inf], dtype=torch.float64)
    hi = torch.tensor([1.0, 1.0, math.inf, 1.0, math.inf], dtype=torch.float64)
    got = truncated_mean(mu, sd, lo, hi)
    want = stats.truncnorm.mean((lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd)
    assert np.allclose(got.numpy(), want, rtol=1e-7, atol=1e-9), (got, want)
    back = untruncated_mean(got, sd, lo, hi)
    assert torch.allclose(back[:3], mu[:3], atol=1e-6) and float(back[4]) == 0.3
    assert float(back[3]) < -20  # far outside: only bracketed (the truncated mean there is lo + ~sd^2 / |mu|)


def test_truncated_kernel_draw_has_the_truncated_normal_moments():
    # the kernel given its TRUNCATED mean: draws must follow N(mu, K) cut by the box (K diagonal here)
    m = BoxModel((0.97, -0.99, 0.9))
    sampler = TallSampler(m.eps_set(m.x[:4]), 4, m.prior, generator=_gen(0), stop_t=0.05, stop_kernel="truncated",
                          pilot_samples=32, pilot_steps=5)
    mu = torch.tensor([0.9, -1.3, 0.2], dtype=torch.float64)
    k = torch.tensor([0.05, 0.2, 0.6], dtype=torch.float64)
    tmean = truncated_mean(mu, k, m.lo, m.hi)
    draws = sampler._truncated_draw(tmean.float().expand(20000, 3).clone(), torch.diag(k.double() ** 2))
    assert bool(((draws >= -1) & (draws <= 1)).all())
    a, b = ((m.lo - mu) / k).numpy(), ((m.hi - mu) / k).numpy()
    want_m = stats.truncnorm.mean(a, b, loc=mu.numpy(), scale=k.numpy())
    want_s = stats.truncnorm.std(a, b, loc=mu.numpy(), scale=k.numpy())
    assert np.all(np.abs(draws.double().mean(0).numpy() - want_m) < 0.03 * want_s), (draws.mean(0), want_m)
    assert np.all(np.abs(draws.double().std(0).numpy() / want_s - 1) < 0.03), (draws.std(0), want_s)


def test_npse_auto_on_a_box_prior_is_gauss_with_the_kernel_stop():
    prior = ts.BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    g = torch.Generator().manual_seed(0)
    theta = -2 + 4 * torch.rand(300, 2, generator=g)
    x = theta + 0.3 * torch.randn(300, 2, generator=g)
    est = ts.NPSE(prior, hidden=(32, 32), embed=16, embed_hidden=(16,)).fit(theta, x, max_epochs=2,
                                                                            progress_bar=False)
    kw = dict(seed=0, steps=5, pilot_steps=5, max_time=30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = est.sample(x[:5], 20, method="auto", **kw)
        b = est.sample(x[:5], 20, method="gauss", pilot_samples=1024, stop_t=0.05, stop_cov="pilot", **kw)
    assert torch.equal(a, b)


# -- the reference-free self-check --------------------------------------------------------------
def test_split_check_passes_exact_and_flags_wrong_samples():
    g = _gen(0)
    sd = torch.tensor([0.1, 0.2, 0.3])

    def post(k):  # Gaussian likelihood, flat prior: precision grows like k
        return 0.5 + sd / math.sqrt(k) * torch.randn(4000, 3, generator=g)

    ok = split_check(post(16), post(8), post(8))
    assert ok["ok"] and 0.9 < ok["sd_ratio_min"] <= ok["sd_ratio_max"] < 1.1 and ok["mean_shift"] < 0.2
    wide = split_check(0.5 + 1.6 * (post(16) - 0.5), post(8), post(8))  # spread that does not shrink with n
    assert not wide["ok"] and wide["sd_ratio_max"] > 1.4
    shifted = split_check(post(16) + 2 * sd / 4, post(8), post(8))
    assert not shifted["ok"] and shifted["mean_shift"] > 1.5


def test_npse_auto_and_tall_check_run_on_a_small_network():
    task = ts.tasks.get("gaussian_linear", dim=2)
    theta, x = ts.simulate(task.simulator, task.prior, 300, seed=0, progress_bar=False)
    est = ts.NPSE(task.prior, hidden=(32, 32), embed=16, embed_hidden=(16,)).fit(theta, x, max_epochs=2,
                                                                                 progress_bar=False)
    xs = x[:6]
    kw = dict(seed=0, steps=5, pilot_steps=5, pilot_samples=16)
    a = est.sample(xs, 20, method="auto", **kw)
    b = est.sample(xs, 20, method="gauss", **kw)
    assert torch.equal(a, b)  # auto is GAUSS for a Gaussian prior (auto_settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = est.tall_check(xs, 200, **kw)
    assert set(r) >= {"sd_ratio_min", "sd_ratio_max", "mean_shift", "ok", "samples"} and r["samples"].shape == (200, 2)
    with pytest.raises(ValueError, match="at least 4"):
        est.tall_check(xs[:3], 10)


# -- unconstrained space ------------------------------------------------------------------------
def test_logit_box_round_trip_and_prior():
    box = LogitBox(ts.BoxUniform([-1.0, 0.0], [1.0, 5.0]))
    theta = torch.tensor([[0.3, 4.9], [-0.99, 0.01]])
    assert torch.allclose(box.to_theta(box.to_u(theta)), theta, atol=1e-5)
    assert isinstance(box.prior, Logistic)
    p = diffused_prior(box.prior, loc=torch.tensor([0.5, -0.5]), scale=torch.tensor([2.0, 1.0]))
    assert isinstance(p, DiffusedLogistic)
    assert torch.allclose(p.loc, torch.tensor([-0.25, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.999, 0.9, 0.5, 0.05])
def test_diffused_logistic_score_matches_quadrature(alpha):
    p = DiffusedLogistic(torch.tensor([0.3]), torch.tensor([0.7]))
    u = torch.linspace(-40, 40, 400001, dtype=torch.float64)
    y = (u - 0.3) / 0.7
    log_lam = -torch.nn.functional.softplus(y) - torch.nn.functional.softplus(-y)
    v = 1 - alpha
    for z in (-2.5, 0.1, 3.0):
        def logp(zz):
            return torch.logsumexp(log_lam - 0.5 * (zz - math.sqrt(alpha) * u) ** 2 / v, 0)
        h = 1e-4
        fd = float((logp(z + h) - logp(z - h)) / (2 * h))
        got = float(p.score(torch.tensor([[z]], dtype=torch.float64), alpha))
        assert abs(got - fd) < 2e-3 * max(1.0, abs(fd)), (alpha, z, got, fd)
