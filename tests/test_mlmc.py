"""MLMC driver, tests and coupled diffusion levels, checked against an exact Gaussian model.

For data N(mu, s^2 I) every DDIM step with the exact noise prediction is affine, so the coupled
fine/coarse end states of a level are jointly Gaussian and ``GaussianData.exact_levels`` gives
the exact E[P_l], ||E[P_l - P_{l-1}]|| and V_l of P = x^2.  Theory for these first-order
samplers (exponential integrators of the reverse SDE / probability-flow ODE, additive noise):
weak order 1, so alpha = 1; strong order 1, so V_l ~ h^2, beta = 2.  One exception: DDPM's final
step to t = 0 adds no noise, so the fine path's noise on the last fine step has no coarse
counterpart; its variance is the length of that step: O(h^2) on the quadratic grid (beta = 2),
O(h) on a uniform grid, where beta therefore falls to 1 on fine levels (the paper's beta ~ 1).
"""

import json
import math
import pathlib
import sys

import numpy as np
import pytest
import torch

from telescope.mlmc import (
    MLMCWarning,
    complexity_test,
    convergence_test,
    fit_rate,
    mlmc,
    mlmc_test,
    select_start_level,
    start_level_from,
)
from telescope.mlmc.coupled import CoupledDiffusion
from telescope.mlmc.gaussian import GaussianData


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_sampler(seed=0, decay=True):
    """P_l = 1 + 2^-l (1 + z): mean bias 2^-l (alpha = 1), V_l = 4^-l (beta = 2)."""
    rng = np.random.default_rng(seed)

    def sampler(level, n):
        z = rng.standard_normal((n, 3))
        if not decay:  # independent fine and coarse draws: V_l does not decay
            return 1 + z, 1 + rng.standard_normal((n, 3))
        fine = 1 + 2.0**-level * (1 + z)
        coarse = 1 + 2.0 ** -(level - 1) * (1 + z) if level > 0 else None
        return fine, coarse

    return sampler


def gauss_levels(sampler="ddpm", eta=None, spacing="quadratic", seed=0, **kw):
    data = GaussianData(torch.linspace(-1, 1, 4), 0.5)
    lv = CoupledDiffusion(data.eps, shape=(4,), schedule=data.schedule, sampler=sampler, eta=eta, spacing=spacing,
                          seed=seed, **kw)
    return lv, data


# -- the generic driver --------------------------------------------------------------------
def test_mlmc_toy_estimate_rates_and_allocation():
    res = mlmc(toy_sampler(), 0.005)
    assert np.all(np.abs(res.estimate - 1) < 3 * 0.005)
    assert res.alpha == pytest.approx(1, abs=0.25) and res.beta == pytest.approx(2, abs=0.3)
    assert res.gamma == pytest.approx(1, abs=1e-6)
    assert res.converged and res.rmse <= 0.005 * 1.05
    assert list(res.N) == sorted(res.N, reverse=True)     # fewer samples on finer levels
    d = res.to_dict()
    json.dumps(d)
    assert d["L"] == res.levels[-1] and len(d["estimate"]) == 3


def test_mlmc_rejects_bad_input():
    s = toy_sampler()
    with pytest.raises(ValueError, match="eps"):
        mlmc(s, 0.0)
    with pytest.raises(ValueError, match="eps"):
        mlmc(s, -1e-3)
    with pytest.raises(ValueError, match="M must be"):
        mlmc(s, 0.1, M=1)
    with pytest.raises(ValueError, match="norm"):
        mlmc(s, 0.1, norm="max")
    with pytest.raises(TypeError, match="sampler"):
        mlmc("not callable", 0.1)

    def mismatched(level, n):
        return np.zeros((n, 3)), np.zeros((n, 2))

    with pytest.raises(ValueError, match="P_coarse of shape"):
        mlmc(mismatched, 0.1)

    def wrong_n(level, n):
        return np.zeros((n + 1, 3)), np.zeros((n + 1, 3))

    with pytest.raises(ValueError, match="P_fine of shape"):
        mlmc(wrong_n, 0.1)

    def nan(level, n):
        return np.full((n, 1), np.nan), np.zeros((n, 1))

    with pytest.raises(ValueError, match="NaN"):
        mlmc(nan, 0.1)
    with pytest.raises(ValueError, match="eps"):
        complexity_test(s, [0.1, 0.0])


def test_non_decaying_variance_warns_with_beta():
    with pytest.warns(MLMCWarning, match=r"measured beta = -?\d"):
        convergence_test(toy_sampler(decay=False), 2000, 4)


def test_sampler_reported_cost_and_cost_model():
    def with_cost(level, n):
        z = np.random.default_rng(level).standard_normal((n, 1))
        return 2.0**-level * z, (2.0 ** (1 - level) * z if level else None), n * 10.0 * 3**level

    res = mlmc(with_cost, 0.05)
    assert res.C[1] == pytest.approx(30.0)
    assert res.gamma == pytest.approx(math.log(3, 2), abs=1e-6)
    res2 = mlmc(toy_sampler(), 0.05, cost=lambda l: 4.0**l)
    assert res2.C[1] == pytest.approx(4 + 1)


