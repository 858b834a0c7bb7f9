"""TARP, SBC with simultaneous ECDF bands, posterior predictive checks and their figures (issue 21, item 6).

The truths: a conjugate Gaussian model, theta ~ N(0, I_2), x | theta ~ N(theta, s2 I_2), whose exact
posterior is N(x / (1 + s2), s2 / (1 + s2) I_2).  Exact samples must be calibrated (within a stated
tolerance), and over-/under-confident or biased samples must be flagged.
"""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

import telescope as ts
from telescope import calibration
from telescope.metrics import (
    posterior_predictive_check,
    sbc_ecdf,
    sbc_ecdf_bands,
    sbc_ecdf_pvalues,
    sbc_ranks,
    tarp,
    tarp_coverage,
)

S2 = 0.5


def _pairs(m: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(m, 2, generator=g, dtype=torch.float64)
    x = theta + S2**0.5 * torch.randn(m, 2, generator=g, dtype=torch.float64)
    return theta, x, g


def _posterior(x, n, g, *, scale=1.0, shift=0.0):
    mu, sd = x / (1 + S2), (S2 / (1 + S2)) ** 0.5
    return mu + shift + scale * sd * torch.randn(n, *x.shape, generator=g, dtype=torch.float64)


class _Exact:
    """An amortised estimator with the exact posterior (sample_batched only, as TARP needs)."""

    def sample_batched(self, x, n):
        mu, sd = x / (1 + S2), (S2 / (1 + S2)) ** 0.5
        return mu + sd * torch.randn(n, *x.shape, dtype=x.dtype)


# -- TARP --------------------------------------------------------------------------------------
def test_tarp_is_on_the_diagonal_for_exact_samples_and_off_it_otherwise():
    theta, x, g = _pairs(500, 0)
    a, ecp, f = tarp(_posterior(x, 200, g), theta, return_levels=True)
    assert a.shape == ecp.shape == (101,) and f.shape == (500,)
    # 500 pairs: the KS 99% band of a uniform ECDF is 1.63 / sqrt(500) = 0.073
    assert (ecp - a).abs().max() < 0.073
    assert stats.kstest(f.numpy(), "uniform").pvalue > 0.01
    for kind, samples in [("overconfident", _posterior(x, 200, g, scale=0.5)),
                          ("underconfident", _posterior(x, 200, g, scale=2.0)),
                          ("biased", _posterior(x, 200, g, shift=0.8))]:
        a, ecp = tarp(samples, theta)
        assert (ecp - a).abs().max() > 0.1, kind


def test_tarp_coverage_of_an_estimator_equals_tarp_of_its_samples_and_checks_input():
    theta, x, _ = _pairs(300, 1)
    a, ecp = tarp_coverage(_Exact(), theta, x, n_samples=200, batch_size=128, seed=3)
    assert (ecp - a).abs().max() < 0.1
    torch.manual_seed(3)
    samples = torch.cat([_Exact().sample_batched(xb, 200) for xb in x.split(128)], 1)
    assert torch.equal(tarp(samples, theta, seed=3)[1], ecp)
    with pytest.raises(ValueError, match=r"samples must have shape \(n, m, d\) and theta \(m, d\).*\(10, 300, 2\) and \(299, 2\)"):
        tarp(samples[:10], theta[:-1])
    with pytest.raises(ValueError, match=r"got shapes \(5, 3\) and \(\)"):  # a 0-d theta: a clear error, not IndexError
        tarp(torch.zeros(5, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="references must be a finite"):
        tarp(samples[:10], theta, references=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x must have shape"):
        tarp_coverage(_Exact(), theta, x[:5])
    with pytest.raises(TypeError, match="sample_batched"):
        tarp_coverage(object(), theta, x)


# -- SBC with simultaneous ECDF bands ----------------------------------------------------------
def test_ecdf_band_is_simultaneous_under_uniform_ranks_and_wider_than_pointwise():
    m, L = 200, 99
    band = sbc_ecdf_bands(m, L, confidence=0.95, seed=0)
    g = torch.Generator().manual_seed(1)
    r = torch.randint(0, L + 1, (m, 1000), generator=g)
    z, F = sbc_ecdf(r, L)
    inside = ((F >= band["lower"][:, None] - 1e-12) & (F <= band["upper"][:, None] + 1e-12)).all(0).double().mean()
    assert 0.925 < inside < 0.975  # 1000 sets: SE 0.007 around 0.95
    pointwise_lo = stats.binom.ppf(0.025, m, z.numpy()) / m
    assert (band["lower"].numpy() <= pointwise_lo).all() and (band["lower"].numpy() < pointwise_lo).any()
    p = sbc_ecdf_pvalues(r, L, seed=2)
    assert 0.02 < (p < 0.05).double().mean() < 0.09  # about uniform p-values under the null


def test_ecdf_test_flags_overconfident_and_biased_posteriors():
    theta, x, g = _pairs(300, 4)
    L = 99
    exact = sbc_ranks(_posterior(x, L, g), theta)
    over = sbc_ranks(_posterior(x, L, g, scale=0.6), theta)
    biased = sbc_ranks(_posterior(x, L, g, shift=0.3), theta)
    assert (sbc_ecdf_pvalues(exact, L) > 0.01).all()
    assert (sbc_ecdf_pvalues(over, L) < 0.01).all() and (sbc_ecdf_pvalues(biased, L) < 0.01).all()
    band = sbc_ecdf_bands(300, L)
    _, F = sbc_ecdf(over, L)
    assert ((F < band["lower"][:, None]) | (F > band["upper"][:, None])).any(0).all()
    with pytest.raises(ValueError, match=r"ranks must be integers in \[0, n_samples\] = \[0, 99\]"):
        sbc_ecdf_pvalues(exact + 1, L)
    with pytest.raises(ValueError, match="confidence must lie in"):
        sbc_ecdf_bands(300, L, confidence=1.5)


# -- posterior predictive check ----------------------------------------------------------------
def test_posterior_predictive_check_passes_exact_posteriors_and_flags_wrong_ones():
    task = ts.tasks.get("gaussian_linear", dim=2)
    x_o = task.observation(1)
    ref = task.reference_samples(1, 2000)
    chk = posterior_predictive_check(task.simulator, ref, x_o, seed=0)
    assert chk["x_rep"].shape == (2000, 2) and chk["n_failed"] == 0
    assert chk["p_value"] > 0.05 and (chk["p_values"] > 0.05).all()
    again = posterior_predictive_check(task.simulator, ref, x_o, seed=0)
    assert torch.equal(again["x_rep"], chk["x_rep"])  # seeded
    assert not torch.equal(posterior_predictive_check(task.simulator, ref, x_o, seed=1)["x_rep"], chk["x_rep"])
    sd = ref.std(0)
    wrong = posterior_predictive_check(task.simulator, ref + 6 * sd, x_o, seed=0)
    assert wrong["p_value"] < 0.01 and (wrong["p_values"] < 0.05).all()
    # a plain callable runs under a seeded torch state
    sim = lambda th: th + 0.1 * torch.randn_like(th)  # noqa: E731
    a = posterior_predictive_check(sim, ref, x_o, seed=5)["x_rep"]
    assert torch.equal(a, posterior_predictive_check(sim, ref, x_o, seed=5)["x_rep"])
    with pytest.raises(ValueError, match="x_o has 3 values"):
        posterior_predictive_check(task.simulator, ref, torch.zeros(3))
    with pytest.raises(TypeError, match="simulator must be callable"):
        posterior_predictive_check(None, ref, x_o)


# -- figures -----------------------------------------------------------------------------------
def test_figures_are_built_and_saved(tmp_path):
    from matplotlib.figure import Figure

    theta, x, g = _pairs(300, 5)
    a, ecp = tarp(_posterior(x, 100, g), theta)
    fig = ts.plots.tarp_plot(a, {"exact": ecp, "overconfident": tarp(_posterior(x, 100, g, scale=0.5), theta)[1]},
                             n_pairs=300, path=tmp_path / "tarp.png")
    assert isinstance(fig, Figure) and (tmp_path / "tarp.png").stat().st_size > 0
    ranks = sbc_ranks(_posterior(x, 99, g), theta)
    fig = ts.plots.sbc_ecdf_plot(ranks, 99, histogram=True, n_sim=500, path=tmp_path / "sbc.png")
    assert len(fig.axes) == 4 and (tmp_path / "sbc.png").exists()
    assert "p = " in fig.axes[1].get_title() or "p = " in fig.axes[2].get_title()
    chk = posterior_predictive_check(lambda t: t + torch.randn_like(t), _posterior(x[:1], 500, g)[:, 0], x[0])
    assert len(ts.plots.ppc_plot(chk, tmp_path / "ppc.png").axes) == 2
    many = posterior_predictive_check(lambda t: t.repeat(1, 10) + torch.randn(t.shape[0], 20),
                                      torch.randn(300, 2), torch.zeros(20))
    assert len(ts.plots.ppc_plot(many).axes) == 1  # 20 coordinates > max_panels: one band panel
    with pytest.raises(TypeError, match="check must be the dict"):
        ts.plots.ppc_plot({"x": 1})


def test_import_telescope_does_not_load_matplotlib_and_doctests_pass():
    code = "import sys, telescope as ts; ts.metrics.tarp; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    import telescope.plots.calibration as pc

    for mod in (calibration, pc):
        assert doctest.testmod(mod).failed == 0, mod.__name__
    assert np.isfinite(sbc_ecdf_bands(50, 9, points=5, n_sim=200)["gamma"])
