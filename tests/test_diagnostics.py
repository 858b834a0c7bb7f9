"""Ratio-estimator diagnostics against known truths: the exact Gaussian ratio, a biased one, trained NRE-C/NRE-B."""

import math

import pytest
import torch
from matplotlib.figure import Figure

from _nre_gaussian import SIMULATOR, TRUE_MI, ExactRatio, simulate, trained
from telescope.diagnostics import (
    expected_coverage,
    importance_diagnostic,
    log_normalizer,
    mutual_information,
    plot_coverage,
    plot_log_normalizer,
    plot_mutual_information,
    plot_roc,
    select,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bias(x):  # an x-dependent offset c(x), as NRE-B may learn
    return 1.5 + x[:, 0]


# -- log Z ------------------------------------------------------------------------------------------


def test_log_normalizer_of_the_exact_ratio_is_zero():
    _, x = simulate(50, seed=1)
    log_z, ess = log_normalizer(ExactRatio(), x, n=20_000, seed=0, return_ess=True)
    assert log_z.shape == (50,) and ess.shape == (50,)
    # Monte Carlo error: about sqrt(1 / ess) per observation
    assert (log_z.abs() < 4 / ess.sqrt()).all(), (log_z, ess)
    assert log_z.abs().mean() < 0.05
    # a biased ratio has log Z = c(x) exactly
    log_zb = log_normalizer(ExactRatio(_bias), x, n=20_000, seed=0)
    assert torch.allclose(log_zb - log_z, _bias(x).double(), atol=1e-5)


def test_nre_b_is_biased_nre_c_is_not():
    """Paper 2, eqs. 13-14: NRE-C is trained towards Z(x) = 1, NRE-B's Z(x) is unconstrained."""
    _, x = simulate(200, seed=7)
    c = log_normalizer(trained(1.0), x, n=20_000).abs().mean()
    b = log_normalizer(trained(math.inf), x, n=20_000).abs().mean()
    assert c < 0.2, float(c)
    assert b > 0.5, float(b)
    assert b > 4 * c


# -- mutual information -----------------------------------------------------------------------------


def test_mutual_information_bounds_of_the_exact_ratio():
    theta, x = simulate(4000, seed=3)
    mi = mutual_information(ExactRatio(), theta, x, n_contrast=500, seed=0)
    assert abs(mi["I0"] - TRUE_MI) < 0.06, mi
    assert mi["I1"] <= mi["I0"] + 1e-9
    assert abs(mi["I1"] - TRUE_MI) < 0.1  # Z = 1 exactly, so I1 is tight too
    # an x-dependent bias leaves I0 unchanged (it cancels in eq. 47) but breaks the naive mean log r and I1
    mib = mutual_information(ExactRatio(_bias), theta, x, n_contrast=500, seed=0)
    assert abs(mib["I0"] - mi["I0"]) < 1e-6
    assert mib["mean_log_r"] - mi["mean_log_r"] > 1.0
    assert mib["I1"] < mi["I1"] - 1.0


def test_trained_estimators_mi_and_model_selection():
    est_c, est_b = trained(1.0), trained(math.inf)
    for est in (est_c, est_b):  # computed on the validation split after fit
        assert abs(est.history["mi"]["I0"] - TRUE_MI) < 0.25, est.history["mi"]
    theta, x = simulate(1000, seed=9)
    best, scores = select({"exact": ExactRatio(), "nre_c": est_c, "nre_b": est_b}, theta, x, n_contrast=200)
    assert best == "exact"
    assert all(s["I0"] <= scores["exact"]["I0"] + 0.02 for s in scores.values())
    assert scores["nre_b"]["I1"] < scores["nre_c"]["I1"]  # the bias shows in I1, not in I0
    with pytest.raises(ValueError, match="bound"):
        select({"a": est_c}, theta, x, bound="I2")


# -- importance-sampling diagnostic ----------------------------------------------------------------


def test_importance_diagnostic_passes_for_the_exact_ratio_and_fails_for_a_biased_one():
    theta = torch.tensor([0.5, -0.3])
    good = importance_diagnostic(ExactRatio(), SIMULATOR, theta, n=3000, seed=0)
    assert good["auc_power"] > 0.8  # the classifier can tell p(x|theta) from p(x) ...
    assert abs(good["auc"] - 0.5) < 0.05, good["auc"]  # ... but not from the correctly weighted p(x)
    assert abs(good["weight_mean"] - 1) < 0.1
    bad = importance_diagnostic(ExactRatio(lambda x: 1.5 * x[:, 0]), SIMULATOR, theta, n=3000, seed=0)
    assert bad["auc"] > 0.6, bad["auc"]
    assert good["fpr"][0] == 0 and good["tpr"][-1] == 1


def test_importance_diagnostic_of_trained_nre_c_is_near_chance():
    res = importance_diagnostic(trained(1.0), SIMULATOR, torch.tensor([0.3, 0.2]), n=3000, seed=1)
    assert abs(res["auc"] - 0.5) < 0.07, res["auc"]
    assert res["auc_power"] > 0.8


def test_importance_diagnostic_bad_theta():
    with pytest.raises(ValueError, match="theta"):
        importance_diagnostic(ExactRatio(), SIMULATOR, torch.zeros(3), n=100)
    with pytest.raises(TypeError, match="log_ratio"):
        importance_diagnostic(object(), SIMULATOR, torch.zeros(2), n=100)


# -- expected coverage --------------------------------------------------------------------------------


def test_expected_coverage_of_trained_nre_c_is_calibrated():
    theta, x = simulate(100, seed=21)
    alphas, cov = expected_coverage(trained(1.0), theta, x, n_samples=300, seed=0)
    assert alphas.shape == cov.shape
    assert (cov - alphas).abs().max() < 0.16, float((cov - alphas).abs().max())


# -- plots --------------------------------------------------------------------------------------------


def test_plots(tmp_path):
    _, x = simulate(40, seed=1)
    lz = {"exact": log_normalizer(ExactRatio(), x, n=2000), "biased": log_normalizer(ExactRatio(_bias), x, n=2000)}
    fig = plot_log_normalizer(lz, tmp_path / "logz.png")
    assert isinstance(fig, Figure) and (tmp_path / "logz.png").stat().st_size > 0
    theta, x = simulate(200, seed=2)
    mi = {"exact": mutual_information(ExactRatio(), theta, x, n_contrast=50),
          "biased": mutual_information(ExactRatio(_bias), theta, x, n_contrast=50)}
    assert isinstance(plot_mutual_information(mi, tmp_path / "mi.png"), Figure)
    roc = importance_diagnostic(ExactRatio(), SIMULATOR, torch.zeros(2), n=300)
    assert isinstance(plot_roc({"exact": roc}, tmp_path / "roc.png"), Figure)
    assert isinstance(plot_roc(roc), Figure)
    a = torch.linspace(0, 1, 11)
    assert isinstance(plot_coverage(a, {"NRE-C": a}, tmp_path / "cov.png", n_pairs=100), Figure)
    for name in ("logz.png", "mi.png", "roc.png", "cov.png"):
        assert (tmp_path / name).exists()
    with pytest.raises(ValueError):
        plot_log_normalizer({})
