"""Fidelity ladders: seed-matched level pairs share theta and noise; costs; store and resume."""

import sqlite3
import time
import warnings

import pytest
import torch

from telescope.priors import BoxUniform
from telescope.simulation.ladder import FidelityLadder, simulate_levels
from telescope.simulation.simulators import Simulator, batch_seed, level_seed, seeded, theta_seed
from telescope.simulation.store import db_file, load_simulations, store_info

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])


def bitwise_equal(a, b):
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def noise(n, g):
    return torch.randn(n, 2, generator=g)


def coarse(theta, u):
    return theta[:, :1] + u[:, :1]


def fine(theta, u):  # reads one more noise component than the coarse level
    return theta[:, :1] + u[:, :1] + 0.1 * u[:, 1:2]


def blackbox_coarse(theta):
    return theta + torch.randn_like(theta)


def blackbox_fine(theta):
    return theta + torch.randn_like(theta) + 0.1 * torch.randn_like(theta)


def slow_coarse(theta):
    time.sleep(0.001)
    return theta.clone()


def slow_fine(theta):
    time.sleep(0.02)
    return theta.clone()


def test_generator_pairs_share_theta_and_noise():
    ladder = FidelityLadder([coarse, fine], noise=noise, costs=[1.0, 3.0])
    (t0, x0), (t1, x1, x1_low) = simulate_levels(ladder, PRIOR, n=[60, 25], seed=4, batch_size=10,
                                                 progress_bar=False)
    assert t0.shape == (60, 2) and x0.shape == (60, 1) and t1.shape == (25, 2) and x1.shape == x1_low.shape == (25, 1)
    # reconstruct level 1 from its seeds: same theta and the same noise u fed to both levels
    s1 = level_seed(4, 1)
    thetas, us = [], []
    for b, size in enumerate([10, 10, 5]):
        s = batch_seed(s1, b)
        with seeded(theta_seed(s)):  # theta has its own stream, the noise is seeded with s
            thetas.append(PRIOR.sample((size,)))
        us.append(noise(size, torch.Generator().manual_seed(s)))
    theta, u = torch.cat(thetas), torch.cat(us)
    assert bitwise_equal(t1, theta)
    assert bitwise_equal(x1_low, coarse(theta, u)) and bitwise_equal(x1, fine(theta, u))
    # the levels are independent draws (different seeds), and the pair difference is only the extra noise
    assert not torch.equal(t0[:25], t1)
    assert torch.allclose(x1 - x1_low, 0.1 * u[:, 1:2], atol=1e-6)


def test_identical_levels_give_identical_pairs():
    for ladder in (FidelityLadder([blackbox_coarse, blackbox_coarse], costs=[1.0, 2.0]),
                   FidelityLadder([coarse, coarse], noise=noise, costs=[1.0, 2.0])):
        levels = simulate_levels(ladder, PRIOR, n=[40, 30], seed=0, batch_size=8, progress_bar=False)
        _, x1, x1_low = levels[1]
        assert bitwise_equal(x1, x1_low)


def test_blackbox_levels_share_the_seed():
    ladder = FidelityLadder([blackbox_coarse, blackbox_fine], costs=[1.0, 2.0])
    (_, _), (theta, x1, x0) = simulate_levels(ladder, PRIOR, n=[500, 400], seed=1, batch_size=100,
                                              progress_bar=False)
    diff = x1 - x0  # the first randn draw is shared: the difference is the 0.1 * second draw only
    assert 0.07 < diff.std() < 0.13
    assert (x0 - theta).std() > 0.8  # while each level alone is noisy


def test_levels_must_agree_on_output_shape():
    ladder = FidelityLadder([lambda th: th, lambda th: torch.cat([th, th], -1)], costs=[1.0, 2.0])
    with pytest.raises(ValueError, match="disagree on the output shape"):
        simulate_levels(ladder, PRIOR, n=[20, 10], progress_bar=False)
    with pytest.raises(ValueError, match="disagree on the output shape"):
        ladder.measure_costs(PRIOR, n=4)


