"""The stacked mixture that ends a staged multilevel fit: weights, density, sampling, save and load."""

import math
import warnings

import pytest
import torch
from torch import nn

import telescope as ts
from telescope.multilevel import Multilevel, MultilevelNPE
from telescope.multilevel.ensemble import Mixture, stack

PRIOR = ts.BoxUniform([-2.0], [2.0])


class _Gauss(nn.Module):
    """``q(y | c) = N(y; c + shift, 1)`` in one dimension: a stand-in network with an exact density."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(float(shift)))

    def log_prob(self, y, c):
        return (-0.5 * (y - c - self.shift) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, c, n):
        return c + self.shift + torch.randn(n, *c.shape)


def test_stack_recovers_the_mixing_weights_of_the_data():
    g = torch.Generator().manual_seed(0)
    n = 20_000
    from_first = torch.rand(n, generator=g) < 0.3
    y = torch.where(from_first, -3.0, 3.0) + torch.randn(n, generator=g)
    lp = torch.stack([-0.5 * (y + 3) ** 2, -0.5 * (y - 3) ** 2], 1) - 0.5 * math.log(2 * math.pi)
    w = stack(lp)
    assert w.sum().item() == pytest.approx(1.0) and w[0].item() == pytest.approx(0.3, abs=0.01)
    # one pseudo-point per member pulls a tiny data set's weights towards equal, never onto one member
    w_small = stack(lp[:3])
    assert 0.15 < w_small.min().item()
    with pytest.raises(ValueError, match="log_probs must have shape"):
        stack(torch.zeros(5))


def test_mixture_density_and_samples_are_those_of_the_weighted_components():
    torch.manual_seed(0)
    mix = Mixture([_Gauss(-4.0), _Gauss(4.0), _Gauss(0.0)], [0.25, 0.75, 0.0])
    assert len(mix.members) == 2 and mix.weights == pytest.approx([0.25, 0.75])  # a zero weight is dropped
    c = torch.zeros(3, 1)
    y = torch.tensor([[-4.0], [0.0], [4.0]])
    want = torch.logsumexp(torch.stack([math.log(0.25) - 0.5 * (y + 4) ** 2, math.log(0.75) - 0.5 * (y - 4) ** 2]),
                           0).squeeze(-1) - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(mix.log_prob(y, c), want, atol=1e-5)
    s = mix.sample(c, 20_000)
    assert s.shape == (20_000, 3, 1)
    assert (s < 0).float().mean().item() == pytest.approx(0.25, abs=0.015)
    with pytest.raises(ValueError, match="one weight per member"):
        Mixture([_Gauss(0.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        Mixture([_Gauss(0.0), _Gauss(1.0)], [-1.0, 2.0])


def _noise(n, g):
    return torch.randn(n, 2, generator=g)


def _high(theta, u):
    return torch.cat([theta + 0.3 * u[:, :1], theta.pow(2) + 0.3 * u[:, 1:]], -1)


def _low(theta, u):
    return torch.cat([0.8 * theta + 0.3 * u[:, :1] + 0.3, 0.7 * theta.pow(2) + 0.3 * u[:, 1:]], -1)


def test_default_fit_ends_in_a_stacked_mixture_that_saves_and_loads(tmp_path):
    ladder = ts.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 10.0])
    levels = ts.simulate_levels(ladder, PRIOR, n=[1500, 60], seed=0, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = MultilevelNPE(PRIOR, seed=0, transforms=1, hidden=(32,)).fit(levels, progress_bar=False,
                                                                            max_epochs=40)
        one = MultilevelNPE(PRIOR, seed=0, transforms=1, hidden=(32,), ensemble=False).fit(
            levels, progress_bar=False, max_epochs=40)
    rec = ml.history["multilevel"]["ensemble"]
    assert rec["members"][:2] == ["multilevel", "transfer"]
    assert sum(rec["weights"]) == pytest.approx(1.0) and min(rec["weights"]) > 0
    assert isinstance(ml.net, Mixture) and not isinstance(one.net, Mixture)
    x = torch.tensor([0.5, 0.3])
    theta = torch.linspace(-1.9, 1.9, 7)[:, None]
    # the mixture's density is the weighted sum of its members' densities
    members = [m.log_prob(theta, x[None]) for m in ml.net.members]
    assert len(members) == 5 * sum(w > 0 for w in rec["weights"])  # every fold's networks (folds=5)
    per_net = [w / 5 for w in rec["weights"] if w > 0 for _ in range(5)]
    assert ml.net.weights == pytest.approx(per_net, rel=1e-5)
    want = torch.logsumexp(torch.stack(members, -1) + torch.tensor(per_net).log(), -1)
    assert torch.allclose(ml.log_prob(theta, x), want, atol=1e-4)
    assert ml.sample(x, 50, seed=1).shape == (50, 1)
    ml.save(tmp_path / "ml")
    back = Multilevel.load(tmp_path / "ml", PRIOR)
    assert isinstance(back.net, Mixture)
    assert torch.allclose(back.log_prob(theta, x), ml.log_prob(theta, x), atol=1e-5)


def test_ml_nle_mixture_is_a_likelihood_mcmc_can_sample():
    ladder = ts.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 10.0])
    levels = ts.simulate_levels(ladder, PRIOR, n=[600, 40], seed=2, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ts.MultilevelNLE(PRIOR, seed=0, transforms=1, hidden=(16,)).fit(levels, progress_bar=False,
                                                                               max_epochs=10)
    assert isinstance(ml.net, Mixture)
    theta = torch.tensor([[0.5], [-1.0]])
    x = torch.tensor([[0.5, 0.25]])
    ll = ml.log_likelihood(theta, x)
    assert ll.shape == (2, 1) and torch.isfinite(ll).all()
    s = ml.sample(torch.tensor([0.5, 0.25]), 40, seed=0)
    assert s.shape == (40, 1) and bool(((s > -2) & (s < 2)).all())
