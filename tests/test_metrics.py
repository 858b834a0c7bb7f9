"""Metrics checked against known truths: closed forms, brute force, exact posteriors."""

import math

import pytest
import torch
from scipy.stats import wasserstein_distance

from telescope.metrics import (
    c2st,
    coverage,
    expected_coverage,
    hpd_levels,
    mmd,
    mmd_to_point,
    nlpd,
    sbc_ranks,
    sbc_uniformity,
    sliced_wasserstein,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small kernels run faster on one thread on shared CI cores; restored afterwards."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):  # BLAS behind the c2st classifier
        yield
    torch.set_num_threads(before)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class GaussianLinearPosterior:
    """theta ~ N(0, I), x = theta + s * eps: the posterior is N(x / (1 + s^2), s^2 / (1 + s^2) I).

    ``scale`` multiplies the posterior standard deviation: 1 is exact, < 1 overconfident,
    > 1 conservative.  The log density carries an x-dependent constant to check that
    unnormalised densities are handled.
    """

    def __init__(self, s=0.5, scale=1.0):
        self.s, self.scale = s, scale

    def _params(self, x):
        mean = x / (1 + self.s**2)
        std = self.scale * self.s / math.sqrt(1 + self.s**2)
        return mean, std

    def sample_batched(self, x, n):
        mean, std = self._params(x)
        return mean + std * torch.randn(n, *mean.shape)

    def log_prob_batched(self, theta, x):
        mean, std = self._params(x)
        lp = torch.distributions.Normal(mean, std).log_prob(theta).sum(-1)
        return lp + 3.0 * x.sum(-1)  # per-observation constant: unnormalised


def _pairs(m, d=2, s=0.5, seed=0):
    g = _gen(seed)
    theta = torch.randn(m, d, generator=g)
    x = theta + s * torch.randn(m, d, generator=g)
    return theta, x


# ---------------------------------------------------------------------------------------------- c2st


def test_c2st_same_distribution_is_half():
    g = _gen(0)
    p, q = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert abs(c2st(p, q) - 0.5) < 0.05


def test_c2st_shifted_distributions_near_one_and_numpy_input():
    g = _gen(1)
    p = torch.randn(400, 2, generator=g)
    q = torch.randn(400, 2, generator=g) + torch.tensor([5.0, 0.0])
    acc = c2st(p.numpy(), q.numpy())
    assert acc > 0.97


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_c2st_reaches_the_bayes_accuracy_of_two_gaussians(shift):
    """N(0, 1) against N(shift, 1): the best classifier thresholds at shift / 2, accuracy Phi(shift / 2).
    A trained classifier can only fall short of it (up to sampling noise of the held-out folds)."""
    g = _gen(7)
    p, q = torch.randn(3000, 1, generator=g), torch.randn(3000, 1, generator=g) + shift
    bayes = 0.5 * (1 + math.erf(shift / 2 / math.sqrt(2)))
    assert abs(c2st(p, q, seed=1) - bayes) < 0.02


def test_c2st_torch_backend_agrees_with_sklearn():
    """Same recipe and folds, different random numbers: the accuracies agree to sampling noise."""
    g = _gen(8)
    p = torch.randn(1500, 3, generator=g)
    q = torch.randn(1500, 3, generator=g) * torch.tensor([1.0, 1.3, 1.0]) + torch.tensor([0.3, 0.0, 0.0])
    a, b = c2st(p, q, seed=2), c2st(p, q, seed=2, backend="sklearn")
    assert 0.55 < a < 0.75 and abs(a - b) < 0.02
    with pytest.raises(ValueError, match="backend"):
        c2st(p, q, backend="jax")


def test_c2st_subsampling_and_seed_are_deterministic():
    g = _gen(2)
    p, q = torch.randn(600, 1, generator=g), torch.randn(500, 1, generator=g) + 1.0
    a = c2st(p, q, max_samples=150, seed=3)
    b = c2st(p, q, max_samples=150, seed=3)
    assert a == b and 0.5 < a <= 1.0


# ---------------------------------------------------------------------------------------------- mmd


def _mmd_brute(p, q, sigma):
    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * sigma**2))

    n, m = len(p), len(q)
    kpp, kqq = k(p, p), k(q, q)
    return float((kpp.sum() - kpp.diag().sum()) / (n * (n - 1)) + (kqq.sum() - kqq.diag().sum()) / (m * (m - 1))
                 - 2 * k(p, q).mean())