def test_ladder_argument_checks():
    with pytest.raises(ValueError, match="costs must increase with the level"):
        FidelityLadder([coarse, fine], noise=noise, costs=[2.0, 1.0])
    with pytest.raises(ValueError, match="one entry per level"):
        FidelityLadder([coarse, fine], noise=noise, costs=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="levels must be a non-empty list"):
        FidelityLadder([])
    g1 = Simulator(coarse, noise=noise)
    g2 = Simulator(fine, noise=lambda n, g: torch.randn(n, 2, generator=g))
    with pytest.raises(ValueError, match="do not share one noise sampler"):
        FidelityLadder([g1, g2])
    assert FidelityLadder([g1, Simulator(fine, noise=noise)]).noise is noise
    ladder = FidelityLadder([coarse, fine], noise=noise, costs=[1, 2])
    with pytest.raises(ValueError, match="n must be a list of 2 counts"):
        simulate_levels(ladder, PRIOR, n=[10])
    with pytest.warns(UserWarning, match="does not decrease"):
        simulate_levels(ladder, PRIOR, n=[10, 20], progress_bar=False)


def test_costs_are_measured_when_not_given():
    ladder = FidelityLadder([Simulator(slow_coarse, vectorized=False), Simulator(slow_fine, vectorized=False)])
    assert ladder.costs is None
    simulate_levels(ladder, PRIOR, n=[6, 3], batch_size=3, progress_bar=False)
    c0, c1 = ladder.costs
    assert ladder.costs_measured and 0.0005 < c0 < c1 and c1 > 0.015
    c0, c1 = ladder.measure_costs(PRIOR, n=3)
    assert c0 < c1


def test_levels_in_store_resume_bitwise(tmp_path):
    ladder = FidelityLadder([coarse, fine], noise=noise, costs=[1.0, 3.0])
    ref = simulate_levels(ladder, PRIOR, n=[90, 35], seed=2, batch_size=10, progress_bar=False)
    store = tmp_path / "levels"
    simulate_levels(ladder, PRIOR, n=[90, 35], seed=2, batch_size=10, store=store, progress_bar=False)
    con = sqlite3.connect(str(db_file(store)))
    con.execute("DELETE FROM batches WHERE (level = 0 AND idx IN (1, 8)) OR (level = 1 AND idx = 3)")
    con.commit()
    con.close()
    with pytest.warns(RuntimeWarning, match="incomplete"):
        load_simulations(store)
    got = simulate_levels(ladder, PRIOR, n=[90, 35], seed=2, batch_size=10, store=store, progress_bar=False)
    loaded = load_simulations(store)
    for a, b, c in zip(ref, got, loaded):
        assert len(a) == len(b) == len(c)
        assert all(bitwise_equal(p, q) and bitwise_equal(p, r) for p, q, r in zip(a, b, c))
    one = load_simulations(store, level=1)
    assert all(bitwise_equal(p, q) for p, q in zip(one, ref[1]))
    info = store_info(store)
    assert info["kind"] == "levels" and [lv["n_stored"] for lv in info["levels"]] == [90, 35]
    # a different ladder is refused
    other = FidelityLadder([coarse, coarse], noise=noise, costs=[1.0, 3.0])
    with pytest.raises(ValueError, match=r"simulator of level 1: the store has 'fine'"):
        simulate_levels(other, PRIOR, n=[90, 35], seed=2, batch_size=10, store=store, progress_bar=False)


def test_levels_with_worker_processes_equal_serial():
    ladder = FidelityLadder([blackbox_coarse, blackbox_fine], costs=[1.0, 2.0])
    ref = simulate_levels(ladder, PRIOR, n=[50, 20], seed=3, batch_size=10, progress_bar=False)
    par = simulate_levels(ladder, PRIOR, n=[50, 20], seed=3, batch_size=10, workers=2, progress_bar=False)
    for a, b in zip(ref, par):
        assert all(bitwise_equal(p, q) for p, q in zip(a, b))


def flaky_fine(theta, u):
    if (theta[:, 0] > 0.7).any():
        raise RuntimeError("solver diverged")
    return fine(theta, u)


def test_failed_pairs_are_dropped_and_stay_seed_matched():
    ladder = FidelityLadder([coarse, flaky_fine], noise=noise, costs=[1.0, 3.0])
    with pytest.warns(RuntimeWarning, match="level simulations failed"):
        (_, _), (theta, x1, x0) = simulate_levels(ladder, PRIOR, n=[80, 40], seed=0, batch_size=10,
                                                  progress_bar=False)
    assert len(theta) < 40 and (theta[:, 0] <= 0.7).all() and torch.isfinite(x1).all()
    # rows retried one at a time keep both levels on the same per-simulation noise
    assert (x1 - x0).abs().max() < 0.6  # unmatched noise would give differences of order 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        levels = simulate_levels(ladder, PRIOR, n=[80, 40], seed=0, batch_size=10, progress_bar=False,
                                 include_failed=True)
    assert len(levels[1][0]) == 40
