"""Benchmark tasks: simulators, exact likelihoods and reference posteriors checked against truths."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import telescope.tasks as tasks
from telescope.tasks.g_and_k import gk_log_density, gk_quantile, gk_quantile_derivative

ALL = ["gaussian_linear", "gaussian_linear_uniform", "two_moons", "slcp", "gaussian_mixture", "g_and_k"]


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TELESCOPE_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batched ops: threads only contend on shared CI cores
    yield
    torch.set_num_threads(threads)


def _grid2d(centre, half: float, points: int):
    """Square grid ``(points^2, 2)`` around ``centre`` and its cell area."""
    g = torch.linspace(-half, half, points, dtype=torch.float64)
    xx, yy = torch.meshgrid(centre[0] + g, centre[1] + g, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), (g[1] - g[0]).item() ** 2


def _density_on(task, theta, xs):
    """``p(x | theta)`` for one ``theta`` and many ``x`` (paired rows)."""
    return task.log_likelihood(theta.double().expand(xs.shape[0], -1), xs).double().exp()


# -- registry, observations, simulators ------------------------------------------------------
def test_registry_lists_all_tasks():
    names = tasks.list()
    for name in ALL:
        assert name in names
        assert isinstance(tasks.get(name), tasks.Task)


def test_unknown_task_raises_with_available_names():
    with pytest.raises(ValueError, match="nope") as err:
        tasks.get("nope")
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_simulator_shapes_and_reproducibility(name):
    task = tasks.get(name)
    theta = task.prior.sample((64,))
    assert theta.shape == (64, task.dim_theta)
    x1, x2, x3 = (task.simulator(theta, seed=s) for s in (3, 3, 4))
    assert x1.shape == (64, task.dim_x) and x1.dtype == torch.float32
    assert torch.isfinite(x1).all()
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)
    assert task.simulator.is_generator  # explicit noise: G(theta, u) is deterministic
    u = task.simulator.sample_noise(64, 7)
    assert torch.equal(u, task.simulator.sample_noise(64, 7))
    assert torch.equal(task.simulator.run(theta, u), task.simulator.run(theta, u))


@pytest.mark.parametrize("name", ALL)
def test_observations_stable_and_in_support(name):
    a, b = tasks.get(name), tasks.get(name)
    for i in (1, 10):
        assert torch.equal(a.observation(i), b.observation(i))
        assert torch.equal(a.true_parameters(i), b.true_parameters(i))
        assert a.observation(i).shape == (a.dim_x,)
        assert torch.isfinite(a.prior.log_prob(a.true_parameters(i)))
        assert torch.isfinite(a.log_likelihood(a.true_parameters(i)[None], a.observation(i))).all()
    assert not torch.equal(a.observation(1), a.observation(2))
    with pytest.raises(ValueError, match="1..10"):
        a.observation(11)
    assert a.reference_kind in ("analytic", "rejection", "mcmc")


@pytest.mark.parametrize("name", ALL)
def test_likelihood_accepts_one_or_paired_observations(name):
    task = tasks.get(name)
    theta = task.prior.sample((5,))
    x = task.simulator(theta, seed=0)
    paired = task.log_likelihood(theta, x)
    one_by_one = torch.stack([task.log_likelihood(theta[i : i + 1], x[i])[0] for i in range(5)])
    assert paired.shape == (5,)
    assert torch.allclose(paired, one_by_one, atol=1e-5)


def test_reference_samples_are_cached(tmp_path):
    task = tasks.get("gaussian_mixture", observations="telescope")
    s1 = task.reference_samples(3, 500)
    assert (tmp_path / "cache" / "references" / "gaussian_mixture" / "obs3_n500.pt").exists()
    assert torch.equal(s1, task.reference_samples(3, 500))
    assert torch.equal(s1, tasks.get("gaussian_mixture", observations="telescope").reference_samples(3, 500, cache=False))
    assert s1.shape == (500, 2) and s1.dtype == torch.float32


# -- gaussian_linear -------------------------------------------------------------------------
def test_gaussian_linear_analytic_posterior_matches_conjugate_formula():
    task = tasks.get("gaussian_linear", observations="telescope")
    x = task.observation(2).double()
    mean, cov = task.posterior_params(x)
    # brute force: condition the joint Gaussian of (theta, x) on x
    s0 = 0.1 * torch.eye(10, dtype=torch.float64)
    gain = s0 @ torch.linalg.inv(s0 + 0.1 * torch.eye(10, dtype=torch.float64))
    assert torch.allclose(mean, gain @ x, atol=1e-10)
    assert torch.allclose(cov, s0 - gain @ s0, atol=1e-10)
    assert torch.allclose(mean, x / 2, atol=1e-10)  # equal variances: the posterior mean halves x
    s = task.reference_samples(2, 20_000).double()
    assert torch.allclose(s.mean(0), mean, atol=0.01)  # standard error 0.0016
    assert torch.allclose(torch.cov(s.T), cov, atol=0.004)


def test_gaussian_linear_likelihood_is_the_gaussian_density():
    task = tasks.get("gaussian_linear", observations="telescope")
    theta, x = task.prior.sample((50,)), task.observation(1)
    ref = torch.distributions.MultivariateNormal(theta, 0.1 * torch.eye(10)).log_prob(x)
    assert torch.allclose(task.log_likelihood(theta, x), ref, atol=1e-4)


# -- gaussian_linear_uniform -----------------------------------------------------------------
def test_gaussian_linear_uniform_reference_is_the_truncated_gaussian():
    task = tasks.get("gaussian_linear_uniform", observations="telescope")
    x = task.observation(1).double().numpy()
    assert (np.abs(x) > 1).any()  # some coordinates outside the box: truncation matters
    s = task.reference_samples(1, 20_000).double().numpy()
    assert (np.abs(s) <= 1).all()
    sd = math.sqrt(0.1)
    for j in range(10):
        dist = stats.truncnorm((-1 - x[j]) / sd, (1 - x[j]) / sd, loc=x[j], scale=sd)
        assert abs(s[:, j].mean() - dist.mean()) < 0.012
        assert abs(s[:, j].std() - dist.std()) < 0.012
        assert stats.kstest(s[:4000, j], dist.cdf).pvalue > 1e-3


# -- two_moons -------------------------------------------------------------------------------
def _moon_centre(theta):
    t1, t2 = theta.tolist()
    return torch.tensor([0.25 - abs(t1 + t2) / math.sqrt(2), (t2 - t1) / math.sqrt(2)], dtype=torch.float64)


@pytest.mark.parametrize("theta", [[0.3, -0.5], [-0.8, 0.6]])
def test_two_moons_likelihood_integrates_to_one_and_matches_simulations(theta):
    task = tasks.get("two_moons", observations="telescope")
    theta = torch.tensor(theta)
    centre = _moon_centre(theta)
    xs, area = _grid2d(centre, 0.16, 1201)
    p = _density_on(task, theta, xs)
    assert abs(p.sum().item() * area - 1) < 2e-3
    # mass in angle x radius cells around the centre: density vs 100k simulations
    def cell(pts):
        v = pts.double() - centre
        a = torch.atan2(v[:, 1], v[:, 0])
        r = v.norm(dim=-1)
        return torch.bucketize(a, torch.tensor([-0.8, 0.0, 0.8], dtype=torch.float64)) * 3 + \
            torch.bucketize(r, torch.tensor([0.095, 0.105], dtype=torch.float64))
    mass = torch.zeros(12, dtype=torch.float64).index_add_(0, cell(xs), p * area)
    sims = task.simulator(theta.expand(100_000, -1), seed=11)
    freq = torch.bincount(cell(sims), minlength=12).double() / 1e5
    assert (mass - freq).abs().max() < 0.006  # standard errors <= 0.0016


def test_two_moons_reference_matches_importance_weighted_prior():
    task = tasks.get("two_moons", observations="telescope")
    ref = task.reference_samples(1, 10_000).double()
    assert (ref.abs() <= 1).all()
    g = torch.Generator().manual_seed(0)
    theta = 2 * torch.rand(600_000, 2, generator=g, dtype=torch.float64) - 1
    w = torch.softmax(task.log_likelihood(theta, task.observation(1)).double(), 0)
    assert 1 / (w**2).sum() > 1000  # effective sample size of the check
    assert torch.allclose(ref.mean(0), (w[:, None] * theta).sum(0), atol=0.03)
    # the posterior is bimodal in theta_1 + theta_2 (the two preimages): compare the weight of
    # each mode, then quantiles of |theta_1 + theta_2| and theta_2 - theta_1, which are unimodal
    assert abs((ref.sum(-1) > 0).double().mean() - w[theta.sum(-1) > 0].sum()) < 0.03
    for f in (lambda t: t.sum(-1).abs(), lambda t: t[:, 1] - t[:, 0]):
        v_ref, v_is = f(ref), f(theta)
        order = torch.argsort(v_is)
        cdf = torch.cumsum(w[order], 0)
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):
            is_q = v_is[order[torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64))]]
            assert abs(torch.quantile(v_ref, q) - is_q) < 0.02


# -- gaussian_mixture ------------------------------------------------------------------------
def test_gaussian_mixture_likelihood_integrates_to_one():
    task = tasks.get("gaussian_mixture", observations="telescope")
    theta = torch.tensor([1.0, -2.0])
    xs, area = _grid2d(theta.double(), 7.0, 701)
    p = _density_on(task, theta, xs)
    assert abs(p.sum().item() * area - 1) < 1e-3
    inner = (xs - theta.double()).norm(dim=-1) < 0.3  # chi-square(2) closed form of each component
    want = 0.5 * (1 - math.exp(-0.3**2 / 2)) + 0.5 * (1 - math.exp(-0.3**2 / (2 * 0.01)))
    assert abs((p[inner].sum() * area).item() - want) < 3e-3


def test_gaussian_mixture_reference_matches_closed_form():
    task = tasks.get("gaussian_mixture", observations="telescope")
    x = task.observation(8).double()
    assert ((x.abs() - 10).abs() > 3.8).all()  # far from the box edges: truncation negligible
    s = task.reference_samples(8, 20_000).double()
    assert torch.allclose(s.mean(0), x, atol=0.03)
    inner = ((s - x).norm(dim=-1) < 0.3).double().mean().item()
    want = 0.5 * (1 - math.exp(-0.3**2 / 2)) + 0.5 * (1 - math.exp(-0.3**2 / (2 * 0.01)))
    assert abs(inner - want) < 0.015
    assert (s.abs() <= 10).all()


# -- slcp ------------------------------------------------------------------------------------
def test_slcp_likelihood_and_simulator_are_the_stated_gaussian():
    task = tasks.get("slcp", observations="telescope")
    theta = torch.tensor([[0.5, -1.0, 1.2, -0.7, 0.8], [-2.0, 2.5, -0.4, 2.0, -1.5]])
    x = task.observation(3)
    for th in theta:
        s1, s2, rho = th[2] ** 2, th[3] ** 2, torch.tanh(th[4])
        cov = torch.tensor([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
        mvn = torch.distributions.MultivariateNormal(th[:2], cov)
        ref = mvn.log_prob(x.reshape(4, 2)).sum()
        assert torch.allclose(task.log_likelihood(th[None], x)[0], ref, rtol=1e-4, atol=1e-3)
        sims = task.simulator(th.expand(20_000, -1), seed=5).reshape(-1, 2).double()
        assert torch.allclose(sims.mean(0), th[:2].double(), atol=0.03 * max(s1, s2).item() + 0.01)
        assert torch.allclose(torch.cov(sims.T), cov.double(), rtol=0.05, atol=0.02 * max(s1, s2).item() ** 2)
    # symmetric in the signs of theta_3 and theta_4
    flipped = theta.clone()
    flipped[:, 2:4] *= -1
    assert torch.allclose(task.log_likelihood(theta, x), task.log_likelihood(flipped, x))


def test_slcp_reference_small_covers_all_four_modes():
    task = tasks.get("slcp", observations="telescope", chains=200, warmup=40, thin=1, n_proposals=20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short run: R-hat may exceed 1.05
        s = task.reference_samples(1, 1000, cache=False)
    assert s.shape == (1000, 5) and (s.abs() <= 3).all()
    assert torch.isfinite(task.log_posterior_unnorm(s, task.observation(1))).all()
    for j in (2, 3):
        assert abs((s[:, j] > 0).float().mean().item() - 0.5) < 0.06
    assert "rhat" in task.diagnostics


@pytest.mark.slow
def test_slcp_reference_converges_on_observation_1():
    task = tasks.get("slcp", observations="telescope")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        s = task.reference_samples(1, 10_000, cache=False)
    assert task.diagnostics["rhat"].max() < 1.05
    assert s.shape == (10_000, 5)
    for j in (2, 3):
        assert abs((s[:, j] > 0).float().mean().item() - 0.5) < 0.03


# -- g_and_k ---------------------------------------------------------------------------------
GK_THETAS = [
    [3.0, 1.0, 2.0, 1.2],  # monotone quantile function
    [3.0, 1.0, 2.0, 0.5],  # log k4 < -1/2: non-monotone, bounded support, two roots for most x
    [1.0, 2.0, 2.5, 0.05],  # very negative log k4
    [0.5, 0.4, 3.0, 1.6],  # heavy tails
]


def test_gk_quantile_special_cases_and_derivative():
    z = torch.linspace(-4, 4, 101, dtype=torch.float64)[None]
    theta = torch.tensor([[1.5, 2.0, 0.0, 1.0]], dtype=torch.float64)  # g = 0, k = 0: A + B z
    assert torch.allclose(gk_quantile(theta, z), 1.5 + 2.0 * z)
    theta = torch.tensor(GK_THETAS, dtype=torch.float64)
    assert torch.allclose(gk_quantile(theta, torch.zeros(4, 1, dtype=torch.float64))[:, 0], theta[:, 0])
    zz = z.expand(4, -1)
    h = 1e-6
    fd = (gk_quantile(theta, zz + h) - gk_quantile(theta, zz - h)) / (2 * h)
    assert torch.allclose(gk_quantile_derivative(theta, zz), fd, rtol=1e-5, atol=1e-6)
    # the documented form with the exponentials, written out
    a, b, g, k4 = theta.T[:, :, None]
    direct = a + b * (1 + 0.8 * (1 - torch.exp(-g * zz)) / (1 + torch.exp(-g * zz))) * (1 + zz**2) ** torch.log(k4) * zz
    assert torch.allclose(gk_quantile(theta, zz), direct)


def test_gk_density_of_the_normal_case():
    x = torch.linspace(-6, 6, 97, dtype=torch.float64)
    lp = gk_log_density(torch.tensor([[0.0, 1.0, 0.0, 1.0]]), x)[0]
    assert torch.allclose(lp, torch.distributions.Normal(0.0, 1.0).log_prob(x.float()).double(), atol=1e-6)


def _gk_breakpoints(theta):
    z = torch.linspace(-10, 10, 400_001, dtype=torch.float64)
    gz = gk_quantile(theta, z[None])[0]
    d = gz[1:] - gz[:-1]
    ext = gz[1:-1][(torch.sign(d[1:]) * torch.sign(d[:-1])) < 0]
    return z, gz, sorted(set([gz.min().item(), gz.max().item(), theta[0, 0].item()] + ext.tolist()))


def _gk_mass(theta, a, b, points=1001):
    """``P(a < X < b)`` by quadrature of the density with the substitution x = a + (b-a) sin^2(pi s / 2),
    which turns the inverse-square-root singularities at turning points placed at a or b into a smooth
    integrand in s."""
    s = (torch.arange(points, dtype=torch.float64) + 0.5) / points  # midpoint rule: no endpoint evaluations
    x = a + (b - a) * torch.sin(math.pi * s / 2) ** 2
    w = (b - a) * math.pi / 2 * torch.sin(math.pi * s)
    return (gk_log_density(theta, x)[0].exp() * w).mean().item()


@pytest.mark.parametrize("theta", GK_THETAS)
def test_gk_density_integrates_to_one_and_matches_the_quantile_function(theta):
    theta = torch.tensor([theta], dtype=torch.float64)
    z, gz, bps = _gk_breakpoints(theta)
    total = sum(_gk_mass(theta, a, b) for a, b in zip(bps[:-1], bps[1:]))
    assert abs(total - 1) < 5e-5
    # P(a < X < b) against the normal measure of {z : a < G(z) < b} on a fine z-grid
    phi = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    qs = torch.quantile(gz[::50], torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64))
    edges = sorted(set(bps + qs.tolist()))
    for a, b in zip(edges[:-1], edges[1:]):
        want = phi[(gz > a) & (gz < b)].sum().item()
        assert abs(_gk_mass(theta, a, b) - want) < 1e-4


@pytest.mark.parametrize("theta", [GK_THETAS[0], GK_THETAS[1]])
def test_gk_density_matches_histogram_of_simulations(theta):
    task = tasks.get("g_and_k", n_draws=1)
    th = torch.tensor([theta])
    x = task.simulator(th.expand(200_000, -1), seed=2)[:, 0].double()
    theta64 = th.double()
    edges = torch.quantile(x[:20_000], torch.linspace(0.02, 0.98, 13, dtype=torch.float64)).tolist()
    _, _, bps = _gk_breakpoints(theta64)
    for a, b in zip(edges[:-1], edges[1:]):
        inner = [p for p in bps if a < p < b]  # split at turning points to keep the quadrature exact
        cuts = [a] + inner + [b]
        mass = sum(_gk_mass(theta64, lo, hi, points=401) for lo, hi in zip(cuts[:-1], cuts[1:]))
        freq = ((x > a) & (x < b)).double().mean().item()
        assert abs(mass - freq) < 4 * math.sqrt(freq * (1 - freq) / 200_000) + 1e-3


def test_gk_likelihood_is_the_sum_over_draws():
    task = tasks.get("g_and_k", n_draws=10)
    theta = torch.tensor(GK_THETAS)
    x = task.observation(1)
    per_draw = gk_log_density(theta.double(), x.double())
    assert per_draw.shape == (4, 10)
    ll = task.log_likelihood(theta, x)
    finite = torch.isfinite(ll)
    assert torch.allclose(ll[finite].double(), per_draw.sum(-1)[finite], rtol=1e-5)
    assert torch.isfinite(task.log_likelihood(task.true_parameters(1)[None], x)).all()
    # outside the bounded support of a non-monotone quantile function the density is 0
    lp = gk_log_density(torch.tensor([[3.0, 1.0, 2.0, 0.5]]), torch.tensor([2.0, 5.0]))
    assert torch.isneginf(lp).all()


def test_gk_reference_small_run():
    task = tasks.get("g_and_k", chains=50, warmup=10, population=4, n_proposals=2000, is_proposals=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = task.reference_samples(2, 200, cache=False)
    assert s.shape == (200, 4)
    assert torch.isfinite(task.log_posterior_unnorm(s, task.observation(2))).all()
    assert task.diagnostics["ess"] > 50
    assert task.cache_key() == "g_and_k_n10"


@pytest.mark.slow
@pytest.mark.parametrize("i", [1, 2])
def test_gk_reference_is_reproducible_across_seeds(i):
    """Two independent reference runs (non-monotone obs 1, monotone obs 2) agree."""
    task = tasks.get("g_and_k")
    x = task.observation(i)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        a = task._reference(x, 10_000, seed=11).double()
        assert task.diagnostics["ess"] >= 20_000
        b = task._reference(x, 10_000, seed=22).double()
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    for j in range(4):
        spread = (torch.quantile(a[:, j], 0.95) - torch.quantile(a[:, j], 0.05)).item()
        assert (torch.quantile(a[:, j], qs) - torch.quantile(b[:, j], qs)).abs().max() < 0.05 * spread
    assert torch.isfinite(task.log_posterior_unnorm(a, x)).all()
