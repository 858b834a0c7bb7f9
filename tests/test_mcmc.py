"""The posterior MCMC sampler (:func:`telescope.samplers.mcmc.mcmc_posterior`) against an exact Gaussian."""

import torch

from telescope.priors import Gaussian
from telescope.samplers.mcmc import mcmc_posterior


def _target(d=6, rho=0.95, sd=0.5):
    cov = sd**2 * ((1 - rho) * torch.eye(d) + rho * torch.ones(d, d))
    mean = torch.linspace(-1, 1, d)
    return mean, cov, torch.distributions.MultivariateNormal(mean, cov)


def test_whitened_chains_recover_a_strongly_correlated_gaussian():
    mean, cov, target = _target()
    prior = Gaussian(torch.zeros(6), torch.full((6,), 4.0))
    s = mcmc_posterior(target.log_prob, prior, 4000, chains=100, warmup=100, thin=2, seed=0)
    assert s.shape == (4000, 6) and torch.isfinite(s).all()
    sd = cov.diagonal().sqrt()
    assert ((s.mean(0) - mean).abs() / sd).max() < 0.1
    assert ((torch.cov(s.T) - cov).abs() / sd.outer(sd)).max() < 0.1


def test_whitening_mixes_better_than_plain_coordinate_slices_at_equal_sweeps():
    mean, cov, target = _target(rho=0.99)
    prior = Gaussian(torch.zeros(6), torch.full((6,), 4.0))
    err = {}
    for whiten in (True, False):
        s = mcmc_posterior(target.log_prob, prior, 2000, chains=100, warmup=40, thin=1, seed=1, whiten=whiten)
        err[whiten] = float(((torch.cov(s.T) - cov).abs() / cov.diagonal().sqrt().outer(cov.diagonal().sqrt())).max())
    assert err[True] < 0.15 and err[False] > 0.3  # plain slices have not left the starting spread
