"""Fault injection (issue 20): simulators that kill their process or hang, fingerprints, seeds, theta in place."""

import os
import signal
import time

import pytest
import torch

from telescope.priors import BoxUniform
from telescope.simulation.campaign import SimulatorFailing, run_campaign
from telescope.simulation.simulate import simulate
from telescope.simulation.simulators import Simulator, batch_seed, level_seed
from telescope.simulation.store import load_simulations, store_info

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])


def bitwise_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _x(theta):
    return theta ** 2 + 0.1 * torch.randn_like(theta)


def segfaults(theta):
    """Kills its own process with SIGSEGV (as a crashing C extension would) when some theta_0 > 0.8."""
    if (theta[:, 0] > 0.8).any():
        os.kill(os.getpid(), signal.SIGSEGV)
    return _x(theta)


def raises(theta):
    """The same simulator, raising instead of dying: the serial reference."""
    if (theta[:, 0] > 0.8).any():
        raise ValueError("out of range")
    return _x(theta)


def exits(theta):
    if (theta[:, 0] > 0.8).any():
        os._exit(3)
    return _x(theta)


def always_dies(theta):
    os.kill(os.getpid(), signal.SIGKILL)


def hangs(theta):
    if (theta[:, 0] > 0.8).any():
        time.sleep(3600)
    return _x(theta)


# ---------------------------------------------------------------------------------------------
# 1. a simulator that kills its own process
# ---------------------------------------------------------------------------------------------
def test_process_killing_simulator_is_isolated_recorded_and_campaign_completes(tmp_path):
    res = run_campaign(segfaults, PRIOR, 60, seed=3, batch_size=10, workers=2, store=tmp_path / "s",
                       progress_bar=False)
    ref = run_campaign(raises, PRIOR, 60, seed=3, batch_size=10, progress_bar=False)
    bad = res["theta"][:, 0] > 0.8
    assert bad.any() and (~bad).any()
    assert torch.equal(res["ok"], ~bad)  # exactly the culprits failed
    # the survivors are bitwise the simulations the serial engine makes when isolating failures
    assert bitwise_equal(res["theta"], ref["theta"]) and torch.equal(res["ok"], ref["ok"])
    assert bitwise_equal(res["x"][res["ok"]], ref["x"][ref["ok"]])
    info = store_info(tmp_path / "s")
    assert info["levels"][0]["n_stored"] == 60 and info["levels"][0]["n_failed"] == int(bad.sum())
    assert all(f["error"] == "process died: signal 11 (SIGSEGV)" for f in info["failures"])
    theta, x = load_simulations(tmp_path / "s")
    assert theta.shape[0] == 60 - int(bad.sum())


def test_process_exit_is_recorded_with_its_exit_code():
    res = run_campaign(exits, PRIOR, 30, seed=3, batch_size=10, workers=2, progress_bar=False)
    assert res["summary"]["n_failed"] == int((res["theta"][:, 0] > 0.8).sum()) > 0
    assert res["summary"]["first_errors"][0] == "process died: exit code 3"


def test_simulator_that_always_kills_its_process_stops_early_with_the_cause():
    with pytest.raises(SimulatorFailing, match=r"process died: signal 9 \(SIGKILL\)"):
        run_campaign(always_dies, PRIOR, 40, seed=0, batch_size=10, workers=2, progress_bar=False)


# ---------------------------------------------------------------------------------------------
# 2. a hanging simulator: timeout=
# ---------------------------------------------------------------------------------------------
def test_timeout_records_hanging_simulations_and_completes():
    t0 = time.perf_counter()
    res = run_campaign(hangs, PRIOR, 16, seed=3, batch_size=4, workers=2, timeout=0.5, progress_bar=False)
    took = time.perf_counter() - t0
    bad = res["theta"][:, 0] > 0.8
    assert bad.any() and torch.equal(res["ok"], ~bad)
    assert res["summary"]["first_errors"][0] == "timed out after 0.5 s"
    assert took < 30


