"""Cross-fitted fine-tuning and learned couplings between fidelities (defaults of the staged multilevel fit)."""

import warnings

import pytest
import torch

import telescope as ts
from telescope.multilevel import Multilevel, MultilevelNPE
from telescope.multilevel.coupling import Coupling, fit_couplings, lift
from telescope.multilevel.crossfit import fold_splits
from telescope.multilevel.ensemble import Mixture
from telescope.multilevel.levels import Level
from test_multilevel_ensemble import _high, _low, _noise  # the same two-level test ladder

PRIOR = ts.BoxUniform([-2.0], [2.0])


def test_fold_splits_partition_every_level_and_keep_pairs_whole():
    g = torch.Generator().manual_seed(0)
    levels = [Level(theta=torch.arange(23.0)[:, None], x=torch.arange(23.0)[:, None]),
              Level(theta=torch.arange(7.0)[:, None], x=torch.arange(7.0)[:, None] + 100,
                    x_low=torch.arange(7.0)[:, None] + 200)]
    splits = fold_splits(levels, 3, g)
    assert len(splits) == 3
    for l, n in enumerate((23, 7)):
        held = torch.cat([va[l]["theta"] for _, va in splits]).flatten().sort().values
        assert torch.equal(held, torch.arange(float(n)))  # every row held out exactly once
        sizes = [va[l].n for _, va in splits]
        assert max(sizes) - min(sizes) <= 1  # balanced folds
        for tr, va in splits:
            assert tr[l].n + va[l].n == n
            assert not set(tr[l]["theta"].flatten().tolist()) & set(va[l]["theta"].flatten().tolist())
    for tr, va in splits:  # a pair's members stay on the same row
        assert torch.equal(tr[1]["x"] - 100, tr[1]["theta"]) and torch.equal(va[1]["x_low"] - 200, va[1]["theta"])


def test_crossfit_ends_in_a_mixture_of_every_folds_networks_with_out_of_fold_weights():
    ladder = ts.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 10.0])
    levels = ts.simulate_levels(ladder, PRIOR, n=[800, 45], seed=0, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = MultilevelNPE(PRIOR, seed=0, transforms=1, hidden=(16,), folds=3).fit(levels, progress_bar=False,
                                                                                     max_epochs=15)
    rec = ml.history["multilevel"]
    ens = rec["ensemble"]
    assert ens["folds"] == 3 and ens["held_out"] == 45  # the weights are fitted on every expensive simulation
    assert len(rec["folds"]["epochs"]) == 3
    assert isinstance(ml.net, Mixture) and len(ml.net.members) == 3 * sum(w > 0 for w in ens["weights"])
    per_net = [w / 3 for w in ens["weights"] if w > 0 for _ in range(3)]
    assert ml.net.weights == pytest.approx(per_net, rel=1e-5)
    x = torch.tensor([0.5, 0.3])
    theta = torch.linspace(-1.9, 1.9, 5)[:, None]
    want = torch.logsumexp(torch.stack([m.log_prob(theta, x[None]) for m in ml.net.members], -1)
                           + torch.tensor(per_net).log(), -1)
    assert torch.allclose(ml.log_prob(theta, x), want, atol=1e-4)
    with pytest.raises(ValueError, match="folds must be an integer >= 1"):
        Multilevel(ts.NPE(PRIOR), folds=0)


def test_learned_coupling_lifts_cheap_simulations_to_the_expensive_law():
    # x_high = x_low + theta + 0.1 * e: the residual's law given (theta, x_low) is N(theta, 0.1^2)
    g = torch.Generator().manual_seed(0)
    n = 2000
    theta = torch.rand(n, 1, generator=g) * 4 - 2
    x_low = torch.randn(n, 1, generator=g)
    x = x_low + theta + 0.1 * torch.randn(n, 1, generator=g)
    tr = [Level(theta=theta[:10], x=x_low[:10]), Level(theta=theta[:1800], x=x[:1800], x_low=x_low[:1800])]
    va = [Level(theta=theta[:2], x=x_low[:2]), Level(theta=theta[1800:], x=x[1800:], x_low=x_low[1800:])]
    torch.manual_seed(0)
    (c,) = fit_couplings(tr, va, "cpu", net_kwargs={"transforms": 2, "hidden": (32, 32)}, progress_bar=False,
                         max_epochs=200, seed=0)
    assert isinstance(c, Coupling)
    th = torch.full((4000, 1), 1.5)
    lifted = lift([c], th, torch.zeros(4000, 1), 0)
    assert lifted.mean().item() == pytest.approx(1.5, abs=0.05)
    assert lifted.std().item() == pytest.approx(0.1, abs=0.03)
    assert torch.equal(lift([c], th, torch.zeros(4000, 1), 1), torch.zeros(4000, 1))  # the top level is not lifted


def test_a_seeded_default_fit_does_not_depend_on_the_global_random_state():
    # the lifted member's couplings (initial weights, lifting draws) are seeded from the estimator's seed
    ladder = ts.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 10.0])
    levels = ts.simulate_levels(ladder, PRIOR, n=[300, 30], seed=0, progress_bar=False)

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ml = MultilevelNPE(PRIOR, seed=0, folds=3, transforms=1, hidden=(16,), bins=4)
            return ml.fit(levels, progress_bar=False, max_epochs=3)

    torch.manual_seed(1)
    first = fit()
    torch.manual_seed(2)
    a, b = first.estimator.net.state_dict(), fit().estimator.net.state_dict()
    assert "coupled" in first.history["multilevel"]["ensemble"]["members"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
