"""Campaign engine: crash and resume, failures, process-pool and Dask backends equal to serial."""

import importlib.util
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
import torch

from telescope.priors import BoxUniform
from telescope.simulation.campaign import SimulatorFailing, run_campaign
from telescope.simulation.simulate import simulate
from telescope.simulation.simulators import Simulator
from telescope.simulation.store import db_file, load_simulations

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (NaN payloads included)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def noisy(theta):
    return theta ** 2 + 0.1 * torch.randn_like(theta)


def flaky(theta):
    """Raises when any theta_0 > 0.8, returns NaN where theta_1 < -0.8."""
    if (theta[:, 0] > 0.8).any():
        raise ValueError(f"theta_0 = {theta[:, 0].max():.3f} is out of range")
    x = theta + torch.randn_like(theta)
    x[theta[:, 1] < -0.8] = float("nan")
    return x


def always_raises(theta):
    raise FileNotFoundError("config file model.cfg not found")


def always_nan(theta):
    return theta * float("nan")


def generator_sim(theta, u):
    return theta + 0.5 * u


GEN = Simulator(generator_sim, noise=lambda n, g: torch.randn(n, 2, generator=g), name="gen")


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle, then resume
# ---------------------------------------------------------------------------------------------
SCRIPT = '''
import os, sys, time
import torch
from telescope.priors import BoxUniform
from telescope.simulation.simulate import simulate

def slow_sim(theta):
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.1")))
    return theta.sum(-1, keepdim=True) + torch.randn(theta.shape[0], 3)

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])

if __name__ == "__main__":
    simulate(slow_sim, PRIOR, 300, seed=7, batch_size=10, store=sys.argv[1], workers=int(sys.argv[2]),
             progress_bar=False)
'''


def _stored_batches(path) -> list[int]:
    f = db_file(path)
    if not f.exists():
        return []
    try:
        con = sqlite3.connect(str(f), timeout=5)
        try:
            return [r[0] for r in con.execute("SELECT idx FROM batches ORDER BY idx")]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return []


def _kill_and_resume(tmp_path, workers: int):
    script = tmp_path / "campaign_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    store = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(_stored_batches(store)) < 5:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.time() < deadline, "campaign did not store 5 batches in time"
            time.sleep(0.05)
        os.kill(proc.pid, 9)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9
    before = _stored_batches(store)
    assert 5 <= len(before) < 30, f"the kill should land mid-campaign, stored {len(before)} of 30 batches"
    con = sqlite3.connect(str(db_file(store)))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    spec = importlib.util.spec_from_file_location("campaign_script", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    os.environ["SLOW_SECONDS"] = "0"  # same source code (same fingerprint), no sleeping in the test process
    try:
        res = run_campaign(mod.slow_sim, mod.PRIOR, 300, seed=7, batch_size=10, store=store, progress_bar=False)
        ref_theta, ref_x = simulate(mod.slow_sim, mod.PRIOR, 300, seed=7, batch_size=10, progress_bar=False)
    finally:
        del os.environ["SLOW_SECONDS"]
    assert res["summary"]["batches_resumed"] == len(before)
    assert res["summary"]["batches_run"] == 30 - len(before)  # only the missing batches were simulated
    after = _stored_batches(store)
    assert after == list(range(30))  # nothing missing, no duplicates
    theta, x = load_simulations(store)
    assert bitwise_equal(theta, ref_theta) and bitwise_equal(x, ref_x)
    assert bitwise_equal(res["theta"], ref_theta) and bitwise_equal(res["x"], ref_x)


def test_kill9_then_resume_is_bitwise_equal_to_uninterrupted_run(tmp_path):
    _kill_and_resume(tmp_path, workers=1)


@pytest.mark.slow
def test_kill9_with_worker_processes_then_resume(tmp_path):
    _kill_and_resume(tmp_path, workers=2)


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------
def test_failures_are_counted_recorded_and_excluded(tmp_path):
    store = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match=r"simulations failed") as rec:
        theta, x = simulate(flaky, PRIOR, 400, seed=3, batch_size=25, store=store, progress_bar=False)
    raised = theta[:, 0] > 0.8
    nonfinite = ~torch.isfinite(x).all(-1)
    assert raised.any() and (theta[:, 1] < -0.8).any()
    # every failed row is NaN in x; ok rows are exactly those with neither condition
    bad = raised | (theta[:, 1] < -0.8)
    assert torch.equal(nonfinite, bad)
    n_bad = int(bad.sum())
    assert f"{n_bad} of 400" in str(rec[0].message)

    con = sqlite3.connect(str(db_file(store)))
    errors = [e for (e,) in con.execute("SELECT error FROM failures")]
    assert len(errors) == n_bad
    assert sum(e.startswith("ValueError: theta_0") for e in errors) == int(raised.sum())
    assert sum(e == "non-finite output (NaN or inf)" for e in errors) == int((bad & ~raised).sum())
    assert con.execute("SELECT SUM(n_failed) FROM batches").fetchone()[0] == n_bad
    con.close()

    t_ok, x_ok = load_simulations(store)
    assert t_ok.shape[0] == 400 - n_bad and torch.isfinite(x_ok).all()
    assert bitwise_equal(t_ok, theta[~bad])
    t_all, x_all = load_simulations(store, include_failed=True)
    assert bitwise_equal(t_all, theta) and bitwise_equal(x_all, x)