def test_timeout_on_the_serial_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="timeout=1 needs .*workers=2"):
        simulate(_x, PRIOR, 10, timeout=1, progress_bar=False)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        simulate(_x, PRIOR, 10, timeout=-1, workers=2, progress_bar=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_timeout_reaches_simulate_levels():
    from telescope.simulation.ladder import simulate_levels

    with pytest.raises(ValueError, match="timeout=2 needs"):
        simulate_levels([_x, _x], PRIOR, [20, 10], timeout=2, progress_bar=False)
    lv = simulate_levels([_x, hangs], PRIOR, [8, 8], seed=3, batch_size=4, workers=2, timeout=0.5,
                         progress_bar=False, include_failed=True)
    assert torch.isnan(lv[1][1][lv[1][0][:, 0] > 0.8]).all()


@pytest.mark.slow
def test_timeout_with_dask():
    distributed = pytest.importorskip("distributed")
    # one thread: its child process is reused across batches, also after a batch rerun row by row
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        res = run_campaign(hangs, PRIOR, 24, seed=3, batch_size=4, client=client, timeout=0.5, progress_bar=False)
    bad = res["theta"][:, 0] > 0.8
    assert bad.any() and torch.equal(res["ok"], ~bad)
    assert res["summary"]["first_errors"][0] == "timed out after 0.5 s"


# ---------------------------------------------------------------------------------------------
# 3. fingerprints cover the captured state
# ---------------------------------------------------------------------------------------------
def _noisy_with(sd):
    def sim(theta):
        return theta + sd * torch.randn_like(theta)
    return sim


class Scaled:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, theta):
        return self.scale * theta


def test_fingerprints_differ_for_different_captured_state():
    assert Simulator(_noisy_with(0.08)).fingerprint() != Simulator(_noisy_with(7.0)).fingerprint()
    assert Simulator(_noisy_with(0.08)).fingerprint() == Simulator(_noisy_with(0.08)).fingerprint()
    assert Simulator(Scaled(1.0)).fingerprint() != Simulator(Scaled(2.0)).fingerprint()
    assert Simulator(Scaled(torch.ones(3))).fingerprint() != Simulator(Scaled(torch.zeros(3))).fingerprint()
    assert Simulator(Scaled(2.0)).fingerprint() == Simulator(Scaled(2.0)).fingerprint()
    assert Simulator(Scaled(2.0), fingerprint="v1").fingerprint() == "v1"


def test_a_campaign_with_different_physics_is_refused_and_a_pin_overrides(tmp_path):
    store = tmp_path / "s"
    simulate(Simulator(_noisy_with(0.08), name="sim"), PRIOR, 20, batch_size=10, store=store, progress_bar=False)
    with pytest.raises(ValueError, match=r"(?s)captures.*new store path.*fingerprint='[0-9a-f]{16}'"):
        simulate(Simulator(_noisy_with(7.0), name="sim"), PRIOR, 40, batch_size=10, store=store, progress_bar=False)
    assert store_info(store)["levels"][0]["n_stored"] == 20  # nothing appended
    stored = store_info(store)["simulators"][0]["fingerprint"]
    # on purpose: the same fingerprint pinned
    simulate(Simulator(_noisy_with(7.0), name="sim", fingerprint=stored), PRIOR, 40, batch_size=10, store=store,
             progress_bar=False)
    assert store_info(store)["levels"][0]["n_stored"] == 40


def test_stores_of_earlier_versions_resume_on_their_code_fingerprint(tmp_path):
    import json
    import sqlite3

    from telescope.simulation.store import db_file

    sim = Simulator(_noisy_with(0.08), name="sim")
    store = tmp_path / "s"
    simulate(sim, PRIOR, 20, batch_size=10, store=store, progress_bar=False)
    con = sqlite3.connect(str(db_file(store)))
    (meta,) = con.execute("SELECT value FROM meta WHERE key = 'simulators'").fetchone()
    old = [{k: v for k, v in s.items() if k != "code_fingerprint"} | {"fingerprint": s["code_fingerprint"]}
           for s in json.loads(meta)]
    con.execute("UPDATE meta SET value = ? WHERE key = 'simulators'", (json.dumps(old),))
    con.commit()
    con.close()
    simulate(sim, PRIOR, 30, batch_size=10, store=store, progress_bar=False)
    assert store_info(store)["levels"][0]["n_stored"] == 30


def test_task_fingerprints_do_not_change_when_the_task_is_used():
    import telescope as ts

    task = ts.tasks.get("gaussian_linear")
    before = task.simulator.fingerprint()
    task.observation(1)
    task.prior.log_prob(task.prior.sample((3,)))
    assert task.simulator.fingerprint() == before