def test_mmd_matches_brute_force_with_and_without_bandwidth():
    g = _gen(3)
    p = torch.randn(40, 3, generator=g, dtype=torch.float64) + 10.0  # far from the origin on purpose
    q = 1.5 * torch.randn(30, 3, generator=g, dtype=torch.float64) + 10.5
    assert mmd(p, q, bandwidth=1.3) == pytest.approx(_mmd_brute(p, q, 1.3), abs=1e-6)
    pooled = torch.cat([p, q])
    dist = torch.cdist(pooled, pooled)
    i, j = torch.triu_indices(70, 70, 1)
    sigma = float(dist[i, j].median())
    assert mmd(p, q) == pytest.approx(_mmd_brute(p, q, sigma), abs=1e-6)
    assert mmd(p, q, chunk=7) == pytest.approx(mmd(p, q), abs=1e-7)


def test_mmd_near_zero_for_equal_and_increasing_with_shift():
    g = _gen(4)
    p, q = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    assert abs(mmd(p, q, bandwidth=1.0)) < 5e-3
    values = [mmd(p, q + torch.tensor([s, 0.0]), bandwidth=1.0) for s in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 0.005
    assert all(a < b for a, b in zip(values, values[1:]))


def test_mmd_to_point_hand_computation_and_nonfinite():
    # samples 0, 1, 3 against the point 1, sigma = 1: pairs (0,1), (0,3), (1,3); kernels to the point e^-1/2, 1, e^-2
    e = math.exp
    kss = 2 * (e(-0.5) + e(-4.5) + e(-2.0)) / (3 * 2)
    kst = (e(-0.5) + 1.0 + e(-2.0)) / 3
    s = torch.tensor([[0.0], [1.0], [3.0]])
    assert mmd_to_point(s, torch.tensor([1.0]), 1.0) == pytest.approx(kss - 2 * kst + 1, abs=1e-6)
    assert mmd_to_point(s[:, 0], [1.0], 1.0) == pytest.approx(kss - 2 * kst + 1, abs=1e-6)  # (n,) and list input
    # an infinite sample is infinitely far: kernels 0, still counted in n = 3
    far = torch.tensor([[0.0], [1.0], [float("inf")]])
    want = 2 * e(-0.5) / 6 - 2 * (e(-0.5) + 1.0) / 3 + 1
    assert mmd_to_point(far, [1.0], 1.0, nonfinite="far") == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="samples contains NaN or inf"):
        mmd_to_point(far, [1.0], 1.0)


def test_mmd_to_point_marginals_and_gaussian_closed_form():
    g = _gen(5)
    m, sd, sigma = 0.3, 0.2, 0.5
    s = torch.stack([m + sd * torch.randn(4000, generator=g, dtype=torch.float64),
                     torch.randn(4000, generator=g, dtype=torch.float64)], -1)
    s[7, 1] = float("nan")  # only the second marginal sees it
    per = mmd_to_point(s, torch.zeros(2), sigma, marginals=True, nonfinite="far")
    assert per.shape == (2,)
    assert float(per[0]) == pytest.approx(mmd_to_point(s[:, :1], [0.0], sigma), abs=1e-9)
    # N(m, sd^2) against delta_0: sigma / sqrt(sigma^2 + 2 sd^2) - 2 sigma / sqrt(sigma^2 + sd^2) e^{-m^2 / 2(sigma^2 + sd^2)} + 1
    exact = sigma / math.sqrt(sigma**2 + 2 * sd**2) \
        - 2 * sigma / math.sqrt(sigma**2 + sd**2) * math.exp(-m**2 / (2 * (sigma**2 + sd**2))) + 1
    assert float(per[0]) == pytest.approx(exact, abs=0.01)
    assert mmd_to_point(torch.zeros(10, 3), torch.zeros(3), 0.1) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="point must have 2 entries"):
        mmd_to_point(s, torch.zeros(3), 1.0, nonfinite="far")
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_to_point(s, torch.zeros(2), 0.0, nonfinite="far")
    with pytest.raises(ValueError, match="nonfinite"):
        mmd_to_point(s, torch.zeros(2), 1.0, nonfinite="drop")


# ---------------------------------------------------------------------------------------------- SW


