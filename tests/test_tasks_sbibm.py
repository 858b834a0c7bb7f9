"""sbibm's stored observations, true parameters and references for sir and bernoulli_glm(_raw) (issue 21, item 7)."""

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


@pytest.mark.parametrize("name,folder,obs_file", [("sir", "sir", "observation.csv"),
                                                  ("bernoulli_glm", "bernoulli_glm", "observation.csv"),
                                                  ("bernoulli_glm_raw", "bernoulli_glm", "observation_raw.csv")])
def test_observations_and_true_parameters_are_sbibms_files(name, folder, obs_file):
    task = tasks.get(name)
    assert task.observation_set == "sbibm" and task.reference_source == "sbibm"
    for i in range(1, 11):
        d = data_dir(folder) / f"num_observation_{i}"
        x = task.observation(i)
        assert x.shape == (task.dim_x,) and x.dtype == torch.float32
        assert np.array_equal(x.numpy(), _csv(d / obs_file)[0].astype(np.float32))
        assert np.array_equal(task.true_parameters(i).numpy(), _csv(d / "true_parameters.csv")[0].astype(np.float32))
        assert task.tall_observation(i, 3).shape == (3, task.dim_x)
        assert torch.equal(task.tall_observation(i, 3)[0], x)


def test_values_written_out_from_the_sbibm_wheel():
    """A few values copied by hand from sbibm 1.1.0's files, so a changed data file is caught too."""
    sir, glm, raw = tasks.get("sir"), tasks.get("bernoulli_glm"), tasks.get("bernoulli_glm_raw")
    assert sir.observation(1).tolist() == [0.0, 1.0, 352.0, 40.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert torch.allclose(sir.true_parameters(1), torch.tensor([0.61479264, 0.19172086]))
    assert torch.allclose(glm.observation(1)[:4], torch.tensor([56.0, 3.32306, 14.356438, 11.104893]))
    assert torch.allclose(glm.true_parameters(1)[:3], torch.tensor([1.215716, 2.1386335, 3.6156292]))
    assert raw.observation(1).sum() == 56  # the spike count is the first summary
    assert torch.allclose(glm.design[:3, 1].float(), torch.tensor([0.4967, -0.1383, 0.6477]), atol=1e-4)


def test_glm_design_is_sbibms_and_summaries_are_its_spike_trains():
    glm, raw = tasks.get("bernoulli_glm"), tasks.get("bernoulli_glm_raw")
    stored = torch.load(data_dir("bernoulli_glm") / "design_matrix.pt", weights_only=True).double()
    assert torch.equal(glm.design, stored)
    for i in (1, 5, 10):
        assert torch.allclose(raw.observation(i).double() @ glm.design, glm.observation(i).double(), atol=1e-4)


@pytest.mark.parametrize("name", ["sir", "bernoulli_glm"])
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