# ---------------------------------------------------------------------------------------------
# 4. seeds
# ---------------------------------------------------------------------------------------------
def test_seeds_use_the_full_64_bit_range_and_small_seeds_keep_their_streams():
    import numpy as np

    seeds = [0, 1, 2**32 - 1, 2**32, -(2**32), -1, 2**63, 2**64 - 1, -(2**63)]
    assert len({batch_seed(s, 0) for s in seeds}) == len(seeds)
    assert len({level_seed(s, 1) for s in seeds}) == len(seeds)
    for s in (0, 7, 2**32 - 1):  # earlier versions' streams
        old = int(np.random.SeedSequence([s & 0xFFFFFFFF, 3]).generate_state(1, np.uint64)[0] >> 1)
        assert batch_seed(s, 3) == old
    a = simulate(_x, PRIOR, 5, seed=0, progress_bar=False)[1]
    b = simulate(_x, PRIOR, 5, seed=2**32, progress_bar=False)[1]
    c = simulate(_x, PRIOR, 5, seed=-(2**32), progress_bar=False)[1]
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)


@pytest.mark.parametrize("seed, err, match", [
    (1.5, TypeError, r"seed must be an integer .* got 1\.5 \(float\)"),
    (None, TypeError, r"seed must be an integer .* got None"),
    ("x", TypeError, r"seed must be an integer .* got 'x' \(str\)"),
    (True, TypeError, r"seed must be an integer"),
    (2**64, ValueError, r"seed must be an integer in \[-2\*\*63, 2\*\*64 - 1\]"),
    (-(2**63) - 1, ValueError, r"seed must be an integer in"),
])
def test_bad_seeds_are_refused_by_name(seed, err, match):
    from telescope.simulation.ladder import simulate_levels

    with pytest.raises(err, match=match):
        simulate(_x, PRIOR, 5, seed=seed, progress_bar=False)
    with pytest.raises(err, match=match):
        simulate_levels([_x, _x], PRIOR, [10, 5], seed=seed, progress_bar=False)


# ---------------------------------------------------------------------------------------------
# 6. a simulator that changes theta in place
# ---------------------------------------------------------------------------------------------
def vandal(theta):
    x = theta.clone()
    theta.mul_(99.0)
    return x


@pytest.mark.parametrize("batch_size", [5, 1])
def test_store_keeps_the_drawn_theta_when_the_simulator_changes_it(tmp_path, batch_size):
    theta, x = simulate(vandal, PRIOR, 10, seed=1, batch_size=batch_size, store=tmp_path / "s", progress_bar=False)
    assert theta.abs().max() <= 1.0 and torch.equal(theta, x)
    t2, _ = load_simulations(tmp_path / "s")
    assert torch.equal(t2, theta)
    ts_, xs_ = simulate(Simulator(vandal, vectorized=True), PRIOR, 10, seed=1, progress_bar=False)
    assert ts_.abs().max() <= 1.0


# ---------------------------------------------------------------------------------------------
# 10. numerical faults that pass as success
# ---------------------------------------------------------------------------------------------
def balanced_sampler(level, n):
    """Corrections with mean exactly zero (+-2^-l in equal numbers): the level means debias to zero,
    so alpha cannot be fitted (the case that made the bias 0/0 = NaN and passed as converged)."""
    import numpy as np

    base = np.ones((n, 1))
    if level == 0:
        return base + 0.1 * np.linspace(-1, 1, n)[:, None], None
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None]
    return base + 2.0**-level * sign, base


def test_mlmc_never_reports_a_nan_bias_as_converged():
    import math

    from telescope.mlmc.driver import MLMCWarning, _bias_safe, mlmc

    with pytest.warns(MLMCWarning, match="could not fit the weak-error rate alpha"):
        res = mlmc(balanced_sampler, 2e-3, progress=False)
    assert math.isfinite(res.bias) and math.isfinite(res.rmse)
    assert res.fitted["bias_fallback"] is True
    import numpy as np

    b, fell = _bias_safe(np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.01, 0.02]), 2, 0.0, 2)
    assert fell and b == 0.02
    b, fell = _bias_safe(np.array([1.0, 0.5, 0.25]), np.array([1.0, 0.5, 0.25]), 2, 1.0, 2)
    assert not fell and b == pytest.approx(0.25)


def _gauss_log_prob(x):
    return -0.5 * (x**2).sum(-1)


def test_warmup_tail_for_diagnostics_does_not_change_the_samples():
    from telescope.samplers.mcmc import slice_sample, whitened_slice
    from telescope.tasks._mcmc_reference import random_walk_metropolis

    init = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)).double()
    for run in (lambda k: slice_sample(_gauss_log_prob, init, 3, warmup=20, thin=2, keep_warmup=k,
                                       generator=torch.Generator().manual_seed(1)),
                lambda k: whitened_slice(_gauss_log_prob, init, 3, 20, 2, torch.Generator().manual_seed(1),
                                         keep_warmup=k),
                lambda k: random_walk_metropolis(_gauss_log_prob, init, 3, warmup=20, thin=2, keep_warmup=k,
                                                 generator=torch.Generator().manual_seed(1))):
        plain, tail = run(0), run(4)
        assert tail.shape[0] == 3 + 4 and torch.equal(tail[4:], plain)


