"""Multilevel neural SBI (paper 1): MLMC loss, gradient adjustment, allocation, ladders, ML-NLE / ML-NPE."""

import math

import pytest
import torch

import telescope as ts
from telescope.estimators import NLE, NPE
from telescope.multilevel import (
    TLNPE,
    GradientAdjustment,
    Multilevel,
    MultilevelNLE,
    MultilevelNPE,
    adjust_gradients,
    allocate,
    as_levels,
    level_variances,
    mlmc_loss,
    mlmc_terms,
    pooled,
)
from telescope.tasks.g_and_k.ladder import erfinv_taylor, gk_ladder, gk_summaries, low_fidelity_normal_quantile
from telescope.tasks.ou import OrnsteinUhlenbeck
from telescope.tasks.toggle_switch import ToggleSwitch, toggle_switch, truncated_normal

PRIOR = ts.BoxUniform([-1.0, -1.0], [1.0, 1.0])


def _noise(n, g):
    return torch.randn(n, 2, generator=g)


def _level(scale):
    def g(theta, u):
        return theta + scale * u
    g.__qualname__ = f"gauss_{scale}"
    return g


def _ladder(scales=(1.3, 1.0), costs=None):
    costs = costs or [float(2**l) for l in range(len(scales))]
    return ts.FidelityLadder([_level(s) for s in scales], noise=_noise, costs=costs)


def _levels(n=(400, 40), scales=(1.3, 1.0), seed=0):
    return ts.simulate_levels(_ladder(scales), PRIOR, n=list(n), seed=seed, progress_bar=False)


def _built(est, levels):
    """An estimator with its network built on the pooled level data (no training)."""
    lv = as_levels(levels)
    theta, x = pooled(lv)
    est.x_shape = tuple(x.shape[1:])
    torch.manual_seed(0)
    est.net = est._build(theta, x)
    return est, lv


# -- the MLMC loss ------------------------------------------------------------------------------


def test_identical_levels_reduce_to_single_level_loss_and_gradient():
    levels = _levels(n=(300, 50))
    th1, x1, _ = levels[1]
    same = [levels[0], (th1, x1, x1.clone())]  # the "low" member equals the high one
    est, lv = _built(NLE(PRIOR, transforms=1, hidden=(16,)), same)
    net = est.net
    b0 = {"theta": lv[0]["theta"], "x": lv[0]["x"]}
    pair = ({"theta": lv[1]["theta"], "x": lv[1]["x"]}, {"theta": lv[1]["theta"], "x": lv[1]["x_low"]})
    for per_sample in (True, False):
        fn = (lambda b: est._loss_terms(net, b)) if per_sample else (lambda b: est._loss(net, b))
        terms = mlmc_terms(fn, [b0, pair], per_sample=per_sample)
        assert list(terms) == ["h0", "f1@1", "-f0@1"]
        assert float((terms["f1@1"] + terms["-f0@1"]).detach()) == pytest.approx(0.0, abs=1e-6)
        ml = sum(terms.values())
        single = est._loss(net, b0)
        assert float(ml.detach()) == pytest.approx(float(single.detach()), abs=1e-5)
        g_ml = torch.autograd.grad(ml, list(net.parameters()), allow_unused=True)
        g_single = torch.autograd.grad(single, list(net.parameters()), allow_unused=True)
        for a, b in zip(g_ml, g_single):
            if a is not None:
                assert torch.allclose(a, b, atol=1e-5)