def test_fit_rate():
    assert fit_rate([2, 3, 4], [1, 0.25, 0.0625], 2) == pytest.approx(2)
    assert math.isnan(fit_rate([1, 2], [0.0, 1.0], 2))


# -- coupled diffusion levels --------------------------------------------------------------
@pytest.mark.parametrize("sampler,eta", [("ddpm", None), ("ddim", 0.5), ("ode", None)])
def test_coupled_levels_match_exact_moments(sampler, eta):
    """MC per-level moments agree with the exact Gaussian recursion (validates Algorithm 2)."""
    lv, data = gauss_levels(sampler, eta)
    n = 20000
    conv = convergence_test(lv, n, 6, warn=False)
    ex = data.exact_levels(range(7), sampler=sampler, eta=eta, spacing="quadratic")
    for level in range(2, 7):
        # variance estimates: relative error ~ sqrt((kurtosis - 1) / n) < 3%
        assert conv["var"][level] == pytest.approx(ex["var"][level], rel=0.1)
        assert conv["var_fine"][level] == pytest.approx(ex["var_fine"][level], rel=0.1)
        # the coarse path of level l has the law of the fine path of level l - 1
        assert conv["var_coarse"][level] == pytest.approx(ex["var_fine"][level - 1], rel=0.1)
        se = math.sqrt(conv["var"][level] / n)
        assert abs(conv["mean"][level] - ex["mean"][level]) < 4 * se + 0.05 * ex["mean"][level]
    assert max(conv["consistency"]) < 1          # telescoping consistency


def test_measured_rates_near_theory_ode():
    """Deterministic sampler: alpha ~ 1, beta ~ 2 measured on levels 4..8 (measured = exact there)."""
    lv, data = gauss_levels("ode")
    conv = convergence_test(lv, 4000, 8, fit_from=4, warn=False)
    ex = data.exact_levels(range(9), sampler="ode", spacing="quadratic")
    lv_fit = list(range(4, 9))
    a_ex = fit_rate(lv_fit, ex["mean"][4:], 2)
    b_ex = fit_rate(lv_fit, ex["var"][4:], 2)
    assert conv["alpha"] == pytest.approx(1.0, abs=0.2) and conv["alpha"] == pytest.approx(a_ex, abs=0.1)
    assert conv["beta"] == pytest.approx(2.0, abs=0.25) and conv["beta"] == pytest.approx(b_ex, abs=0.15)
    assert conv["gamma"] == pytest.approx(1.0, abs=1e-6)


def test_exact_rates_approach_theory_on_fine_levels():
    """Exact recursion up to 2^12-2^13 steps: alpha -> 1 and beta -> 2 (quadratic grid), DDPM on a
    uniform grid beta falls towards 1 (final noise-free step)."""
    data = GaussianData(torch.linspace(-1, 1, 4), 0.5)
    lv = range(9, 13)
    for sampler in ("ddpm", "ode"):
        ex = data.exact_levels(lv, sampler=sampler, spacing="quadratic")
        assert fit_rate(lv, ex["mean"], 2) == pytest.approx(1.0, abs=0.05)
        assert fit_rate(lv, ex["var"], 2) == pytest.approx(2.0, abs=0.08)
    ex = data.exact_levels(range(11, 14), sampler="ddpm", spacing="uniform")
    local = -np.diff(np.log2(ex["var"]))
    assert local[-1] < 1.3 and local[-1] < local[0]
    assert fit_rate(range(11, 14), ex["mean"], 2) == pytest.approx(1.0, abs=0.1)


def test_mlmc_estimate_within_eps_of_truth():
    """DDPM on the exact Gaussian: the error against E x^2 = mu^2 + s^2 is at most eps in RMS
    over seeds (finite-time error of the sampler ~5e-4 here)."""
    eps = 0.02
    ratios = []
    for seed in range(5):
        lv, data = gauss_levels("ddpm", seed=seed)
        res = mlmc(lv, eps, start_level=2, warn=False)
        err = float(np.sqrt(np.mean((res.estimate - data.second_moment().numpy()) ** 2)))
        ratios.append(err / eps)
        assert res.converged
    assert math.sqrt(np.mean(np.square(ratios))) <= 1.2
    assert max(ratios) < 2.5


def test_complexity_test_savings_and_plot(tmp_path):
    lv, _ = gauss_levels("ode")
    res = mlmc_test(lv, n=2000, L=6, eps=[0.04, 0.02, 0.01], plot=str(tmp_path / "fig3.png"), title="t")
    comp = res["complexity"]
    assert (tmp_path / "fig3.png").stat().st_size > 10000
    json.dumps(res)
    assert len(comp["savings"]) == 3 and comp["savings"][-1] > 4
    assert all(s > 0 for s in comp["mlmc_cost"])
    assert comp["savings"][-1] >= comp["savings"][0]
    assert res["convergence"]["start_level"] == comp["start_level"]