def test_mcmc_reference_rhat_is_finite_with_many_short_chains():
    import warnings

    from telescope.tasks._mcmc_reference import mcmc_reference

    props = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)).double() * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither "could not be computed" nor "may not have converged"
        s, r = mcmc_reference(_gauss_log_prob, props, 2000, seed=0, chains=1000, warmup=40, thin=2,
                              proposal_log_prob=-0.125 * (props**2).sum(-1))
    assert s.shape == (2000, 2) and torch.isfinite(r).all() and r.max() < 1.05


@pytest.mark.slow
def test_slcp_reference_with_few_draws_per_chain_runs_once():
    import telescope as ts

    task = ts.tasks.get("slcp", reference="mcmc")  # this library's MCMC, on sbibm's observation 1
    t0 = time.perf_counter()
    task.reference_samples(1, 2000, cache=False)
    assert task.diagnostics["attempts"] == 1 and torch.isfinite(task.diagnostics["rhat"]).all()
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
def test_timeout_and_process_deaths_on_dask_process_workers():
    """Dask worker processes are daemonic: the batch runs in a subprocess child that can be killed."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = run_campaign(hangs, PRIOR, 16, seed=3, batch_size=4, scheduler=cluster.scheduler_address,
                           timeout=0.5, progress_bar=False)
        assert torch.equal(res["ok"], ~(res["theta"][:, 0] > 0.8))
        assert res["summary"]["first_errors"][0] == "timed out after 0.5 s"
        res = run_campaign(segfaults, PRIOR, 30, seed=3, batch_size=10, scheduler=cluster.scheduler_address,
                           timeout=30, progress_bar=False)
        assert torch.equal(res["ok"], ~(res["theta"][:, 0] > 0.8))
        assert res["summary"]["first_errors"][0] == "process died: signal 11 (SIGSEGV)"


def test_cli_simulate_timeout_needs_workers(tmp_path, capsys):
    import argparse

    from telescope.cli.simulate import add_parsers

    parser = argparse.ArgumentParser(prog="telescope")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", "two_moons", "--n", "10", "--store", str(tmp_path / "s"), "--timeout", "5"])
    assert args.func(args) == 2
    assert "needs simulations in worker processes" in capsys.readouterr().err


class _Tilted(torch.distributions.Distribution):
    """Samples uniformly on [-1, 1]^2 whatever ``tilt``; ``tilt`` changes only the density."""

    arg_constraints: dict = {}

    def __init__(self, tilt):
        self.tilt = tilt
        super().__init__(event_shape=torch.Size([2]), validate_args=False)

    def sample(self, shape=torch.Size()):
        return 2 * torch.rand(*shape, 2) - 1

    def log_prob(self, value):
        return self.tilt * value.sum(-1)


def test_prior_fingerprint_covers_its_density(tmp_path):
    from telescope.simulation.campaign import prior_info

    a, b = prior_info(_Tilted(0.0)), prior_info(_Tilted(0.5))
    assert a["fingerprint"] == b["fingerprint"] and a["state_fingerprint"] != b["state_fingerprint"]
    g = __import__("telescope").Gaussian([0.0, 0.0], [1.0, 2.0])
    before = prior_info(g)["state_fingerprint"]
    g.log_prob(g.sample((3,)))
    g.scale_tril  # noqa: B018 - lazily cached properties must not change it
    assert prior_info(g)["state_fingerprint"] == before
    store = tmp_path / "s"
    simulate(_x, _Tilted(0.0), 10, store=store, progress_bar=False)
    with pytest.raises(ValueError, match="prior: the store has"):
        simulate(_x, _Tilted(0.5), 10, store=store, progress_bar=False)


def test_old_store_with_a_seed_outside_32_bits_is_not_resumed_from_another_stream(tmp_path):
    import sqlite3

    from telescope.simulation.store import db_file

    store = tmp_path / "s"
    simulate(_x, PRIOR, 10, seed=2**40, batch_size=5, store=store, progress_bar=False)
    simulate(_x, PRIOR, 15, seed=2**40, batch_size=5, store=store, progress_bar=False)  # a new store resumes
    con = sqlite3.connect(str(db_file(store)))
    con.execute("DELETE FROM meta WHERE key = 'seed_scheme'")  # as written by an earlier version
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="earlier telescope, which used seed=1099511627776 modulo 2"):
        simulate(_x, PRIOR, 20, seed=2**40, batch_size=5, store=store, progress_bar=False)