def test_telescoping_sum_is_unbiased_for_the_high_fidelity_loss():
    # f(theta, x) = (x - theta)^2 / 2 with x_l = theta + a_l u: E f^L = a_L^2 / 2 exactly
    scales = (0.5, 0.8, 1.0)
    ladder = ts.FidelityLadder([_level(s) for s in scales], noise=lambda n, g: torch.randn(n, 1, generator=g),
                               costs=[1.0, 2.0, 4.0])
    prior = ts.BoxUniform([-1.0], [1.0])
    R, n = 2000, (20, 6, 3)
    levels = ts.simulate_levels(ladder, prior, n=[R * k for k in n], seed=3, progress_bar=False)
    f = lambda b: 0.5 * (b["x"] - b["theta"]).pow(2).sum(-1)  # noqa: E731
    est = []
    for r in range(R):
        b0 = {k: v[r * n[0]:(r + 1) * n[0]] for k, v in zip(("theta", "x"), levels[0])}
        pairs = []
        for l in (1, 2):
            th, hi, lo = (t[r * n[l]:(r + 1) * n[l]] for t in levels[l])
            pairs.append(({"theta": th, "x": hi}, {"theta": th, "x": lo}))
        est.append(float(mlmc_loss(f, [b0, *pairs], per_sample=True)))
    est = torch.tensor(est, dtype=torch.float64)
    truth = 0.5 * scales[-1] ** 2
    se = float(est.std() / math.sqrt(R))
    assert abs(float(est.mean()) - truth) < 4 * se
    # its variance is sum_l V_l / n_l with V_0 = Var f^0 and V_l = Var(f^l - f^(l-1)) (u ~ N(0, 1): Var u^2 = 2)
    var = 2 * 0.25 * scales[0] ** 4 / n[0] + sum(2 * 0.25 * (scales[l] ** 2 - scales[l - 1] ** 2) ** 2 / n[l]
                                               for l in (1, 2))
    assert float(est.var()) == pytest.approx(var, rel=0.15)
    # the seed-matched differences are tiny compared with the level-0 terms: coupling works
    th, hi, lo = levels[2]
    assert torch.allclose(hi - th, (lo - th) * scales[2] / scales[1], atol=1e-5)


def test_generic_path_replays_the_loss_randomness_for_both_members():
    # a loss with its own randomness (like NPSE's diffusion noise): identical members must cancel exactly
    def noisy_loss(b):
        eps = torch.randn_like(b["x"])
        return ((b["x"] + eps - b["theta"]) ** 2).mean()

    th = torch.randn(8, 2)
    x = torch.randn(8, 2)
    terms = mlmc_terms(noisy_loss, [{"theta": th, "x": x}, ({"theta": th, "x": x}, {"theta": th, "x": x.clone()})])
    assert float(terms["f1@1"] + terms["-f0@1"]) == 0.0


def test_shared_standardisation_is_one_pooled_statistic():
    levels = _levels(n=(500, 60), scales=(3.0, 1.0))
    ml = MultilevelNLE(PRIOR, transforms=1, hidden=(8,), ensemble=False).fit(levels, max_epochs=1, progress_bar=False)
    x_all = torch.cat([levels[0][1], levels[1][1], levels[1][2]])
    y_std = ml.net.y_std  # NLE models x: one statistic for every level's x
    assert torch.allclose(y_std.mean, x_all.mean(0), atol=1e-5)
    assert torch.allclose(y_std.std, x_all.std(0), atol=1e-4)
    # ... which is not the statistic of either member of the pairs alone
    assert not torch.allclose(y_std.std, levels[1][1].std(0), atol=1e-2)
    assert not torch.allclose(y_std.std, levels[1][2].std(0), atol=1e-2)


# -- gradient adjustment ------------------------------------------------------------------------------