def test_sliced_wasserstein_closed_form_for_shifted_gaussians():
    # N(mu, S) vs N(mu + delta, S): each projection is a shift by u.delta, so
    # SW_2^2 = E[(u.delta)^2] = |delta|^2 / d and SW_1 = |delta| E|u_1| = |delta| G(d/2) / (sqrt(pi) G((d+1)/2)).
    d = 3
    delta = torch.tensor([2.0, -1.0, 2.0])  # |delta| = 3
    cov = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]])
    chol = torch.linalg.cholesky(cov)
    g = _gen(5)
    p = torch.randn(2000, d, generator=g) @ chol.T
    q = torch.randn(1500, d, generator=g) @ chol.T + delta
    sw2 = 3.0 / math.sqrt(d)
    sw1 = 3.0 * math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))
    assert sliced_wasserstein(p, q, n_projections=5000) == pytest.approx(sw2, rel=0.03)
    assert sliced_wasserstein(p, q, n_projections=5000, order=1) == pytest.approx(sw1, rel=0.03)
    # equal-size path (sorted pairs) agrees with the closed form too
    assert sliced_wasserstein(p[:1500], q, n_projections=5000) == pytest.approx(sw2, rel=0.03)
    # same distribution: small
    assert sliced_wasserstein(p[:1000], p[1000:], n_projections=500) < 0.1


def test_sliced_wasserstein_exact_in_one_dimension_with_unequal_sizes():
    g = _gen(6)
    p, q = torch.randn(37, 1, generator=g), 2 * torch.randn(23, 1, generator=g) + 1
    # in 1-d every direction is +-1, so SW_1 is the exact W_1 of the two empirical measures
    expected = wasserstein_distance(p[:, 0].numpy(), q[:, 0].numpy())
    assert sliced_wasserstein(p, q, n_projections=4, order=1) == pytest.approx(expected, rel=1e-9)
    assert sliced_wasserstein(p[:, 0], q[:, 0], n_projections=4, order=1) == pytest.approx(expected, rel=1e-9)


def test_sliced_wasserstein_seed_symmetry_and_max():
    g = _gen(7)
    p, q = torch.randn(300, 4, generator=g), torch.randn(200, 4, generator=g) + 0.5
    a = sliced_wasserstein(p, q, 200, seed=1)
    assert a == sliced_wasserstein(p, q, 200, seed=1)
    assert a == pytest.approx(sliced_wasserstein(q, p, 200, seed=1), rel=1e-12)
    assert sliced_wasserstein(p, q, 200, seed=1, reduction="max") >= a
    assert sliced_wasserstein(p, q, 200, seed=1, chunk=17) == pytest.approx(a, rel=1e-12)


# ---------------------------------------------------------------------------------------------- nlpd


def test_nlpd_is_negative_mean():
    assert nlpd([-1.0, -2.0, -3.0]) == pytest.approx(2.0)
    assert nlpd(torch.tensor([0.5])) == pytest.approx(-0.5)
    assert nlpd(torch.tensor([-float("inf"), 0.0])) == float("inf")


# ---------------------------------------------------------------------------------------------- coverage


def test_hpd_levels_and_expected_coverage_small_cases():
    lps = torch.tensor([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [3.0, 8.0]])
    levels = hpd_levels(lps, torch.tensor([1.5, 100.0]))
    assert levels.tolist() == [0.5, 0.0]
    alphas, cov = expected_coverage(torch.tensor([0.0, 0.25, 0.5, 1.0]), [0.0, 0.25, 0.6, 1.0])
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    a, c = expected_coverage(levels)
    assert a.shape == c.shape == (101,) and a[0] == 0 and a[-1] == 1 and c[-1] == 1


def test_coverage_of_exact_posterior_is_diagonal():
    # the largest deviation is a Kolmogorov-Smirnov statistic: ~0.043 at the 95% level for 1000 pairs
    theta, x = _pairs(1000, seed=8)
    alphas, cov = coverage(GaussianLinearPosterior(), theta, x, n_samples=300, batch_size=256)
    assert alphas.shape == cov.shape == (101,)
    assert float((cov - alphas).abs().max()) < 0.06
    assert torch.all(cov[1:] >= cov[:-1])


def test_coverage_flags_overconfident_and_conservative_posteriors():
    theta, x = _pairs(300, seed=9)
    alphas, over = coverage(GaussianLinearPosterior(scale=0.5), theta, x, n_samples=200)
    assert float(over[50]) < 0.3  # nominal 50% region holds the truth far less often
    assert float((over - alphas).mean()) < -0.15
    alphas, wide = coverage(GaussianLinearPosterior(scale=2.0), theta, x, n_samples=200)
    assert float(wide[50]) > 0.7
    # levels come back on request, and the seed makes the result reproducible
    a1, c1, lv = coverage(GaussianLinearPosterior(), theta, x, n_samples=50, seed=1, return_levels=True)
    a2, c2 = coverage(GaussianLinearPosterior(), theta, x, n_samples=50, seed=1)
    assert lv.shape == (300,) and torch.equal(c1, c2)


# ---------------------------------------------------------------------------------------------- SBC