def test_start_level_eq19():
    lv, _ = gauss_levels("ddpm", spacing="uniform")
    sel = select_start_level(lv, n=2000, max_level=6)
    assert 0 <= sel["start_level"] <= 6 and sel["pilot"][-1]["eq19"]
    conv = {"levels": [0, 1, 2, 3], "var": [1.0, 3.0, 0.1, 0.02], "var_fine": [1.0, 1.0, 1.0, 1.0],
            "var_coarse": [0.0, 1.0, 1.0, 1.0], "cost_fine": [1, 2, 4, 8]}
    # (sqrt(2) - 1)^2 / 3 = 0.057: level 1 -> 2 fails (0.1), level 2 -> 3 passes (0.02)
    assert start_level_from(conv) == 2


def test_coupled_diffusion_protocol_and_cases():
    data = GaussianData(torch.zeros(3), 0.5)
    x_obs = torch.tensor([0.5, 0.0, -0.5])
    m = torch.tensor([1.0, 0.0, 1.0])
    lv = CoupledDiffusion(data.eps, init="mask", x_obs=x_obs, mask=m, sampler="ode", seed=3, batch_size=7)
    pf, pc, nfe = lv(3, 20)
    assert pf.shape == pc.shape == (20, 3) and nfe == 20 * (8 + 4)
    xf, xc = lv.paths(3, 20)
    assert torch.all(xf[:, 1] == 0) and torch.all(xc[:, 1] == 0)      # observed component held
    pf0, pc0, nfe0 = lv(3, 5, coarse=False)
    assert pc0 is None and nfe0 == 5 * 8
    # same seed, same result; batching does not change the law's first moments
    a = CoupledDiffusion(data.eps, shape=(3,), seed=11)(4, 50)[0]
    b = CoupledDiffusion(data.eps, shape=(3,), seed=11)(4, 50)[0]
    assert torch.equal(a, b)
    obs = CoupledDiffusion(data.eps, init="observation", x_obs=x_obs, t_start=0.3, sampler="ode")
    xf, xc = obs.paths(2, 4)
    assert torch.allclose(xf, xf[:1].expand(4, 3))                        # M = 0 and eta = 0: deterministic
    with pytest.raises(ValueError, match="M must be"):
        CoupledDiffusion(data.eps, shape=(3,), M=1)
    with pytest.raises(ValueError, match="x_obs"):
        CoupledDiffusion(data.eps, shape=(3,), init="mask", mask=m)


def test_cli_mlmc_test_gaussian(tmp_path, capsys):
    import argparse

    from telescope.cli.mlmc import add_parsers

    parser = argparse.ArgumentParser(prog="telescope")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mlmc-test", "--sampler", "ode", "--n", "1000", "-L", "5", "--eps", "0.04", "0.02",
                              "--out", str(tmp_path), "--quiet"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)["gaussian"]
    assert (tmp_path / "gaussian_ode.json").exists() and (tmp_path / "gaussian_ode.png").exists()
    assert len(out["savings"]) == 2
    bad = parser.parse_args(["mlmc-test", "--eps", "-1", "--out", str(tmp_path), "--quiet", "--n", "100", "-L", "3"])
    assert bad.func(bad) == 2
    assert "eps" in capsys.readouterr().err


def _digits_runner():
    """The digits experiment's runner: ``benchmarks/mlmc_digits.py`` (an experiment, not part of the library)."""
    bench = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import mlmc_digits

    return mlmc_digits


def test_digits_problem_shapes_untrained():
    from telescope.diffusion import VPSchedule

    digits = _digits_runner()
    DigitsEps, digits_problem, load_digits_tensor = digits.DigitsEps, digits.digits_problem, digits.load_digits_tensor

    torch.manual_seed(0)
    net = DigitsEps(hidden=32).eval()
    x = load_digits_tensor()
    assert x.shape == (1797, 64) and float(x.min()) == -1 and float(x.max()) == 1
    for task, q in (("denoise", 64), ("inpaint", 16), ("superres", 64)):
        lv, info = digits_problem(task, net, x[1700], schedule=VPSchedule())
        pf, pc, nfe = lv(2, 6)
        assert pf.shape == (6, q) and pc.shape == (6, q) and nfe == 6 * 6
        assert torch.isfinite(pf).all()


@pytest.mark.slow
def test_digits_savings_small_run(tmp_path):
    """A reduced digits run (short training): MLMC must beat MC at the smallest eps."""
    res = _digits_runner().run_digits(str(tmp_path), tasks=("inpaint",), train_steps=2000, n=500, L=7, eps=(0.01, 0.004),
                     log=lambda m: None)
    assert res["inpaint"]["complexity"]["savings"][-1] > 2


def test_doctests():
    import doctest

    import telescope.diffusion
    import telescope.mlmc.coupled
    import telescope.mlmc.driver
    import telescope.mlmc.gaussian
    import telescope.mlmc.report

    for mod in (telescope.mlmc.driver, telescope.diffusion, telescope.mlmc.coupled, telescope.mlmc.gaussian,
                telescope.mlmc.report):
        assert doctest.testmod(mod).failed == 0, mod.__name__