def test_projection_removes_conflicts_and_rescaling_equalises_norms():
    g = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(200):
        g0 = torch.randn(20, generator=g)
        plus = torch.randn(3, 20, generator=g)
        minus = 5 * torch.randn(3, 20, generator=g)
        _, info = adjust_gradients(g0, plus, minus, rescale=True, project=True)
        assert float(info["g0"] @ info["gc"]) >= -1e-5
        conflicts += int(info["conflict"])
        # rescaling alone: each scaled zeta^{l-1,-} has the norm of zeta^{l,+}
        out, info = adjust_gradients(g0, plus, minus, rescale=True, project=False)
        scaled = info["scales"][:, None] * minus
        assert torch.allclose(scaled.norm(dim=-1), plus.norm(dim=-1), rtol=1e-5)
        assert torch.allclose(out, g0 + (plus + scaled).sum(0), atol=1e-5)
    assert 20 < conflicts < 180  # both branches were exercised
    # both parts off: the plain gradient of eq. (2)
    out, _ = adjust_gradients(g0, plus, minus, rescale=False, project=False)
    assert torch.allclose(out, g0 + plus.sum(0) + minus.sum(0))
    # a conflicting pair: the projected parts are orthogonal to the other original part
    g0, gc = torch.tensor([1.0, 0.0]), torch.tensor([[-1.0, 1.0]])
    _, info = adjust_gradients(g0, gc, torch.zeros(1, 2), rescale=False, project=True)
    assert bool(info["conflict"])
    assert float(info["g0"] @ gc[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(info["gc"] @ g0) == pytest.approx(0.0, abs=1e-6)


def test_gradient_adjustment_per_term_gradients_from_one_graph():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    params = list(net.parameters())
    x = torch.randn(30, 3)

    def terms():  # one forward graph for all terms
        f = net(x).squeeze(-1) ** 2
        return {"h0": f[:10].mean(), "f1@1": f[10:20].mean(), "-f0@1": -f[20:].mean()}

    batched = GradientAdjustment(batched=True).per_term_gradients(list(terms().values()), params)
    looped = GradientAdjustment(batched=False).per_term_gradients(list(terms().values()), params)
    assert torch.allclose(batched, looped, atol=1e-6)
    adj = GradientAdjustment(rescale=True, project=True)
    adj(terms(), params)
    want, _ = adjust_gradients(looped[0], looped[1:2], looped[2:3])
    got = torch.cat([p.grad.reshape(-1) for p in params])
    assert torch.allclose(got, want, atol=1e-6)
    assert adj.stats["steps"] == 1


# -- allocation (Theorem 2) -------------------------------------------------------------------------


def test_allocate_matches_theorem_2_and_respects_the_budget():
    C, V, B = [1.0, 4.0, 20.0], [2.0, 0.3, 0.05], 50_000.0
    a = allocate(C, V, B, mc_variance=2.5)
    c = [1.0, 5.0, 24.0]
    s = sum(math.sqrt(v * k) for v, k in zip(V, c))
    closed = [B / s * math.sqrt(v / k) for v, k in zip(V, c)]
    assert a.n_real == pytest.approx(closed, rel=1e-12)
    assert sum(n * k for n, k in zip(a.n_real, c)) == pytest.approx(B)
    assert a.n == [math.floor(v) for v in closed]
    assert a.cost <= B and a.cost == sum(n * k for n, k in zip(a.n, c))
    assert a.variance == pytest.approx(sum(v / n for v, n in zip(V, a.n)))
    assert a.mc_n == int(B // C[-1]) and a.mc_variance == pytest.approx(2.5 / a.mc_n)
    assert a.variance_ratio < 1
    # a level whose optimum is below one sample is held at one and the budget re-shared
    b = allocate([1.0, 100.0], [1.0, 1e-9], 1000.0)
    assert b.n[1] == 1 and b.cost <= 1000.0 and b.n[0] == 1000 - 101


def test_allocate_bad_input():
    with pytest.raises(ValueError, match="too small"):
        allocate([1.0, 10.0], [1.0, 0.1], budget=5.0)
    with pytest.raises(ValueError, match="increase"):
        allocate([10.0, 1.0], [1.0, 0.1], budget=1e4)
    with pytest.raises(ValueError, match="one entry per level"):
        allocate([1.0, 10.0], [1.0], budget=1e4)
    with pytest.raises(ValueError, match=">= 0"):
        allocate([1.0, 10.0], [1.0, -0.1], budget=1e4)


def test_level_variances_at_a_pilot_network():
    levels = _levels(n=(300, 200), scales=(1.0, 1.0))  # identical levels: the differences vanish
    est = NLE(PRIOR, transforms=1, hidden=(8,)).fit(levels[0][0], levels[0][1], max_epochs=2, progress_bar=False)
    v = level_variances(est, levels)
    assert v.variances[1] == pytest.approx(0.0, abs=1e-10) and v.correlations[0] == pytest.approx(1.0)
    assert v.variances[0] > 0 and v.mc_variance > 0
    g = level_variances(est, levels, kind="grad", max_samples=50)
    assert g.variances[1] == pytest.approx(0.0, abs=1e-10) and g.variances[0] > 0
    a = allocate([1.0, 2.0], v, budget=1000.0)  # LevelVariances carries mc_variance
    assert a.mc_variance is not None


# -- level data checks --------------------------------------------------------------------------------


def test_bad_level_data_raise_clear_errors():
    levels = _levels(n=(50, 10))
    th, hi, lo = levels[1]
    with pytest.raises(ValueError, match="parameters of the two members"):
        as_levels([levels[0], (th, hi, th + 0.1, lo)])
    with pytest.raises(ValueError, match="disagree on the output shape"):
        as_levels([levels[0], (th, hi, torch.cat([lo, lo], 1))])
    with pytest.raises(ValueError, match="seed-matched pair"):
        as_levels([levels[0], (th, hi)])
    with pytest.raises(TypeError, match="simulate_levels"):
        as_levels({"theta": th})
    with pytest.warns(UserWarning, match="does not decrease"):
        as_levels(_levels(n=(20, 30)))
    bad = lo.clone()
    bad[0, 0] = float("nan")
    with pytest.warns(UserWarning, match="dropping"):
        out = as_levels([levels[0], (th, hi, bad)])
    assert out[1].n == th.shape[0] - 1
    with pytest.raises(ValueError, match="outside the prior support"):
        MultilevelNLE(PRIOR).fit([levels[0], (th + 5, hi, lo)], max_epochs=1, progress_bar=False)


def test_uncoupled_pairs_warn():
    levels = _levels(n=(200, 100))
    th, hi, _ = levels[1]
    independent = th + torch.randn(hi.shape, generator=torch.Generator().manual_seed(5))  # not seed-matched
    with pytest.warns(UserWarning, match=r"weakly or negatively correlated \(measured correlation"):
        MultilevelNLE(PRIOR, transforms=1, hidden=(8,)).fit([levels[0], (th, hi - th, independent - th)],
                                                            max_epochs=1, progress_bar=False)


# -- ladders share noise ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:n = .* does not decrease")
@pytest.mark.parametrize("make", ["g_and_k", "ou", "toggle_switch"])
def test_ladders_share_noise(make):
    if make == "g_and_k":
        from telescope.tasks.g_and_k.ladder import _Level

        base = gk_ladder(n_draws=5)
        same = ts.FidelityLadder([ts.Simulator(_Level("high", 1.0, False), noise=base.noise, name="a"),
                                  ts.Simulator(_Level("high", 1.0, False), noise=base.noise, name="b")],
                                 noise=base.noise, costs=[1.0, 2.0])
        prior, ladder = ts.tasks.get("g_and_k").prior, base
    elif make == "ou":
        task = OrnsteinUhlenbeck()
        prior, ladder = task.prior, task.ladder()
        same = ts.FidelityLadder([task.simulator, task.simulator], noise=task.noise, costs=[1.0, 2.0])
    else:
        task = ToggleSwitch(T=30, T_levels=(10, 30))
        prior, ladder = task.prior, task.ladder()
        same = ts.FidelityLadder([task.levels[-1], task.levels[-1]], noise=task.noise, costs=[1.0, 2.0])
    _, (th, hi, lo) = ts.simulate_levels(same, prior, n=[4, 64], seed=1, progress_bar=False)
    assert torch.equal(hi, lo)  # low level equal to the high one: the pairs are identical
    _, (th, hi, lo) = ts.simulate_levels(ladder, prior, n=[4, 256], seed=1, progress_bar=False)
    assert not torch.equal(hi, lo)
    flat_hi, flat_lo = hi.reshape(hi.shape[0], -1), lo.reshape(lo.shape[0], -1)
    r = torch.corrcoef(torch.stack([flat_hi[:, 0], flat_lo[:, 0]]))[0, 1]
    assert r > 0.5  # seed-matched: strongly coupled


def test_g_and_k_low_fidelity_constant():
    v = torch.linspace(-0.3, 0.3, 7, dtype=torch.float64)
    maclaurin = erfinv_taylor(v, "sqrt(pi)/2")
    assert torch.allclose(maclaurin, torch.special.erfinv(v), atol=5e-4)  # the series truncated at v^3
    assert torch.allclose(erfinv_taylor(v, "pi/2"), maclaurin * math.sqrt(math.pi))  # the paper's constant
    assert torch.allclose(erfinv_taylor(v), erfinv_taylor(v, "paper"))  # default reproduces the paper
    u = torch.tensor([0.5], dtype=torch.float64)
    assert float(low_fidelity_normal_quantile(u)) == 0.0
    with pytest.raises(ValueError, match="constant"):
        erfinv_taylor(v, "e")
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    s = gk_summaries(x)
    assert s.shape == (3, 4) and (s[:, 1] > 1.0).all() and (s[:, 1] < 1.6).all()  # IQR of N(0, 1) is 1.35


def test_toggle_switch_truncated_normal_keeps_its_standard_deviation():
    w = torch.rand(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    far = truncated_normal(torch.full_like(w, 50.0), 0.5, w)
    assert float(far.std()) == pytest.approx(0.5, rel=0.02) and float(far.mean()) == pytest.approx(50.0, abs=0.01)
    half = truncated_normal(torch.zeros_like(w), 2.0, w)  # half-normal with scale 2
    assert float(half.min()) >= 0
    assert float(half.mean()) == pytest.approx(2.0 * math.sqrt(2 / math.pi), rel=0.02)
    deep = truncated_normal(torch.full_like(w, -50.0), 1.0, w)
    assert torch.isfinite(deep).all() and float(deep.min()) >= 0
    # lower levels read a prefix of the noise: columns beyond 2T + 1 do not matter
    theta = ToggleSwitch().prior.sample((5,))
    w = torch.rand(5, 41, dtype=torch.float64)
    w2 = w.clone()
    w2[:, 21:] = torch.rand(5, 20, dtype=torch.float64)
    assert torch.equal(toggle_switch(theta, w, 10), toggle_switch(theta, w2, 10))


def test_ou_exact_likelihood_matches_simulations():
    task = OrnsteinUhlenbeck()
    th = torch.tensor([[0.4, 1.0, 0.3]]).repeat(20_000, 1)
    x = task.simulator(th, seed=0).double()
    mean, cov = task._moments(th[:1])
    assert torch.allclose(x.mean(0), mean[0], atol=0.01)
    assert torch.allclose(torch.cov(x.T), cov[0], atol=0.004)


# -- estimators --------------------------------------------------------------------------------------


def test_ml_nle_and_ml_npe_fit_and_sample():
    levels = _levels(n=(600, 15))  # n_1 below the number of steps: some batches have no pairs
    ml = MultilevelNLE(PRIOR, transforms=1, hidden=(16,)).fit(levels, max_epochs=3, progress_bar=False)
    info = ml.history["multilevel"]
    assert info["n"] == [600, 15] and info["adjustment"]["steps"] > 0
    assert all(math.isfinite(v) for v in ml.history["train_loss"])
    assert ml.sample(torch.zeros(2), 20, warmup=5).shape == (20, 2)
    mp = MultilevelNPE(PRIOR, transforms=1, hidden=(16,)).fit(levels, max_epochs=3, progress_bar=False)
    assert mp.sample(torch.zeros(2), 10).shape == (10, 2)
    assert isinstance(mp.estimator, NPE)
    plain = Multilevel(NPE(PRIOR, transforms=1, hidden=(16,)), rescale=False, project=False)
    plain.fit(levels, max_epochs=2, progress_bar=False)
    assert plain.history["multilevel"]["adjustment"] is None
    with pytest.raises(TypeError, match="instance"):
        Multilevel(NPE)


def test_ml_nle_beats_both_single_fidelity_nles_on_a_gaussian_ladder():
    # low fidelity biased (x = 0.7 theta + 0.3 + 1.4 u), high exact (x = theta + u), seed-matched: ML-NLE on
    # 1000 cheap simulations + 40 pairs must fit the high-fidelity likelihood better than NLE on the 1000 cheap
    # ones (biased) and than NLE on the 40 expensive ones (too few); measured by the held-out NLL of x_high
    noise = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731
    low, high = (lambda th, u: 0.7 * th + 0.3 + 1.4 * u), (lambda th, u: th + u)
    ladder = ts.FidelityLadder([low, high], noise=noise, costs=[1.0, 10.0])
    levels = ts.simulate_levels(ladder, PRIOR, n=[1000, 40], seed=0, progress_bar=False)
    th_t, x_t = ts.simulate(ts.Simulator(high, noise=noise), PRIOR, 2000, seed=100, progress_bar=False)
    kw, fit = dict(transforms=1, hidden=(16,), seed=0), dict(max_epochs=60, batch_size=100, progress_bar=False)
    # the staged core; the default's cross-fitting and lifted member: benchmarks and test_multilevel_crossfit
    ml = MultilevelNLE(PRIOR, folds=1, couple=False, **kw).fit(levels, **fit)
    nle_low = NLE(PRIOR, **kw).fit(*levels[0], **fit)
    nle_high = NLE(PRIOR, **kw).fit(levels[1][0], levels[1][1], **fit)
    with torch.no_grad():
        nll = {k: float(-e.net.log_prob(x_t, th_t).mean()) for k, e in
               (("ml", ml), ("low", nle_low), ("high", nle_high))}
    exact = float(-torch.distributions.Normal(th_t, 1.0).log_prob(x_t).sum(-1).mean())
    assert exact < nll["ml"] < min(nll["low"], nll["high"]), (nll, exact)


def test_multilevel_save_and_load(tmp_path):
    levels = _levels(n=(300, 20))
    ml = MultilevelNLE(PRIOR, transforms=1, hidden=(8,)).fit(levels, max_epochs=1, progress_bar=False)
    ml.save(tmp_path / "ml")
    back = Multilevel.load(tmp_path / "ml", PRIOR)
    th, x = torch.zeros(3, 2), torch.ones(3, 2)
    assert torch.allclose(back.log_likelihood(th, x), ml.log_likelihood(th, x))


def test_multilevel_works_for_a_ratio_estimator():
    from telescope.estimators.nre import NRE

    levels = _levels(n=(400, 60))
    ml = Multilevel(NRE(PRIOR, K=3, contrastive="prior", width=16, blocks=1))
    ml.fit(levels, max_epochs=2, progress_bar=False, batch_size=100)
    assert all(math.isfinite(v) for v in ml.history["train_loss"])
    assert ml.log_ratio(torch.zeros(2, 2), torch.zeros(2, 2)).shape == (2,)
    # the contrastive sets (bootstrapped from the batch) and dropout masks are replayed for both members of a
    # pair: identical members cancel exactly, so the MLMC loss reduces to the level-0 loss
    est = NRE(PRIOR, K=3, contrastive="bootstrap", width=16, blocks=1, dropout=0.2)
    est, lv = _built(est, levels)
    est.net.train()
    b0 = {"theta": lv[0]["theta"][:64], "x": lv[0]["x"][:64]}
    b1 = {"theta": lv[1]["theta"], "x": lv[1]["x"]}
    terms = mlmc_terms(lambda b: est._loss(est.net, b), [b0, (b1, {k: v.clone() for k, v in b1.items()})])
    assert float(terms["f1@1"]) != 0.0 and float(terms["f1@1"] + terms["-f0@1"]) == 0.0
    # ... while a different low member does not cancel
    b1_low = {"theta": lv[1]["theta"], "x": lv[1]["x_low"]}
    terms = mlmc_terms(lambda b: est._loss(est.net, b), [b0, (b1, b1_low)])
    assert abs(float(terms["f1@1"] + terms["-f0@1"])) > 1e-4


def test_tl_npe_pretrains_then_fine_tunes():
    levels = _levels(n=(400, 30))
    tl = TLNPE(PRIOR, transforms=1, hidden=(8,)).fit(levels, max_epochs=2, progress_bar=False)
    assert tl.history["pretrain"]["epochs"] == 2 and tl.history["epochs"] == 2
    assert tl.sample(torch.zeros(2), 5).shape == (5, 2)


@pytest.mark.slow
def test_ml_nle_beats_nle_on_the_same_high_fidelity_budget_g_and_k():
    from telescope.tasks.g_and_k import gk_log_density

    torch.manual_seed(0)
    task = ts.tasks.get("g_and_k", n_draws=1)
    levels = ts.simulate_levels(task.ladder(), task.prior, n=[5000, 300], seed=0, progress_bar=False)
    kw = dict(transforms=1, bins=10, hidden=(50, 50, 50))
    ml = MultilevelNLE(task.prior, **kw).fit(levels, max_epochs=150, lr=1e-4, progress_bar=False)
    hi = NLE(task.prior, **kw).fit(levels[1][0], levels[1][1], max_epochs=150, lr=1e-4, progress_bar=False)
    with ts.simulators.seeded(1):
        th = task.prior.sample((40,))
    grid = torch.linspace(-30, 30, 2000)
    lp = gk_log_density(th, grid)
    p = lp.exp()

    def kld(est):
        lq = est.log_likelihood(th, grid[:, None]).double()
        return float((torch.where(p > 0, p * (lp - lq), torch.zeros_like(p)).sum(-1) * 0.03).mean())

    assert kld(ml) < kld(hi)
