"""Staged multilevel training: control-variate weights, pre-training, validation, safeguard, budget."""

import math
import warnings

import pytest
import torch
from torch import nn

import telescope as ts
from telescope.estimators import NPE
from telescope.multilevel import Multilevel, MultilevelNPE, mlmc_terms
from telescope.multilevel.weights import coefficients, weighted_mean
from telescope.training import train

PRIOR = ts.BoxUniform([-2.0], [2.0])
NET = dict(transforms=1, hidden=(32,), bins=8)


def _noise(n, g):
    return torch.randn(n, 2, generator=g)


def _high(theta, u):
    return torch.cat([theta + 0.3 * u[:, :1], theta.pow(2) + 0.3 * u[:, 1:]], -1)


def _biased_low(theta, u):  # strongly coupled to the high level but biased in both features
    return torch.cat([0.8 * theta + 0.3 * u[:, :1] + 0.3, 0.7 * theta.pow(2) + 0.3 * u[:, 1:]], -1)


def _ladder(low=_biased_low):
    return ts.FidelityLadder([low, _high], noise=_noise, costs=[1.0, 10.0])


def _nlpd(est, test):
    return float(-est.log_prob_batched(test[0][None], test[1])[0].clamp_min(-50).mean())


@pytest.fixture(scope="module")
def test_set():
    return ts.simulate(ts.Simulator(_high, noise=_noise), PRIOR, 400, seed=123, progress_bar=False)


def test_weighted_loss_telescopes_for_any_coefficients():
    f = lambda b: b["x"].sum(-1)  # noqa: E731 - per-sample "loss" = the value itself
    b0 = {"x": torch.tensor([[1.0], [3.0]])}
    hi, lo = {"x": torch.tensor([[5.0], [7.0]])}, {"x": torch.tensor([[2.0], [4.0]])}
    for a in (1.0, 0.5, 0.0):
        terms = mlmc_terms(f, [b0, (hi, lo)], per_sample=True, coefficients=[a])
        # a * mean(f0) + mean(f1) - a * mean(f0 on pairs) = 2a + 6 - 3a
        assert float(sum(terms.values())) == pytest.approx(2 * a + 6 - 3 * a)


def test_coefficient_is_the_control_variate_optimum_and_se_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    f0 = torch.randn(4000, generator=g)
    f1 = 0.6 * f0 + 0.2 * torch.randn(4000, generator=g)
    a, info = coefficients([(f1, f0)], [1000, 4000])
    assert a[0] == pytest.approx(0.6 * 1000 / 5000, abs=0.02)
    assert info["correlations"][0] == pytest.approx(0.6 / math.sqrt(0.36 + 0.04), abs=0.02)
    v, se = weighted_mean(f0[:1000], [(f1, f0)], a)
    d = f1.double() - a[0] * f0.double()
    want = math.sqrt(a[0] ** 2 * float(f0[:1000].double().var()) / 1000 + float(d.var()) / 4000)
    assert se == pytest.approx(want, rel=1e-6)
    with pytest.warns(UserWarning, match="too few pairs"):
        a, info = coefficients([(f1[:5], f0[:5])], [1000, 5])
    assert a == [1.0] and info["fallback"] == [1]


def test_train_keeps_the_initial_weights_when_no_epoch_validates_better():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    data = {"x": torch.ones(64, 1)}
    val = {"x": torch.ones(8, 1)}
    loss = lambda m, b: (m(b["x"]) - 1).pow(2).mean()  # noqa: E731 - training pulls the weight to 1
    val_loss = lambda m, b: m(b["x"]).pow(2).mean()  # noqa: E731 - validation prefers 0
    h = train(net, loss, data, val_data=val, val_loss_fn=val_loss, val_initial=True, max_epochs=5, patience=2,
              progress_bar=False)
    assert h["best_epoch"] == -1 and float(net.weight.detach()) == 0.0


