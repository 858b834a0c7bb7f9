"""The shared VP schedule and the reverse-diffusion steps, checked against closed forms."""

import math

import pytest
import torch

from telescope.diffusion import (
    VPSchedule,
    ddim_coefficients,
    ddim_step,
    ddpm_step,
    deterministic_part,
    eps_to_score,
    initial_state,
    noise_prediction_loss,
    ode_step,
    predict_x0,
    q_sample,
    reverse_sample,
    sampler_eta,
    score_to_eps,
)
from telescope.mlmc.gaussian import GaussianData


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread is fastest, and much faster than two on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_endpoints_monotone_inverse(kind):
    sch = VPSchedule(kind)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    ab = sch.alpha_bar(t)
    assert float(ab[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(ab[-1]) < 1e-3
    assert torch.all(ab[1:] <= ab[:-1])
    inner = t[1:-5]
    assert torch.allclose(sch.t_from_alpha_bar(sch.alpha_bar(inner)), inner, atol=1e-8)
    assert torch.allclose(sch.sigma(t) ** 2 + ab, torch.ones_like(t), atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_beta_is_minus_dlog_alpha_bar(kind):
    sch = VPSchedule(kind)
    t = torch.linspace(0.05, 0.9, 20, dtype=torch.float64)
    h = 1e-6
    num = -(sch.log_alpha_bar(t + h) - sch.log_alpha_bar(t - h)) / (2 * h)
    assert torch.allclose(sch.beta(t), num, rtol=1e-5)


def test_linear_schedule_closed_form_and_dtype():
    sch = VPSchedule(beta_min=0.1, beta_max=20.0)
    assert float(sch.alpha_bar(1.0)) == pytest.approx(math.exp(-10.05), rel=1e-6)
    assert sch.alpha_bar(torch.tensor([0.5])).dtype == torch.float32
    assert VPSchedule(**sch.to_dict()).to_dict() == sch.to_dict()


def test_timesteps_nest_across_levels():
    sch = VPSchedule()
    for spacing in ("uniform", "quadratic"):
        fine = sch.timesteps(24, 0.8, 0.0, spacing)
        coarse = sch.timesteps(8, 0.8, 0.0, spacing)
        assert torch.allclose(fine[::3], coarse, atol=1e-15)
        assert fine[0] == 0.8 and fine[-1] == 0.0


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="kind"):
        VPSchedule("sigmoid")
    with pytest.raises(ValueError, match="steps"):
        VPSchedule().timesteps(0)
    with pytest.raises(ValueError, match="t_end"):
        VPSchedule().timesteps(4, 0.5, 0.7)
    with pytest.raises(ValueError, match="sampler"):
        sampler_eta("euler")
    with pytest.raises(ValueError, match="eta"):
        sampler_eta("ddpm", 0.3)
    with pytest.raises(ValueError, match="alpha_bar"):
        VPSchedule().t_from_alpha_bar(1.5)
    with pytest.raises(ValueError, match="x_obs"):
        initial_state(3, (2,), init="observation")
    with pytest.raises(TypeError, match="clip_x0"):
        deterministic_part(torch.zeros(1, 1), torch.zeros(1, 1), 0.5, 0.6, 0.0, clip_x0="big")


def test_ddpm_coefficients_match_eq13_and_eq12_composition():
    sch = VPSchedule()
    g = sch.alpha_bar(torch.tensor([0.6, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)).tolist()
    t, s = g[0], g[1]
    a, b, c, k = ddim_coefficients(t, s, 1.0)
    G_t, G_s = 1 - t, 1 - s
    # eq. (13): x_s = sqrt(g_s/g_t) x_t - sqrt(g_t/g_s)(G_s - g_s/g_t G_t) s_theta, s_theta = -eps/sqrt(G_t)
    assert a == pytest.approx(math.sqrt(s / t))
    assert b == pytest.approx(math.sqrt(t / s) * (G_s - s / t * G_t) / math.sqrt(G_t))
    assert c**2 == pytest.approx(G_s / G_t * (1 - t / s))
    assert k == pytest.approx(math.sqrt(t / s) * G_s / G_t)           # Algorithm 2, line 6
    # eq. (12): the propagated sum of M fine noises has the coarse step's variance, and
    # the propagation factors compose (eta = 1 only)
    var, K = 0.0, 1.0
    for i in range(4):
        _, _, ci, ki = ddim_coefficients(g[i], g[i + 1], 1.0)
        var, K = ki**2 * var + ci**2, K * ki
    _, _, cc, kc = ddim_coefficients(g[0], g[4], 1.0)
    assert var == pytest.approx(cc**2, rel=1e-12)
    assert K == pytest.approx(kc, rel=1e-12)


def test_ddim_eta0_is_deterministic_and_steps_agree():
    x, e = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.equal(ode_step(x, e, 0.3, 0.5), ddim_step(x, e, 0.3, 0.5, 0.0))
    z = torch.randn(5, 3)
    assert torch.allclose(ddpm_step(x, e, 0.3, 0.5, noise=z), ddim_step(x, e, 0.3, 0.5, 1.0, noise=z))
    # a step to t = 0 returns the denoised estimate
    assert torch.allclose(ddim_step(x, e, 0.3, 1.0, 1.0), predict_x0(x, e, 0.3), atol=1e-6)
    # clipping with a wide range changes nothing
    assert torch.allclose(deterministic_part(x, e, 0.3, 0.5, 0.5, clip_x0=1e6), deterministic_part(x, e, 0.3, 0.5, 0.5),
                          atol=1e-5)


def test_score_conversions_and_q_sample():
    eps = torch.randn(4, 2)
    assert torch.allclose(score_to_eps(eps_to_score(eps, 0.3), 0.3), eps)
    sch = VPSchedule()
    x0 = torch.full((200000, 1), 2.0)
    t = torch.full((200000,), 0.3)
    xt, _ = q_sample(x0, t, sch, generator=torch.Generator().manual_seed(0))
    a = float(sch.alpha_bar(0.3))
    assert float(xt.mean()) == pytest.approx(2 * math.sqrt(a), abs=0.01)
    assert float(xt.var()) == pytest.approx(1 - a, abs=0.01)


def test_initial_state_three_cases():
    x_obs = torch.tensor([1.0, 2.0, 3.0])
    g = torch.Generator().manual_seed(0)
    assert torch.equal(initial_state(4, init="observation", x_obs=x_obs), x_obs.expand(4, 3))
    z = initial_state(20000, (3,), init="noise", generator=g)
    assert float(z.mean()) == pytest.approx(0, abs=0.03) and float(z.std()) == pytest.approx(1, abs=0.03)
    m = torch.tensor([0.0, 1.0, 0.0])
    xm = initial_state(1000, init="mask", x_obs=x_obs, mask=m, generator=g)
    assert torch.all(xm[:, 0] == 1) and torch.all(xm[:, 2] == 3) and float(xm[:, 1].std()) > 0.8


@pytest.mark.parametrize("sampler", ["ddpm", "ode"])
def test_reverse_sample_reaches_exact_gaussian(sampler):
    data = GaussianData([1.0, -0.5], 0.5)
    g = torch.Generator().manual_seed(1)
    x = reverse_sample(data.eps, initial_state(20000, (2,), generator=g), schedule=data.schedule, steps=256,
                       sampler=sampler, spacing="quadratic", generator=g)
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -0.5]), atol=0.03)
    assert torch.allclose(x.std(0), torch.tensor([0.5, 0.5]), atol=0.03)


def test_reverse_sample_holds_masked_components():
    data = GaussianData([0.0, 0.0, 0.0], 0.5)
    x_obs = torch.tensor([0.7, 0.0, -0.2])
    m = torch.tensor([0.0, 1.0, 0.0])
    xT = initial_state(10, init="mask", x_obs=x_obs, mask=m)
    x = reverse_sample(data.eps, xT, steps=8, mask=m)
    assert torch.all(x[:, 0] == 0.7) and torch.all(x[:, 2] == -0.2)


def test_noise_prediction_loss_prefers_the_exact_eps():
    data = GaussianData([1.0, -0.5], 0.5)
    x0 = 1.0 + 0.5 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    x0[:, 1] -= 1.5
    g = torch.Generator().manual_seed(2)
    exact = noise_prediction_loss(data.eps, x0, data.schedule, generator=g)
    zero = noise_prediction_loss(lambda x, t, y: torch.zeros_like(x), x0, data.schedule, generator=g)
    assert float(exact) < float(zero)
    masked = noise_prediction_loss(data.eps, x0, data.schedule, mask=torch.tensor([1.0, 0.0]), generator=g)
    assert torch.isfinite(masked)
