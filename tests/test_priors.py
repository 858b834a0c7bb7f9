import math

import pytest
import torch

import telescope as ts
from telescope.priors import check_prior, in_support, prior_bounds


def test_box_uniform_log_prob_and_support():
    p = ts.BoxUniform([-1.0, 0.0], [1.0, 2.0])
    t = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, -0.1]])
    lp = p.log_prob(t)
    assert lp[0].item() == pytest.approx(-math.log(4.0))
    assert torch.isinf(lp[1:]).all()
    assert in_support(p, t).tolist() == [True, False, False]
    s = p.sample((5000,))
    assert s.shape == (5000, 2) and in_support(p, s).all()
    assert s.mean(0).tolist() == pytest.approx([0.0, 1.0], abs=0.05)
    low, high = prior_bounds(p)
    assert low.tolist() == [-1.0, 0.0] and high.tolist() == [1.0, 2.0]


def test_gaussian_full_covariance_matches_sample_moments():
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]])
    p = ts.Gaussian([1.0, -1.0], cov)
    s = p.sample((40000,))
    assert torch.allclose(s.mean(0), torch.tensor([1.0, -1.0]), atol=0.03)
    assert torch.allclose(torch.cov(s.T), cov, atol=0.06)


def test_lognormal_and_joint():
    ln = ts.LogNormal([0.0, 1.0], [0.5, 0.2])
    s = ln.sample((20000,))
    assert (s > 0).all()
    assert torch.log(s).mean(0).tolist() == pytest.approx([0.0, 1.0], abs=0.02)
    assert torch.isinf(ln.log_prob(torch.tensor([[-1.0, 1.0]])))
    j = ts.Joint([torch.distributions.Normal(0.0, 1.0), ts.BoxUniform([0.0], [2.0])])
    t = torch.tensor([[0.3, 1.0], [0.3, 3.0]])
    lp = j.log_prob(t)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.3)) - math.log(2.0)
    assert lp[0].item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.isinf(lp[1])
    assert in_support(j, t).tolist() == [True, False]


def test_bad_priors_are_rejected_with_clear_errors():
    with pytest.raises(TypeError, match="prior"):
        check_prior("uniform")
    with pytest.raises(ValueError, match="event shape"):
        check_prior(torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="high must be > low"):
        ts.BoxUniform([0.0], [0.0])
    with pytest.raises(ValueError, match="cov"):
        ts.Gaussian([0.0, 0.0], torch.eye(3))


def test_user_distribution_is_accepted():
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    assert check_prior(prior) is prior
    theta, x = ts.simulate(lambda th: th + 1.0, prior, 10, seed=0, progress_bar=False)
    assert torch.allclose(x, theta + 1.0)
