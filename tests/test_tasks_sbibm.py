"""sbibm's stored observations, true parameters and references for the ten benchmark tasks (issue 21, item 7)."""

from __future__ import annotations

import bz2
import csv
import io

import numpy as np
import pytest
import torch

from telescope import tasks
from telescope.tasks._sbibm import data_dir


def _csv(path) -> np.ndarray:
    """Parse a sbibm CSV with the standard library (independent of the task's own reader)."""
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode())))
    return np.array([[float(v) for v in r] for r in rows[1:]])


SEVEN = [("two_moons", "two_moons", "observation.csv"), ("gaussian_mixture", "gaussian_mixture", "observation.csv"),
         ("gaussian_linear", "gaussian_linear", "observation.csv"),
         ("gaussian_linear_uniform", "gaussian_linear_uniform", "observation.csv"),
         ("slcp", "slcp", "observation.csv"), ("slcp_distractors", "slcp", "observation_distractors.csv"),
         ("lotka_volterra", "lotka_volterra", "observation.csv")]
ALL = [("sir", "sir", "observation.csv"), ("bernoulli_glm", "bernoulli_glm", "observation.csv"),
       ("bernoulli_glm_raw", "bernoulli_glm", "observation_raw.csv"), *SEVEN]


@pytest.mark.parametrize("name,folder,obs_file", ALL)
def test_observations_and_true_parameters_are_sbibms_files(name, folder, obs_file):
    task = tasks.get(name)
    assert task.observation_set == "sbibm" and task.reference_source == "sbibm"
    for i in range(1, 11):
        d = data_dir(folder) / f"num_observation_{i}"
        x = task.observation(i)
        assert x.shape == (task.dim_x,) and x.dtype == torch.float32
        assert np.array_equal(x.numpy(), _csv(d / obs_file)[0].astype(np.float32))
        assert np.array_equal(task.true_parameters(i).numpy(), _csv(d / "true_parameters.csv")[0].astype(np.float32))
        if hasattr(task, "tall_observation"):
            assert task.tall_observation(i, 3).shape == (3, task.dim_x)
            assert torch.equal(task.tall_observation(i, 3)[0], x)


@pytest.mark.parametrize("name,folder,obs_file", SEVEN)
def test_reference_samples_are_sbibms_files_with_the_right_shape(name, folder, obs_file):
    task = tasks.get(name)
    assert task.cache_key() == f"{name}-sbibm"
    for i in (1, 10):
        ref = task.reference_samples(i, 10_000)
        assert ref.shape == (10_000, task.dim_theta) and ref.dtype == torch.float32 and torch.isfinite(ref).all()
        stored = _csv(data_dir(folder) / f"num_observation_{i}" / "reference_posterior_samples.csv.bz2")
        assert np.array_equal(ref.numpy(), stored.astype(np.float32))
        assert torch.equal(task.reference_samples(i, 50), ref[:50])
        assert torch.isfinite(task.log_posterior_unnorm(ref[:500], task.observation(i))).all()  # inside the prior


