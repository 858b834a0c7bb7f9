"""Any executor as the campaign backend (issue 21): same rows and the same store as the built-in backends."""

import concurrent.futures as cf
import sqlite3

import pytest
import torch

import telescope as ts


@pytest.fixture(scope="module")
def task():
    return ts.tasks.get("two_moons")


def _rows(path):
    theta, x = ts.load_simulations(path)
    return theta, x


class _PollingFuture:
    """A future that is not a concurrent.futures.Future (like submitit's jobs): done() and result() only."""

    def __init__(self, fn, args):
        self.fn, self.args, self.value = fn, args, None
        self.calls = 0

    def done(self):
        self.calls += 1
        if self.calls >= 2 and self.value is None:
            self.value = self.fn(*self.args)
        return self.value is not None

    def result(self):
        return self.value


class _PollingExecutor:
    def submit(self, fn, *args):
        return _PollingFuture(fn, args)


class _Breaks:
    """Runs the first ``ok`` batches, then every future raises (a cluster going away mid-campaign)."""

    def __init__(self, ok):
        self.ok, self.inner = ok, cf.ThreadPoolExecutor(1)

    def submit(self, fn, *args):
        if self.ok <= 0:
            f = cf.Future()
            f.set_exception(ConnectionError("cluster gone"))
            return f
        self.ok -= 1
        return self.inner.submit(fn, *args)


def test_thread_and_process_pools_match_serial(task, tmp_path):
    base_theta, base_x = ts.simulate(task.simulator, task.prior, 300, seed=3, batch_size=50, progress_bar=False,
                                     store=tmp_path / "serial.db")
    with cf.ThreadPoolExecutor(2) as ex:
        theta, x = ts.simulate(task.simulator, task.prior, 300, seed=3, batch_size=50, progress_bar=False,
                               store=tmp_path / "threads.db", backend=ex)
    assert torch.equal(theta, base_theta) and torch.equal(x, base_x)
    with cf.ProcessPoolExecutor(2) as ex:
        theta, x = ts.simulate(task.simulator, task.prior, 300, seed=3, batch_size=50, progress_bar=False,
                               backend=ex)
    assert torch.equal(theta, base_theta) and torch.equal(x, base_x)
    theta, x = ts.simulate(task.simulator, task.prior, 300, seed=3, batch_size=50, progress_bar=False,
                           backend=_PollingExecutor())
    assert torch.equal(theta, base_theta) and torch.equal(x, base_x)
    # the stores hold the same rows
    t1, x1 = _rows(tmp_path / "serial.db")
    t2, x2 = _rows(tmp_path / "threads.db")
    assert torch.equal(t1, t2) and torch.equal(x1, x2)


def test_loky(task):
    loky = pytest.importorskip("loky")
    base = ts.simulate(task.simulator, task.prior, 200, seed=5, batch_size=40, progress_bar=False)
    ex = loky.get_reusable_executor(max_workers=1)
    got = ts.simulate(task.simulator, task.prior, 200, seed=5, batch_size=40, progress_bar=False, backend=ex)
    assert all(torch.equal(a, b) for a, b in zip(got, base))


def test_submitit_debug_executor(task, tmp_path):
    submitit = pytest.importorskip("submitit")
    base = ts.simulate(task.simulator, task.prior, 100, seed=6, batch_size=50, progress_bar=False)
    ex = submitit.DebugExecutor(folder=tmp_path / "logs")
    got = ts.simulate(task.simulator, task.prior, 100, seed=6, batch_size=50, progress_bar=False, backend=ex)
    assert all(torch.equal(a, b) for a, b in zip(got, base))


def test_interrupted_campaign_resumes(task, tmp_path):
    store = tmp_path / "sims.db"
    with pytest.raises(ConnectionError, match="cluster gone"):
        ts.simulate(task.simulator, task.prior, 400, seed=7, batch_size=50, progress_bar=False, store=store,
                    backend=_Breaks(ok=3))
    with sqlite3.connect(store) as con:  # finished batches were written before the failure
        assert con.execute("select count(*) from sqlite_master").fetchone()[0] > 0
    theta, x = ts.simulate(task.simulator, task.prior, 400, seed=7, batch_size=50, progress_bar=False, store=store)
    fresh = ts.simulate(task.simulator, task.prior, 400, seed=7, batch_size=50, progress_bar=False)
    assert torch.equal(theta, fresh[0]) and torch.equal(x, fresh[1])


def test_bad_backend_arguments(task):
    with pytest.raises(TypeError, match="backend must be 'serial', 'processes', 'dask' or an executor"):
        ts.simulate(task.simulator, task.prior, 10, progress_bar=False, backend=3)
    with cf.ThreadPoolExecutor(1) as ex:
        with pytest.raises(ValueError, match="leave workers=1"):
            ts.simulate(task.simulator, task.prior, 10, progress_bar=False, backend=ex, workers=2)
        with pytest.raises(ValueError, match="not supported with an executor"):
            ts.simulate(task.simulator, task.prior, 10, progress_bar=False, backend=ex, timeout=5)