def test_sbc_ranks_hand_case():
    samples = torch.tensor([[[0.0, 3.0]], [[1.0, 2.0]], [[2.0, 1.0]]])  # (n=3, m=1, d=2)
    assert sbc_ranks(samples, torch.tensor([[1.5, 0.5]])).tolist() == [[2, 0]]
    assert sbc_ranks(samples, torch.tensor([[1.5, 0.5]])).dtype == torch.int64
    with pytest.raises(ValueError, match=r"samples must have shape \(n, m, d\)"):  # 0-d theta: not an IndexError
        sbc_ranks(torch.zeros(5, 3), torch.tensor(1.0))


def test_sbc_uniform_for_exact_posterior_and_not_for_overconfident():
    theta, x = _pairs(600, d=2, seed=10)
    torch.manual_seed(0)
    n = 99
    exact = sbc_ranks(GaussianLinearPosterior().sample_batched(x, n), theta)
    narrow = sbc_ranks(GaussianLinearPosterior(scale=0.5).sample_batched(x, n), theta)
    assert exact.shape == (600, 2) and int(exact.min()) >= 0 and int(exact.max()) <= n
    for method in ("ks", "chi2"):
        assert torch.all(sbc_uniformity(exact, n, method=method) > 1e-3)
        assert torch.all(sbc_uniformity(narrow, n, method=method) < 1e-6)


def test_sbc_uniformity_exactly_uniform_ranks():
    ranks = torch.arange(100).repeat(3).reshape(-1, 1)  # every value of {0..99} three times, n = 99
    assert float(sbc_uniformity(ranks, 99, method="chi2", bins=10)[0]) == pytest.approx(1.0)
    assert float(sbc_uniformity(ranks, 99)[0]) > 0.5


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [mmd, sliced_wasserstein, c2st])
def test_two_sample_bad_inputs_name_the_argument(fn):
    p = torch.randn(20, 2)
    with pytest.raises(ValueError, match="p and q"):
        fn(p, torch.randn(20, 3))
    with pytest.raises(ValueError, match=r"^q "):
        fn(p, torch.empty(0, 2))
    with pytest.raises(ValueError, match=r"^p "):
        fn(torch.randn(4, 2, 2), p)
    with pytest.raises(ValueError, match=r"^p .*NaN"):
        fn(torch.full((20, 2), float("nan")), p)


def test_option_errors_name_the_argument():
    p = torch.randn(20, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(p, p, bandwidth=-1.0)
    with pytest.raises(ValueError, match="order"):
        sliced_wasserstein(p, p, order=0.5)
    with pytest.raises(ValueError, match="reduction"):
        sliced_wasserstein(p, p, reduction="median")
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(p, p, n_projections=0)
    with pytest.raises(ValueError, match="n_folds"):
        c2st(p, p, n_folds=1)
    with pytest.raises(ValueError, match="q has 3 samples"):
        c2st(p, p[:3])


def test_calibration_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="log_prob_true"):
        nlpd(torch.empty(0))
    with pytest.raises(ValueError, match="log_prob_true"):
        nlpd(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="log_prob_samples has 3 observations"):
        hpd_levels(torch.zeros(10, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="log_prob_samples"):
        hpd_levels(torch.zeros(0, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="levels"):
        expected_coverage(torch.tensor([0.2, 1.5]))
    with pytest.raises(ValueError, match="alphas"):
        expected_coverage(torch.tensor([0.2]), alphas=[-0.1, 0.5])
    with pytest.raises(ValueError, match="samples of shape"):
        sbc_ranks(torch.zeros(10, 4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="samples and theta"):
        sbc_ranks(torch.zeros(0, 4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="ranks must be integers in"):
        sbc_uniformity(torch.tensor([[0], [11]]), 10)
    with pytest.raises(ValueError, match="method"):
        sbc_uniformity(torch.tensor([[0], [1]]), 10, method="ad")
    theta, x = _pairs(10)
    with pytest.raises(ValueError, match=r"^x must have shape"):
        coverage(GaussianLinearPosterior(), theta, x[:5], n_samples=10)
    with pytest.raises(ValueError, match=r"^theta must have shape"):
        coverage(GaussianLinearPosterior(), theta[:, 0], x, n_samples=10)
    with pytest.raises(TypeError, match="estimator must provide sample_batched"):
        coverage(object(), theta, x, n_samples=10)


def test_c2st_parallel_folds_give_the_same_accuracy():
    g = torch.Generator().manual_seed(3)
    p, q = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 0.5
    one = c2st(p, q, seed=1, backend="sklearn")
    assert 0.55 < one < 0.75  # a half-sd shift is partly detectable
    assert c2st(p, q, seed=1, n_jobs=2, backend="sklearn") == one
    with pytest.raises(ValueError, match="n_jobs"):
        c2st(p, q, n_jobs=0)