def test_values_written_out_from_the_sbibm_wheel():
    """A few values copied by hand from sbibm 1.1.0's files, so a changed data file is caught too."""
    sir, glm, raw = tasks.get("sir"), tasks.get("bernoulli_glm"), tasks.get("bernoulli_glm_raw")
    assert sir.observation(1).tolist() == [0.0, 1.0, 352.0, 40.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert torch.allclose(sir.true_parameters(1), torch.tensor([0.61479264, 0.19172086]))
    assert torch.allclose(glm.observation(1)[:4], torch.tensor([56.0, 3.32306, 14.356438, 11.104893]))
    assert torch.allclose(glm.true_parameters(1)[:3], torch.tensor([1.215716, 2.1386335, 3.6156292]))
    assert raw.observation(1).sum() == 56  # the spike count is the first summary
    assert torch.allclose(glm.design[:3, 1].float(), torch.tensor([0.4967, -0.1383, 0.6477]), atol=1e-4)
    assert tasks.get("two_moons").observation(1).tolist() == pytest.approx([-0.6396706, 0.16234657], abs=1e-7)
    assert tasks.get("two_moons").true_parameters(1).tolist() == pytest.approx([-0.8176656, -0.5756806], abs=1e-7)
    assert tasks.get("lotka_volterra").observation(1)[:3].tolist() == pytest.approx([31.783262, 1.1971166, 0.29703617])
    assert tasks.get("gaussian_linear").true_parameters(1)[:2].tolist() == pytest.approx([0.27184236, 0.67629528])
    assert tasks.get("slcp").true_parameters(1)[:2].tolist() == pytest.approx([-2.8581212, -0.44451332])


def test_glm_design_is_sbibms_and_summaries_are_its_spike_trains():
    glm, raw = tasks.get("bernoulli_glm"), tasks.get("bernoulli_glm_raw")
    stored = torch.load(data_dir("bernoulli_glm") / "design_matrix.pt", weights_only=True).double()
    assert torch.equal(glm.design, stored)
    for i in (1, 5, 10):
        assert torch.allclose(raw.observation(i).double() @ glm.design, glm.observation(i).double(), atol=1e-4)


@pytest.mark.parametrize("name", ["sir", "bernoulli_glm", "lotka_volterra"])
def test_reference_samples_load_and_agree_with_our_exact_likelihood(name):
    """sbibm's reference samples load (10,000 per observation) and match self-normalised importance sampling
    of this library's exact posterior: the task definitions agree with the benchmark's."""
    task = tasks.get(name)
    ref = task.reference_samples(1, 10_000).double()
    assert ref.shape == (10_000, task.dim_theta) and torch.isfinite(ref).all()
    assert torch.equal(task.reference_samples(1, 100), ref[:100].float())
    g = torch.Generator().manual_seed(0)
    mu, cov = ref.mean(0), torch.cov(ref.T) * 2.0
    z = mu + torch.randn(20_000, task.dim_theta, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    q = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    lw = task._log_post64(z, task.observation(1).double().reshape(1, -1)) - q.log_prob(z)
    w = torch.softmax(lw, 0)
    assert 1 / (w**2).sum() > 1000
    is_mean = (w[:, None] * z).sum(0)
    is_sd = (w[:, None] * (z - is_mean) ** 2).sum(0).sqrt()
    assert ((ref.mean(0) - is_mean).abs() / is_sd).max() < 0.15
    assert (ref.std(0) / is_sd - 1).abs().max() < 0.1


def test_options_keep_the_old_draws_and_bad_values_raise():
    own = tasks.get("sir", observations="telescope")
    assert own.observation_set == "telescope" and own.reference_source == "mcmc" and own.cache_key() == "sir"
    base = tasks.base.Task.observation(own, 1)  # the library's own seeded draw
    assert torch.equal(own.observation(1), base) and not torch.equal(own.observation(1), tasks.get("sir").observation(1))
    assert tasks.get("sir", reference="mcmc").cache_key() == "sir-sbibm"
    glm = tasks.get("bernoulli_glm", observations="telescope")
    assert glm.simulator.config.get("stimulus_seed") == 20210112 and not torch.equal(glm.design, tasks.get("bernoulli_glm").design)
    with pytest.raises(ValueError, match="observations must be one of.*got 'paper'"):
        tasks.get("sir", observations="paper")
    with pytest.raises(ValueError, match="reference='sbibm' needs observations='sbibm'"):
        tasks.get("bernoulli_glm", observations="telescope", reference="sbibm")
    with pytest.raises(ValueError, match="reference must be"):
        tasks.get("bernoulli_glm", reference="gibbs")
    with pytest.raises(ValueError, match=r"n must be an integer in 1..10000.*got 10001"):
        tasks.get("sir").reference_samples(1, 10_001)
    with pytest.raises(ValueError, match="observation index"):
        tasks.get("sir").observation(11)


# -- the simulators are sbibm's: its reference posteriors are the posteriors of our tasks at its observations ----
@pytest.mark.parametrize("name", ["two_moons", "gaussian_mixture", "gaussian_linear", "gaussian_linear_uniform"])
def test_sbibm_references_equal_our_exact_posteriors(name):
    """Where this library samples the posterior exactly (analytic or rejection), its samples at sbibm's observation
    and sbibm's stored reference agree: same prior, simulator and noise conventions (sbibm's Gaussian "scales" 0.1
    are variances, two moons' map and crescent, the mixture's 1 and 0.1 standard deviations)."""
    task = tasks.get(name)
    for i in (1, 5, 10):
        ref = task.reference_samples(i, 10_000).double()
        own = task._reference(task.observation(i), 20_000, seed=i).double()
        assert ((ref.mean(0) - own.mean(0)).abs() / own.std(0)).max() < 0.06
        assert (ref.std(0) / own.std(0) - 1).abs().max() < 0.06


def test_sbibm_slcp_reference_has_our_conditional_law():
    """Given (theta_3, theta_4, theta_5) and theta_1, SLCP's posterior of theta_2 is the Gaussian of its four
    bivariate draws truncated to [-3, 3] (and symmetrically for theta_1): the probability integral transform of
    sbibm's reference samples under OUR conditional (s = theta^2, rho = tanh theta_5, four draws) is uniform."""
    from scipy import stats

    task = tasks.get("slcp")
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    for i in (1, 2, 5):
        ref, x = task.reference_samples(i).double(), task.observation(i).double()
        xbar = x.reshape(4, 2).mean(0)
        s1, s2, rho = ref[:, 2] ** 2, ref[:, 3] ** 2, torch.tanh(ref[:, 4])
        for a, b, sa, sb, xa, xb in ((ref[:, 1], ref[:, 0], s2, s1, xbar[1], xbar[0]),
                                     (ref[:, 0], ref[:, 1], s1, s2, xbar[0], xbar[1])):
            mu, sd = xa + rho * sa / sb * (b - xb), sa * torch.sqrt(1 - rho**2) / 2
            lo, hi = normal.cdf((-3 - mu) / sd), normal.cdf((3 - mu) / sd)
            u = ((normal.cdf((a - mu) / sd) - lo) / (hi - lo)).numpy()
            assert stats.kstest(u, "uniform").pvalue > 1e-3
            sw = sd / 2**0.5  # as if there were eight draws
            lw, hw = normal.cdf((-3 - mu) / sw), normal.cdf((3 - mu) / sw)
            wrong = ((normal.cdf((a - mu) / sw) - lw) / (hw - lw)).numpy()
            assert stats.kstest(wrong, "uniform").pvalue < 1e-6


def test_slcp_distractors_constants_are_sbibms():
    """The mixture constants and permutation repeat sbibm's draws: the permutation equals its stored
    permutation_idx.torch, its stored observations hold SLCP's stored ones at the permuted places, and the
    reference is SLCP's."""
    task, slcp = tasks.get("slcp_distractors"), tasks.get("slcp")
    stored = torch.load(data_dir("slcp") / "permutation_idx.torch", weights_only=True)
    assert torch.equal(task.permutation, stored)
    for i in range(1, 11):
        informative, distractors = task.split(task.observation(i))
        assert torch.equal(informative, slcp.observation(i))
        assert torch.isfinite(task.distractor_log_density(distractors))
    assert torch.equal(task.reference_samples(2, 100), slcp.reference_samples(2, 100))
    assert task.simulator.config["seed"] == "sbibm"
    own = tasks.get("slcp_distractors", observations="telescope")
    assert own.simulator.config["seed"] == 20210113 and not torch.equal(own.permutation, stored)
    x = task.simulator(task.true_parameters(1).expand(3, -1).clone(), seed=0)
    assert x.shape == (3, 100) and torch.isfinite(x).all()


def test_gaussian_linear_sbibm_only_in_the_benchmark_configuration():
    assert tasks.get("gaussian_linear").observation_set == "sbibm"
    other = tasks.get("gaussian_linear", dim=3)
    assert other.observation_set == "telescope" and other.cache_key() == "gaussian_linear_d3_p0.1_n0.1"
    assert tasks.get("gaussian_linear_uniform", dim=2).observation_set == "telescope"
    with pytest.raises(ValueError, match="observations='sbibm' needs the benchmark's configuration"):
        tasks.get("gaussian_linear", dim=3, observations="sbibm")
    with pytest.raises(ValueError, match="observations='sbibm' needs the benchmark's configuration"):
        tasks.get("gaussian_linear_uniform", noise_var=0.2, observations="sbibm")
    own = tasks.get("two_moons", observations="telescope")
    assert own.cache_key() == "two_moons" and own.reference_source == "mcmc"
    assert torch.equal(own.observation(1), tasks.base.Task.observation(own, 1))
