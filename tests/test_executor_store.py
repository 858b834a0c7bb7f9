"""The same store through every backend and executor (issue 21, item 4's target).

One campaign -- with a simulator that raises on some batches (rows then rerun one at a time from their
own seeds) and returns NaN on some rows, so failure recording is exercised too -- is run with the serial
and ``processes`` backends, a ``concurrent.futures.ProcessPoolExecutor``, loky's reusable executor,
``mpi4py.futures.MPIPoolExecutor``, submitit's ``DebugExecutor`` and its ``LocalExecutor`` (one
subprocess per batch, as SLURM jobs would be; marked slow).  The stores must agree *bitwise*: every
file of the store folder byte for byte (its README), and in ``simulations.sqlite`` the schema and every row of every table, BLOBs
compared as bytes.  Only the provenance columns differ from run to run whatever the backend -- the wall
times (``seconds``, ``seconds_low``), the commit time and host (``finished``, ``host``), ``meta.created``
and the pid in the lock file -- and those are left out.  Optional executors skip when not installed.
"""

from __future__ import annotations

import concurrent.futures as cf
import sqlite3
import sys

import pytest
import torch

import telescope as ts
from telescope.priors import BoxUniform
from telescope.simulation.store import DB_NAME

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])
N, BATCH, SEED = 90, 30, 4
#: provenance: differs between two runs of the same backend, so never compared
VOLATILE = {"batches": {"seconds", "seconds_low", "host", "finished"}}
VOLATILE_META = {"created"}


def flaky(theta):
    """Raises on a batch holding a theta_0 > 0.85 (rows rerun alone), NaN where theta_1 < -0.8."""
    if (theta[:, 0] > 0.85).any():
        raise ValueError(f"theta_0 = {theta[:, 0].max():.3f} is out of range")
    x = torch.cat([theta.sin(), theta ** 2 + 0.1 * torch.randn_like(theta)], -1)
    x[theta[:, 1] < -0.8] = float("nan")
    return x


def _low(theta, u):
    return theta + u


def _high(theta, u):
    return theta + u + 0.01 * theta ** 2


def _noise(n, generator):
    return torch.randn(n, 2, generator=generator)


@pytest.fixture(scope="module", autouse=True)
def _by_value():
    # the simulators live in this test module, which a fresh worker (submitit's job, an MPI process) cannot
    # import: cloudpickle sends them by value instead, as it would a user's script's functions
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _records(folder) -> dict:
    """Every file of a store folder and every row of its database, less the provenance fields."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
             if p.name != DB_NAME and not p.name.endswith(".lock")}
    con = sqlite3.connect(folder / DB_NAME)
    try:
        out = {"files": files, "schema": con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
            keep = [c for c in cols if c not in VOLATILE.get(table, ())]
            rows = con.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY {', '.join(keep[:3])}").fetchall()
            if table == "meta":
                rows = [r for r in rows if r[0] not in VOLATILE_META]
            out[table] = (keep, rows)
    finally:
        con.close()
    return out


def _campaign(folder, **backend):
    return ts.simulate(flaky, PRIOR, N, seed=SEED, batch_size=BATCH, store=folder, progress_bar=False, **backend)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial") / "store"
    with pytest.warns(RuntimeWarning, match="failed"):
        theta, x = _campaign(folder)
    rec = _records(folder)
    assert rec["failures"][1], "the campaign must record failures for the check to cover them"
    assert any("ValueError: theta_0" in r[-1] for r in rec["failures"][1])
    assert any("non-finite" in r[-1] for r in rec["failures"][1])
    return rec, theta, x, folder


def _check(serial, folder, theta, x):
    rec, theta0, x0, _ = serial
    assert torch.equal(theta, theta0) and torch.equal(x.view(torch.int32), x0.view(torch.int32))
    got = _records(folder)
    assert got.keys() == rec.keys()
    for key in rec:
        assert got[key] == rec[key], f"the stores differ in {key}"


def _run_with(tmp_path, serial, **backend):
    folder = tmp_path / "store"
    with pytest.warns(RuntimeWarning, match="failed"):
        theta, x = _campaign(folder, **backend)
    _check(serial, folder, theta, x)


def test_the_check_sees_one_flipped_bit(serial, tmp_path):
    import shutil

    folder = tmp_path / "store"
    shutil.copytree(serial[3], folder)
    assert _records(folder) == serial[0]
    con = sqlite3.connect(folder / DB_NAME)
    blob = bytearray(con.execute("SELECT x FROM batches WHERE idx = 1").fetchone()[0])
    blob[5] ^= 1
    con.execute("UPDATE batches SET x = ? WHERE idx = 1", (bytes(blob),))
    con.commit()
    con.close()
    assert _records(folder)["batches"] != serial[0]["batches"]


def test_processes_backend(serial, tmp_path):
    _run_with(tmp_path, serial, workers=2)


def test_process_pool_executor(serial, tmp_path):
    with cf.ProcessPoolExecutor(2) as ex:
        _run_with(tmp_path, serial, executor=ex)


def test_loky_executor(serial, tmp_path):
    loky = pytest.importorskip("loky")
    _run_with(tmp_path, serial, executor=loky.get_reusable_executor(max_workers=2))


def test_submitit_debug_executor(serial, tmp_path):
    submitit = pytest.importorskip("submitit")
    _run_with(tmp_path, serial, executor=submitit.DebugExecutor(folder=tmp_path / "jobs"))


@pytest.mark.slow  # one fresh Python (torch import included) per batch, as SLURM jobs: ~25 s on 2 busy cores
def test_submitit_local_executor(serial, tmp_path):
    submitit = pytest.importorskip("submitit")
    ex = submitit.LocalExecutor(folder=tmp_path / "jobs")
    ex.update_parameters(timeout_min=5)
    _run_with(tmp_path, serial, executor=ex)


def test_mpi4py_futures_executor(serial, tmp_path):
    futures = pytest.importorskip("mpi4py.futures")
    try:
        ex = futures.MPIPoolExecutor(max_workers=1)
        ex.bootup(wait=True)
    except Exception as e:  # noqa: BLE001 - mpi4py without a working MPI library
        pytest.skip(f"mpi4py.futures cannot start a worker here: {e}")
    with ex:
        _run_with(tmp_path, serial, executor=ex)


def test_ladder_store_through_executors(tmp_path):
    loky = pytest.importorskip("loky")
    kw = dict(seed=1, batch_size=10, progress_bar=False)
    ladder = ts.simulation.ladder.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 2.0])
    ts.simulate_levels(ladder, PRIOR, [40, 20], store=tmp_path / "serial", **kw)
    ref = _records(tmp_path / "serial")
    assert ref["batches"][1] and "x_low" in ref["batches"][0]
    with cf.ProcessPoolExecutor(2) as ex:
        ts.simulate_levels(ladder, PRIOR, [40, 20], store=tmp_path / "pool", executor=ex, **kw)
    ts.simulate_levels(ladder, PRIOR, [40, 20], store=tmp_path / "loky",
                       executor=loky.get_reusable_executor(max_workers=2), **kw)
    for name in ("pool", "loky"):
        assert _records(tmp_path / name) == ref, name