def test_staged_multilevel_npe_beats_the_pairs_alone_and_paper_loss(test_set):
    levels = ts.simulate_levels(_ladder(), PRIOR, n=[3000, 40], seed=0, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = MultilevelNPE(PRIOR, seed=0, folds=1, couple=False, **NET).fit(levels, progress_bar=False)  # staged core
        alone = NPE(PRIOR, seed=0, **NET).fit(levels[1][0], levels[1][1], progress_bar=False)
    rec = ml.history["multilevel"]
    assert rec["pretrain"]["epochs"] > 0 and 0.0 <= rec["weights"][0] <= 1.0
    assert set(rec["safeguard"]) >= {"difference", "se", "used"}
    assert _nlpd(ml, test_set) < _nlpd(alone, test_set) - 0.1


def test_safeguard_falls_back_when_the_cheap_level_misleads(test_set):
    def wrong(theta, u):  # coupled to the noise but with the opposite dependence on theta
        return torch.cat([-theta + 0.3 * u[:, :1], 4.0 - theta.pow(2) + 0.3 * u[:, 1:]], -1)

    levels = ts.simulate_levels(_ladder(wrong), PRIOR, n=[1500, 150], seed=1, progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ml = MultilevelNPE(PRIOR, seed=0, **NET).fit(levels, progress_bar=False, max_epochs=80)
        alone = NPE(PRIOR, seed=0, **NET).fit(levels[1][0], levels[1][1], progress_bar=False, max_epochs=80)
    rec = ml.history["multilevel"]["safeguard"]
    worse = rec["expensive level alone"]["difference"] > 0
    # the held-out comparison sees that the expensive level alone is better, and says so with the numbers
    assert worse and any("not the best on held-out data" in str(w.message) and "lower by" in str(w.message)
                         for w in caught)
    if rec["used"] != "multilevel":  # a clear win switches: then the cheap level did not make it worse
        assert _nlpd(ml, test_set) < _nlpd(alone, test_set) + 0.15


def test_fit_from_a_ladder_and_a_budget_records_the_plan_and_stays_within_budget():
    ladder = _ladder()
    ml = MultilevelNPE(PRIOR, seed=0, folds=3, **NET).fit(ladder, budget=6000, seed=3, progress_bar=False, max_epochs=30)
    plan = ml.allocation
    assert plan["pilot_cross_fitted"]  # folds > 1: every pilot pair judged out of fold
    assert plan["used"] in ("multilevel", "expensive level alone")
    assert plan["pilot_cost"] <= 0.5 * 6000
    if plan["used"] == "multilevel":
        n = plan["n_total"]
        assert n[0] * 1.0 + n[1] * 11.0 <= 6000 * 1.01
    else:
        assert plan["n_high"] * 10.0 <= 6000
    assert ml.sample(torch.zeros(2), 5).shape == (5, 1)


def test_budget_and_option_errors_name_the_argument():
    with pytest.raises(ValueError, match="too small for the pilot"):
        MultilevelNPE(PRIOR).fit(_ladder(), budget=300, progress_bar=False)
    with pytest.raises(ValueError, match="needs budget="):
        MultilevelNPE(PRIOR).fit(_ladder())
    with pytest.raises(ValueError, match="budget must be a positive number"):
        MultilevelNPE(PRIOR).fit(_ladder(), budget=-1.0)
    with pytest.raises(ValueError, match="weights must be"):
        Multilevel(NPE(PRIOR), weights="optimal")
    with pytest.raises(ValueError, match="safeguard must be"):
        Multilevel(NPE(PRIOR), safeguard="yes")


def test_staged_training_runs_for_score_and_ratio_estimators():
    from telescope.estimators.nre import NRE

    levels = ts.simulate_levels(_ladder(), PRIOR, n=[300, 40], seed=2, progress_bar=False)
    for est in (ts.NPSE(PRIOR, hidden=(16, 16), embed=8, embed_hidden=(16,)),
                NRE(PRIOR, K=3, contrastive="prior", width=16, blocks=1)):
        ml = Multilevel(est).fit(levels, max_epochs=3, batch_size=64, progress_bar=False)
        rec = ml.history["multilevel"]
        assert rec["pretrain"]["epochs"] >= 1 and "safeguard" not in rec  # no per-simulation losses: no safeguard
        assert all(math.isfinite(v) for v in ml.history["train_loss"])
    assert ml.log_ratio(torch.zeros(2, 1), torch.zeros(2, 2)).shape == (2,)
