import pytest
import torch

import telescope as ts


def _gen():
    return ts.Simulator(lambda th, u: th + 0.3 * u, noise=lambda n, g: torch.randn(n, 2, generator=g), name="lin")


def test_same_seed_same_data_and_theta_independent_of_noise():
    prior = ts.Gaussian(torch.zeros(2), torch.ones(2))
    a = ts.simulate(_gen(), prior, 3000, seed=1, batch_size=500, progress_bar=False)
    b = ts.simulate(_gen(), prior, 3000, seed=1, batch_size=500, progress_bar=False)
    c = ts.simulate(_gen(), prior, 3000, seed=2, batch_size=500, progress_bar=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the noise must be independent of theta: corr(theta, x - theta) ~ 0 (a shared seed once made them equal)
    u = (a[1] - a[0]) / 0.3
    corr = torch.corrcoef(torch.cat([a[0], u], 1).T)[:2, 2:]
    assert corr.abs().max() < 0.08
    assert u.std(0).tolist() == pytest.approx([1.0, 1.0], abs=0.05)


def test_plain_callable_is_seeded_per_batch():
    prior = ts.BoxUniform([0.0], [1.0])
    sim = lambda th: th + torch.randn_like(th)  # noqa: E731
    a = ts.simulate(sim, prior, 200, seed=5, batch_size=50, progress_bar=False)
    b = ts.simulate(sim, prior, 200, seed=5, batch_size=50, progress_bar=False)
    assert torch.equal(a[1], b[1])
    u = a[1] - a[0]
    assert abs(torch.corrcoef(torch.stack([a[0][:, 0], u[:, 0]]))[0, 1]) < 0.2


def test_simulate_bad_arguments():
    prior = ts.BoxUniform([0.0], [1.0])
    with pytest.raises(ValueError, match="n must be"):
        ts.simulate(lambda th: th, prior, 0)
    with pytest.raises(TypeError, match="simulator"):
        ts.simulate("not a simulator", prior, 10)
    # a simulator that is wrong on every call stops the campaign early, showing the first error
    with pytest.raises(RuntimeError, match="one row per theta"):
        ts.simulate(lambda th: torch.zeros(()), prior, 10, progress_bar=False)