def test_failures_same_with_workers(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = simulate(flaky, PRIOR, 200, seed=3, batch_size=25, progress_bar=False)
        par = simulate(flaky, PRIOR, 200, seed=3, batch_size=25, workers=2, progress_bar=False)
    assert bitwise_equal(ref[0], par[0]) and bitwise_equal(ref[1], par[1])


@pytest.mark.parametrize("fn,match", [(always_raises, "FileNotFoundError: config file model.cfg"),
                                      (always_nan, "non-finite output")])
@pytest.mark.parametrize("batch_size", [100, 1])
def test_simulator_failing_everywhere_stops_early(tmp_path, fn, match, batch_size):
    calls = []

    def counted(theta):
        calls.append(theta.shape[0])
        return fn(theta)

    store = tmp_path / "run"
    with pytest.raises(SimulatorFailing, match=match) as info:
        simulate(counted, PRIOR, 10_000, batch_size=batch_size, store=store, progress_bar=False)
    assert "stopped early" in str(info.value)
    assert sum(calls) <= 200  # a few calls, not the 10 000 of the campaign
    assert _stored_batches(store) == []  # nothing stored: a fixed simulator starts afresh


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sim", [noisy, GEN], ids=["callable", "generator"])
def test_process_pool_equals_serial(tmp_path, sim):
    ref_theta, ref_x = simulate(sim, PRIOR, 230, seed=11, batch_size=20, progress_bar=False)
    theta, x = simulate(sim, PRIOR, 230, seed=11, batch_size=20, workers=2, store=tmp_path / "p",
                        progress_bar=False)
    assert bitwise_equal(theta, ref_theta) and bitwise_equal(x, ref_x)
    t2, x2 = load_simulations(tmp_path / "p")
    assert bitwise_equal(t2, ref_theta) and bitwise_equal(x2, ref_x)


def test_dask_local_cluster_equals_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    ref_theta, ref_x = simulate(noisy, PRIOR, 230, seed=5, batch_size=20, progress_bar=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        theta, x = simulate(noisy, PRIOR, 230, seed=5, batch_size=20, client=client, store=tmp_path / "d",
                            progress_bar=False)
        t3, x3 = simulate(GEN, PRIOR, 50, seed=5, batch_size=7, backend="dask", client=client, progress_bar=False)
    assert bitwise_equal(theta, ref_theta) and bitwise_equal(x, ref_x)
    g_theta, g_x = simulate(GEN, PRIOR, 50, seed=5, batch_size=7, progress_bar=False)
    assert bitwise_equal(t3, g_theta) and bitwise_equal(x3, g_x)


@pytest.mark.slow
def test_dask_process_workers_by_scheduler_address_equal_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    ref_theta, ref_x = simulate(noisy, PRIOR, 230, seed=5, batch_size=20, progress_bar=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        theta, x = simulate(noisy, PRIOR, 230, seed=5, batch_size=20, scheduler=cluster.scheduler_address,
                            store=tmp_path / "d", progress_bar=False)
    assert bitwise_equal(theta, ref_theta) and bitwise_equal(x, ref_x)


class HoldsALock:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, theta):
        with self.lock:
            return theta


def test_unpicklable_simulator_error_names_the_fix():
    sim = Simulator(HoldsALock(), name="locked")
    with pytest.raises(TypeError, match=r"simulator 'locked' cannot be sent to worker processes") as info:
        simulate(sim, PRIOR, 10, workers=2, progress_bar=False)
    msg = str(info.value)
    assert "cannot be pickled" in msg and "top-level function" in msg and "workers=1" in msg
    # the serial backend runs it fine
    theta, x = simulate(sim, PRIOR, 10, progress_bar=False)
    assert torch.equal(theta, x)


@pytest.mark.parametrize("kwargs,match", [
    ({"workers": 2, "backend": "serial"}, "backend='processes'"),
    ({"backend": "threads"}, "backend must be"),
    ({"backend": "dask", "workers": 3, "scheduler": "tcp://x:1"}, "leave workers=1"),
    ({"backend": "processes", "scheduler": "tcp://x:1"}, "are for backend='dask'"),
    ({"workers": 0}, "workers must be"),
])
def test_backend_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(noisy, PRIOR, 10, progress_bar=False, **kwargs)


def test_same_result_for_any_batch_order(tmp_path):
    """Batches run out of order (a partial store) still assemble to the uninterrupted result."""
    store = tmp_path / "run"
    ref = simulate(noisy, PRIOR, 100, seed=2, batch_size=10, progress_bar=False)
    simulate(noisy, PRIOR, 100, seed=2, batch_size=10, store=store, progress_bar=False)
    con = sqlite3.connect(str(db_file(store)))
    con.execute("DELETE FROM batches WHERE idx IN (0, 3, 4, 9)")  # as if lost in flight
    con.commit()
    con.close()
    res = run_campaign(noisy, PRIOR, 100, seed=2, batch_size=10, store=store, progress_bar=False)
    assert res["summary"]["batches_run"] == 4
    assert bitwise_equal(res["theta"], ref[0]) and bitwise_equal(res["x"], ref[1])
