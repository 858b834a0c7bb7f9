"""Benchmark tasks: simulators, exact likelihoods and reference posteriors checked against truths."""

from __future__ import annotations

import math

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
    x1 = task.simulator(theta, seed=3)
    x2 = task.simulator(theta, seed=3)
    x3 = task.simulator(theta, seed=4)
    assert x1.shape == (64, task.dim_x) and x1.dtype == torch.float32
    assert torch.isfinite(x1).all()
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)
    # the generator form: same noise, same x
    assert task.simulator.is_generator
    u = task.simulator.sample_noise(64, 7)
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


def test_reference_samples_are_cached(tmp_path):
    task = tasks.get("gaussian_mixture")
    s1 = task.reference_samples(3, 500)
    assert list((tmp_path / "cache" / "references" / "gaussian_mixture").glob("obs3_n500.pt"))
    s2 = task.reference_samples(3, 500)
    assert torch.equal(s1, s2)
    assert s1.shape == (500, 2) and s1.dtype == torch.float32


# -- gaussian_linear -------------------------------------------------------------------------
def test_gaussian_linear_analytic_posterior_matches_conjugate_formula():
    task = tasks.get("gaussian_linear")
    x = task.observation(2).double()
    mean, cov = task.posterior_params(x)
    # brute force: condition the joint Gaussian of (theta, x) on x
    s0 = 0.1 * torch.eye(10, dtype=torch.float64)
    sx = s0 + 0.1 * torch.eye(10, dtype=torch.float64)
    gain = s0 @ torch.linalg.inv(sx)
    assert torch.allclose(mean, gain @ x, atol=1e-10)
    assert torch.allclose(cov, s0 - gain @ s0, atol=1e-10)
    assert torch.allclose(mean, x / 2, atol=1e-10)  # equal variances: the posterior mean halves x
    s = task.reference_samples(2, 20_000).double()
    assert torch.allclose(s.mean(0), mean, atol=0.01)  # standard error 0.0016
    assert torch.allclose(torch.cov(s.T), cov, atol=0.004)


def test_gaussian_linear_likelihood_is_the_gaussian_density():
    task = tasks.get("gaussian_linear")
    theta, x = task.prior.sample((50,)), task.observation(1)
    ref = torch.distributions.MultivariateNormal(theta, 0.1 * torch.eye(10)).log_prob(x)
    assert torch.allclose(task.log_likelihood(theta, x), ref, atol=1e-4)


# -- gaussian_linear_uniform -----------------------------------------------------------------
def test_gaussian_linear_uniform_reference_is_the_truncated_gaussian():
    task = tasks.get("gaussian_linear_uniform")
    x = task.observation(1).double().numpy()  # has coordinates outside [-1, 1]
    s = task.reference_samples(1, 20_000).double().numpy()
    assert (np.abs(s) <= 1).all()
    sd = math.sqrt(0.1)
    dist = stats.truncnorm((-1 - x) / sd, (1 - x) / sd, loc=x, scale=sd)
    assert np.allclose(s.mean(0), dist.mean(), atol=0.012)
    assert np.allclose(s.std(0), dist.std(), atol=0.012)
    for j in range(10):  # Kolmogorov-Smirnov per coordinate
        assert stats.kstest(s[:5000, j], dist.cdf[j] if False else stats.truncnorm(
            (-1 - x[j]) / sd, (1 - x[j]) / sd, loc=x[j], scale=sd).cdf).pvalue > 1e-3


# -- two_moons -------------------------------------------------------------------------------
def _grid_integral(task, theta, centre, half, points=801):
    g = torch.linspace(-half, half, points, dtype=torch.float64)
    xx, yy = torch.meshgrid(centre[0] + g, centre[1] + g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    logp = torch.stack([task.log_likelihood(theta[None], p) for p in pts.split(1)]) if False else None
    lp = torch.cat([_loglik_many_x(task, theta, chunk) for chunk in pts.split(20_000)])
    h = (g[1] - g[0]).item()
    return lp.double().exp().sum().item() * h * h, pts, lp


def _loglik_many_x(task, theta, xs):
    # the likelihood depends on x - f(theta) only through (x, theta) pairs: evaluate one x per row
    return torch.stack([task.log_likelihood(theta[None].double(), xi) for xi in xs]).reshape(-1) if xs.shape[0] < 2 \
        else _pairwise(task, theta, xs)


def _pairwise(task, theta, xs):
    # theta fixed, many x: loop-free through the symmetry of the tasks' likelihood code paths
    if task.name == "two_moons":
        from telescope.tasks.two_moons import _mean_map
        shift = _mean_map(theta.double()[None])[0]
        # p(x | theta) = density of p at x - f(theta): evaluate with theta = 0 (f(0) = 0) at x - f(theta)
        return task.log_likelihood(torch.zeros(xs.shape[0], 2, dtype=torch.float64),
                                   torch.zeros(2)) * 0 + _two_moons_p_density(xs - shift)
    # gaussian_mixture: the likelihood is symmetric in x - theta
    return task.log_likelihood(xs, theta)


def _two_moons_p_density(v):
    task = tasks.get("two_moons")
    # the likelihood at theta = 0 is the density of p
    return torch.stack([task.log_likelihood(torch.zeros(1, 2), vi)[0] for vi in v]) if v.shape[0] < 2 else \
        task.log_likelihood(torch.zeros(1, 2), torch.zeros(2)).new_tensor(
            [float("nan")]).expand(v.shape[0])
