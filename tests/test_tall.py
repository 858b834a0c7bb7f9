"""Tall-data samplers and diffused prior scores, checked against analytic truths.

The score here is the exact diffused posterior score of a Gaussian model (optionally perturbed
in noise units, as in Section 4.1 of Linhart et al.), so every tolerance is about the sampler.
"""

import math

import pytest
import torch

from telescope.diffusion import VPSchedule, deterministic_part
from telescope.priors import BoxUniform, Gaussian, Joint, LogNormal
from telescope.samplers.prior_scores import (
    DiffusedGaussian,
    DiffusedProduct,
    DiffusedUniform,
    PriorScoreError,
    diffused_prior,
    log_ndtr_diff,
    positive_dims,
)
from telescope.samplers.tall import (
    TallSampler,
    clip_eps,
    ddim_sample,
    paper_eta,
    pilot_covariances,
    rowwise,
    sample_tall,
    trimmed_covariance,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- a Gaussian model with exact scores ----------------------------------------------------------
class GaussToy:
    """theta ~ N(0, P0^-1), x | theta ~ N(theta, L^-1): exact single and tall posteriors and scores."""

    def __init__(self, d=3, rho=0.5, prior_var=1.0, schedule=None, epsilon=0.0, seed=0):
        self.d, self.schedule, self.epsilon = d, schedule or VPSchedule(), epsilon
        cov = (1 - rho) * torch.eye(d, dtype=torch.float64) + rho * torch.ones(d, d, dtype=torch.float64)
        self.lik_prec = torch.linalg.inv(cov * 0.5)
        self.prior_cov = prior_var * torch.eye(d, dtype=torch.float64)
        self.prior_prec = torch.linalg.inv(self.prior_cov)
        self.post_cov = torch.linalg.inv(self.lik_prec + self.prior_prec)
        self.ev, self.U = torch.linalg.eigh(self.post_cov)
        g = _gen(seed)
        self.theta = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
        lchol = torch.linalg.cholesky(cov * 0.5)
        self.x = (self.theta + (lchol @ torch.randn(d, 100, generator=g, dtype=torch.float64)).T).float()
        self.w1 = torch.randn(2 * d + 1, 5 * d, generator=g) / math.sqrt(2 * d + 1)
        self.w2 = torch.randn(5 * d, d, generator=g) / math.sqrt(5 * d)
        self.prior = DiffusedGaussian(torch.zeros(d), self.prior_cov)

    def eps(self, z, t, x):
        a = self.schedule.alpha_bar(t.double())[:, None]
        mu = x.double() @ self.lik_prec @ self.post_cov  # post_cov lik_prec x (symmetric)
        r = (z.double() - a.sqrt() * mu) @ self.U
        e = (r * (1 - a).sqrt() / (a * self.ev + 1 - a)) @ self.U.T
        if self.epsilon:  # a fixed random network with outputs in [-1, 1]
            h = torch.relu(torch.cat([z.float(), x.float(), t.float()[:, None]], -1) @ self.w1)
            e = e + self.epsilon * torch.tanh(h @ self.w2).double()
        return e.float()

    def tall(self, n):
        cov = torch.linalg.inv(n * self.lik_prec + self.prior_prec)
        mean = cov @ self.lik_prec @ self.x[:n].double().sum(0)
        return mean, cov


def _check_moments(s, mean, cov, mean_tol, cov_tol):
    s = s.double()
    sd = cov.diagonal().sqrt()
    assert torch.isfinite(s).all()
    assert ((s.mean(0) - mean) / sd).abs().max() < mean_tol, (s.mean(0), mean)
    rel = torch.cov(s.T) / (sd[:, None] * sd[None, :]) - cov / (sd[:, None] * sd[None, :])
    assert rel.abs().max() < cov_tol, (torch.cov(s.T), cov)


# -- diffused prior scores -----------------------------------------------------------------------
def _numerical_uniform_score(z, a, low, high):
    """d/dz log of int_low^high N(z; sqrt(a) u, 1 - a) du / (high - low): mpmath quadrature, numerical derivative."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 20
    sa, v = mp.sqrt(mp.mpf(a)), 1 - mp.mpf(a)

    def log_density(zz):
        f = lambda u: mp.exp(-(zz - sa * u) ** 2 / (2 * v))  # noqa: E731
        knots = [low, low + 1e-3, low + 1e-2, low + 0.1, (low + high) / 2, high - 0.1, high - 1e-2, high - 1e-3, high]
        return mp.log(mp.quad(f, knots))

    return float(mp.diff(log_density, mp.mpf(z)))


@pytest.mark.parametrize("alpha", [0.999, 0.5, 0.02])
def test_uniform_prior_score_matches_quadrature(alpha):
    p = DiffusedUniform(torch.tensor([-1.0]), torch.tensor([2.0]))
    for z in [-3.0, -0.9, 0.5, 2.5]:
        got = float(p.score(torch.tensor([[z]], dtype=torch.float64), alpha))
        want = _numerical_uniform_score(z, alpha, -1.0, 2.0)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-8), (z, alpha)


def test_uniform_prior_score_is_finite_far_outside_and_tends_to_gaussian_tail():
    p = DiffusedUniform(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0]))
    z = torch.tensor([[1e3, -1e4], [-50.0, 30.0]], dtype=torch.float64)
    for a in [1 - 1e-8, 0.99, 1e-6]:
        s = p.score(z, a)
        assert torch.isfinite(s).all()
        # far outside, the log density is that of the nearest edge: -(z - sqrt(a) edge) / v
        edge = torch.where(z > 0, p.high, p.low)
        tail = -(z - math.sqrt(a) * edge) / (1 - a)
        assert torch.allclose(s, tail, rtol=1e-3)
    # the naive ratio of densities is 0/0 there: this is why the score is computed in log space
    assert math.isfinite(float(log_ndtr_diff(torch.tensor([-1e4], dtype=torch.float64),
                                             torch.tensor([-1e4 - 1.0], dtype=torch.float64))))


def test_uniform_prior_score_is_the_gradient_of_its_log_density():
    p = DiffusedUniform(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0]))
    z = torch.randn(50, 2, generator=_gen(0), dtype=torch.float64) * 3
    a = torch.rand(50, generator=_gen(1), dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.log_density(zz, a).sum(), zz)
    assert torch.allclose(p.score(z, a), g, rtol=1e-8, atol=1e-10)
    # and the density integrates to one
    grid = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    pts = torch.stack([grid, torch.full_like(grid, 1.5)], -1)
    p1 = DiffusedUniform(torch.tensor([-1.0]), torch.tensor([1.0]))
    mass = torch.trapezoid(p1.log_density(pts[:, :1], 0.7).exp(), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


def test_gaussian_prior_score_closed_form_and_vector_times():
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = DiffusedGaussian(mean, cov)
    z = torch.randn(6, 2, generator=_gen(0), dtype=torch.float64)
    a = torch.linspace(0.01, 0.99, 6, dtype=torch.float64)
    for i in range(6):
        diffused = a[i] * cov + (1 - a[i]) * torch.eye(2, dtype=torch.float64)
        want = -torch.linalg.solve(diffused, z[i] - a[i].sqrt() * mean)
        assert torch.allclose(p.score(z[i:i + 1], float(a[i]))[0], want)
        assert torch.allclose(p.score(z, a)[i], want)
    assert torch.allclose(p.precision(0.5), torch.linalg.inv(cov) + torch.eye(2, dtype=torch.float64))
    assert torch.allclose(p.score0(z), -(z - mean) @ torch.linalg.inv(cov))


def test_diffused_prior_standardises_and_handles_products():
    prior = Joint([torch.distributions.LogNormal(0.5, 2.0), BoxUniform([0.0, 1.0], [2.0, 5.0]),
                   torch.distributions.Normal(1.0, 3.0)])
    logd = positive_dims(prior)
    assert logd.tolist() == [True, False, False, False]
    loc = torch.tensor([0.5, 1.0, 3.0, 1.0])
    scale = torch.tensor([2.0, 1.0, 2.0, 3.0])
    p = diffused_prior(prior, loc, scale, logd)
    assert isinstance(p, DiffusedProduct) and p.dim == 4
    z = torch.randn(5, 4, generator=_gen(0), dtype=torch.float64)
    s = p.score(z, 0.3)
    assert torch.allclose(s[:, :1], DiffusedGaussian(torch.zeros(1), torch.ones(1)).score(z[:, :1], 0.3))
    assert torch.allclose(s[:, 1:3], DiffusedUniform(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])).score(
        z[:, 1:3], 0.3))
    assert torch.allclose(p.precision0.diagonal()[1:3], torch.tensor([3.0, 3.0], dtype=torch.float64))
    g = diffused_prior(Gaussian([1.0, 2.0], [4.0, 9.0]), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]))
    assert torch.allclose(g.cov, torch.eye(2, dtype=torch.float64)) and torch.allclose(g.mean, torch.zeros(2).double())


def test_unsupported_priors_raise_with_the_options():
    with pytest.raises(PriorScoreError, match="supported priors.*Gaussian.*BoxUniform.*learned"):
        diffused_prior(Joint([torch.distributions.Gamma(2.0, 1.0)]))
    with pytest.raises(PriorScoreError, match="log space"):
        diffused_prior(LogNormal([0.0], [1.0]))
    assert positive_dims(LogNormal([0.0, 1.0], [1.0, 1.0])).all()


# -- samplers -------------------------------------------------------------------------------------
def test_paper_eta_and_trimmed_covariance():
    assert [paper_eta(s) for s in (10, 50, 100, 150, 300, 400, 1000)] == [0.2, 0.2, 0.5, 0.5, 0.8, 0.8, 1.0]
    s = torch.randn(2, 4000, 3, generator=_gen(0), dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]).double()
    s[0, :5] = 1e3  # a few stray draws
    cov = trimmed_covariance(s)
    assert torch.allclose(cov.diagonal(dim1=-2, dim2=-1), torch.tensor([1.0, 4.0, 0.25]).double().expand(2, 3),
                          rtol=0.1)


def test_clip_eps_equals_the_clipped_ddim_step_of_the_shared_schedule():
    z = torch.randn(200, 2, generator=_gen(0)) * 3
    e = torch.randn(200, 2, generator=_gen(1))
    lo, hi = torch.full((2,), -1.5), torch.full((2,), 1.5)
    for at, as_, eta in [(0.2, 0.5, 0.0), (0.6, 0.9, 1.0), (0.9, 1.0, 0.5)]:
        mine = deterministic_part(z, clip_eps(z, e, at, (lo, hi)), at, as_, eta)
        ref = deterministic_part(z, e, at, as_, eta, clip_x0=1.5)
        assert torch.allclose(mine, ref, atol=1e-4)


def test_single_observation_ddim_matches_the_posterior_for_every_observation():
    toy = GaussToy(d=2)
    x = toy.x[:5]
    z = torch.randn(3000, 5, 2, generator=_gen(0))
    s = ddim_sample(rowwise(toy.eps, x), z, schedule=toy.schedule, steps=200, eta=1.0, spacing="quadratic",
                    generator=_gen(1))
    for j in range(5):
        mean, cov = toy.tall(1) if j == 0 else (toy.post_cov @ toy.lik_prec @ x[j].double(), toy.post_cov)
        _check_moments(s[:, j], mean, cov, 0.1, 0.12)
    covs = pilot_covariances(rowwise(toy.eps, x), 5, 2, samples=2000, steps=100, spacing="quadratic",
                             generator=_gen(2))
    assert torch.allclose(covs, toy.post_cov.expand(5, 2, 2), atol=0.08 * float(toy.post_cov.diagonal().max()))


@pytest.mark.parametrize("method, steps, samples, tol", [("gauss", 200, 3000, 0.15), ("jac", 150, 1500, 0.15),
                                                          ("fnpse", 150, 2000, 0.2)])
def test_tall_posterior_with_exact_score_matches_the_analytic_one(method, steps, samples, tol):
    # mean within tol posterior sd, covariance within tol in correlation units (measured: <= 0.06 / 0.10)
    toy = GaussToy(d=2, rho=0.5)
    n = 10
    mean, cov = toy.tall(n)
    s = sample_tall(rowwise(toy.eps, toy.x[:n]), n, samples, toy.prior, method=method, steps=steps,
                    spacing="quadratic", pilot_samples=1000, pilot_steps=100, generator=_gen(3))
    _check_moments(s, mean, cov, tol, tol)


def test_gauss_is_stable_up_to_100_observations_with_a_perturbed_score():
    toy = GaussToy(d=3, epsilon=1e-2, seed=1)
    for n in (100,):
        mean, cov = toy.tall(n)
        sampler = TallSampler(rowwise(toy.eps, toy.x[:n]), n, toy.prior, method="gauss", steps=50,
                              pilot_samples=128, generator=_gen(4))
        s = sampler.sample(500)
        assert torch.isfinite(s).all() and sampler.info["non_finite"] == 0
        # the tall posterior is narrow (sd ~ 0.05); the mean is within a few sd of the truth
        assert ((s.double().mean(0) - mean).abs() / cov.diagonal().sqrt()).max() < 3


def test_gauss_falls_back_when_lambda_is_not_positive_definite():
    toy = GaussToy(d=2)
    n = 10
    wide = 3.0 * toy.prior_cov.expand(n, 2, 2)  # posteriors wider than the prior: Lambda < 0
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        sampler = TallSampler(rowwise(toy.eps, toy.x[:n]), n, toy.prior, method="gauss", covariances=wide,
                              generator=_gen(0))
    assert sampler.info["gauss_fallback"]
    assert bool((torch.linalg.eigvalsh(sampler.c) > 0).all())
    assert torch.isfinite(sampler.sample(200)).all()


def test_jac_falls_back_to_the_factorised_score_where_the_jacobian_is_garbage():
    toy = GaussToy(d=2, epsilon=0.5, seed=2)
    n = 10
    with pytest.warns(RuntimeWarning, match="JAC"):
        sampler = TallSampler(rowwise(toy.eps, toy.x[:n]), n, toy.prior, method="jac", steps=30, generator=_gen(0))
        s = sampler.sample(200)
    assert sampler.info["jac_fallback"] > 0
    assert s.shape == (200, 2)


def test_samplers_are_reproducible_and_chunked():
    toy = GaussToy(d=2)
    es = rowwise(toy.eps, toy.x[:4])
    a = sample_tall(es, 4, 50, toy.prior, steps=20, pilot_samples=64, pilot_steps=10, generator=_gen(7))
    b = sample_tall(es, 4, 50, toy.prior, steps=20, pilot_samples=64, pilot_steps=10, generator=_gen(7))
    assert torch.equal(a, b)
    c = sample_tall(es, 4, 50, toy.prior, steps=20, pilot_samples=64, pilot_steps=10, generator=_gen(7),
                    chunk_rows=40)  # 10 samples per chunk
    assert c.shape == (50, 2) and torch.isfinite(c).all()


def test_bad_arguments_are_named():
    toy = GaussToy(d=2)
    es = rowwise(toy.eps, toy.x[:3])
    with pytest.raises(ValueError, match="method must be one of"):
        TallSampler(es, 3, toy.prior, method="langevin")
    with pytest.raises(ValueError, match="n_obs"):
        TallSampler(es, 0, toy.prior)
    with pytest.raises(ValueError, match="spacing"):
        TallSampler(es, 3, toy.prior, spacing="log")
    with pytest.raises(ValueError, match="prior_term"):
        TallSampler(es, 3, toy.prior, method="fnpse", prior_term="x")
    with pytest.raises(ValueError, match="covariances must have shape"):
        TallSampler(es, 3, toy.prior, covariances=torch.eye(2).expand(2, 2, 2))
