"""Fault injection (issue 20, case 5): damaged and unusual stores are refused clearly, never overwritten."""

import argparse
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import telescope.simulation.store.database as store_mod  # the module that calls os.access and sqlite3.connect
from telescope.cli.simulate import add_parsers
from telescope.priors import BoxUniform
from telescope.simulation.campaign import run_campaign
from telescope.simulation.simulate import simulate
from telescope.simulation.store import checkpoint, db_file, load_simulations, store_info

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])


def sim(theta):
    return theta + 0.1 * torch.randn_like(theta)


def all_nan(theta):
    return theta * float("nan")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="telescope")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_read_only_store_is_read_in_read_only_mode(tmp_path, monkeypatch):
    store = tmp_path / "ro"
    theta, x = simulate(sim, PRIOR, 30, batch_size=10, store=store, progress_bar=False)
    monkeypatch.setattr(store_mod.os, "access", lambda *a, **k: False)  # as if the file were not writable
    t2, x2 = load_simulations(store)
    assert torch.equal(t2, theta) and torch.equal(x2, x)
    assert store_info(store)["levels"][0]["n_stored"] == 30


def test_errors_while_opening_are_never_read_as_empty(tmp_path, monkeypatch):
    store = tmp_path / "s"
    simulate(sim, PRIOR, 10, store=store, progress_bar=False)
    real = sqlite3.connect

    class Con:
        def __init__(self, *a, **k):
            self.con = real(*a, **k)

        def execute(self, q, *a):
            if "FROM meta" in q:
                raise sqlite3.OperationalError("attempt to write a readonly database")
            return self.con.execute(q, *a)

        def close(self):
            self.con.close()

    monkeypatch.setattr(store_mod.sqlite3, "connect", Con)
    with pytest.raises(ValueError, match="SQLite says attempt to write a readonly database"):
        load_simulations(store)


def test_corrupted_page_is_a_clear_error_in_python_and_in_the_cli(tmp_path, capsys):
    store = tmp_path / "c"
    simulate(sim, PRIOR, 3000, batch_size=100, store=store, progress_bar=False)
    f = db_file(store)
    b = bytearray(f.read_bytes())
    for k in range(1, len(b) // 4096):  # smash the header of every page but the first
        b[k * 4096 : k * 4096 + 12] = b"\x5a" * 12
    f.write_bytes(bytes(b))
    with pytest.raises(ValueError, match=r"(?s)SQLite says database disk image is malformed.*\.recover"):
        load_simulations(store)
    assert _cli(["store", "info", str(store)]) == 2
    err = capsys.readouterr().err
    assert "telescope: error:" in err and "malformed" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="malformed"):  # and a campaign does not append to it
        simulate(sim, PRIOR, 3100, batch_size=100, store=store, progress_bar=False)


def test_foreign_sqlite_file_is_left_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE foo (a)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=r"not a telescope simulation store \(it has the tables \['foo'\]\)"):
        simulate(sim, PRIOR, 10, store=path, progress_bar=False)
    con = sqlite3.connect(str(path))
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["foo"]
    con.close()


@pytest.mark.parametrize("where", ["x.sqlite", "dir/simulations.sqlite"])
def test_non_sqlite_file_is_never_overwritten(tmp_path, where):
    path = tmp_path / where
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"x")
    store = path if where.endswith("x.sqlite") else path.parent
    with pytest.raises(ValueError, match="1-byte file that is not SQLite"):
        simulate(sim, PRIOR, 10, store=store, progress_bar=False)
    assert path.read_bytes() == b"x"
    with pytest.raises(ValueError, match="not SQLite"):
        load_simulations(store)


def test_store_whose_simulations_all_failed(tmp_path):
    store = tmp_path / "f"
    run_campaign(all_nan, PRIOR, 10, batch_size=5, store=store, fail_fast=None, progress_bar=False)
    with pytest.raises(ValueError, match=r"all 10 simulations of store .* failed.*include_failed=True"):
        load_simulations(store)
    theta, x = load_simulations(store, include_failed=True)
    assert theta.shape == (10, 2) and torch.isnan(x).all()
    assert store_info(store)["levels"][0]["n_failed"] == 10


def test_store_without_finished_batches(tmp_path):
    from telescope.simulation.campaign import SimulatorFailing

    store = tmp_path / "e"
    with pytest.raises(SimulatorFailing):
        simulate(all_nan, PRIOR, 10, batch_size=5, store=store, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="holds no finished batch yet"):
            load_simulations(store)


@pytest.mark.parametrize("column, value, match", [
    ("x_shape", "'[3, 7]'", r"batch 1 of level 0 is unreadable in column 'x' \(ValueError: cannot reshape"),
    ("theta_shape", "'[10'", r"batch 1 of level 0 is unreadable in column 'theta' \(JSONDecodeError"),
    ("ok", "x'0101'", r"column 'row counts'"),
])
def test_hand_edited_rows_name_the_batch_and_column(tmp_path, column, value, match):
    store = tmp_path / "h"
    simulate(sim, PRIOR, 30, batch_size=10, store=store, progress_bar=False)
    con = sqlite3.connect(str(db_file(store)))
    con.execute(f"UPDATE batches SET {column} = {value} WHERE idx = 1")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=match):
        load_simulations(store)


def test_hand_edited_meta_is_named(tmp_path):
    store = tmp_path / "m"
    simulate(sim, PRIOR, 10, store=store, progress_bar=False)
    con = sqlite3.connect(str(db_file(store)))
    con.execute("UPDATE meta SET value = '{' WHERE key = 'levels'")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="unreadable meta entry 'levels'"):
        load_simulations(store)


CRASH = '''
import os, sys, torch
from telescope.simulation.campaign import run_batch
from telescope.priors import BoxUniform
from telescope.simulation.simulate import simulate
from telescope.simulation.store import Store

def sim(theta):
    return theta + 0.1 * torch.randn_like(theta)

simulate(sim, BoxUniform([-1.0, -1.0], [1.0, 1.0]), 10, batch_size=5, store=sys.argv[1], progress_bar=False)
# a second campaign that dies after writing more batches: they stay in the -wal file
from telescope.simulation.campaign import Level, _open_store, simulator_info
from telescope.simulation.simulators import as_simulator
s = as_simulator(sim)
prior = BoxUniform([-1.0, -1.0], [1.0, 1.0])
st = _open_store(sys.argv[1], "simulate", 0, [Level(0, (s,), 20, 5, 0)], prior, [simulator_info(s)])
st.con.execute("PRAGMA wal_autocheckpoint=0")
from telescope.simulation.simulators import batch_seed
for b in (2, 3):
    st.write_batch(0, b, batch_seed(0, b), run_batch((s,), prior, 5, batch_seed(0, b)))
os._exit(0)  # no close: the new batches are only in the write-ahead log
'''


def test_copy_after_crash_and_store_checkpoint(tmp_path, capsys):
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH))
    store = tmp_path / "run"
    subprocess.run([sys.executable, str(script), str(store)], check=True, timeout=120)
    wal = db_file(store).with_name("simulations.sqlite-wal")
    assert wal.exists() and wal.stat().st_size > 0
    copy = tmp_path / "copy.sqlite"
    shutil.copy(db_file(store), copy)  # the .sqlite alone: the last batches are missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_copy = load_simulations(copy)[0].shape[0]
    assert n_copy < 20
    assert _cli(["store", "checkpoint", str(store)]) == 0
    assert "write-ahead log pages moved" in capsys.readouterr().out
    assert not wal.exists() or wal.stat().st_size == 0
    shutil.copy(db_file(store), copy)
    assert load_simulations(copy)[0].shape[0] == 20
    assert checkpoint(store)["wal_frames"] == 0


def test_empty_store_message_mentions_the_write_ahead_log(tmp_path):
    path = tmp_path / "e.sqlite"
    sqlite3.connect(str(path)).close()  # a 0-byte file
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"(?s)empty.*-wal.*telescope store checkpoint"):
        store_info(path)


def wide(theta):
    x = theta.repeat(1, 50) + 0.1 * torch.randn(theta.shape[0], 100)
    x[theta[:, 0] > 0.9] = float("nan")
    return x


def test_load_simulations_needs_about_the_size_of_its_result(tmp_path):
    """Issue 20, case 11 (in part): reading fills arrays allocated once (it used to hold about 3x the data)."""
    import tracemalloc

    store = tmp_path / "w"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theta_ref, x_ref = simulate(wide, PRIOR, 10_000, batch_size=500, store=store, progress_bar=False)
    tracemalloc.start()
    theta, x = load_simulations(store)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ok = torch.isfinite(x_ref).all(-1)
    assert torch.equal(theta, theta_ref[ok]) and torch.equal(x, x_ref[ok])
    data = x_ref.numel() * 4 + theta_ref.numel() * 4
    assert peak < 1.3 * data, f"peak {peak / 2**20:.1f} MiB for {data / 2**20:.1f} MiB of data"
    t_all, x_all = load_simulations(store, include_failed=True)
    assert torch.equal(t_all, theta_ref) and torch.equal(x_all.isnan(), x_ref.isnan())


def test_store_interrupted_while_being_created_is_reused(tmp_path):
    path = tmp_path / "new.sqlite"
    con = sqlite3.connect(str(path))
    con.executescript(store_mod._SCHEMA)  # the tables exist, the meta was never written
    con.close()
    theta, _ = simulate(sim, PRIOR, 10, store=path, progress_bar=False)
    assert torch.equal(load_simulations(path)[0], theta)


@pytest.mark.parametrize("cls", ["NPE", "NLE", "NRE", "NPSE"])
def test_fit_store_trains_every_estimator_from_a_memory_mapped_export(tmp_path, cls):
    """Issue 20, case 11: training from a store without loading it (minibatches from memory-mapped files)."""
    import telescope as ts
    from telescope.simulation.store import export_arrays

    store = tmp_path / "s"
    simulate(sim, PRIOR, 600, batch_size=100, store=store, progress_bar=False)
    est = getattr(ts, cls)(PRIOR).fit_store(store, max_epochs=2, progress_bar=False)
    assert est.history["epochs"] == 2 and est.sample(torch.zeros(2), 4, seed=0).shape == (4, 2)
    theta, x, n_failed = export_arrays(store)
    ref_theta, ref_x = load_simulations(store)
    assert n_failed == 0 and torch.equal(theta, ref_theta) and torch.equal(x, ref_x)
    assert (store / "simulations.sqlite.arrays" / "x0.npy").stat().st_size >= x.numel() * 4  # mapped from here


def test_fit_store_follows_the_invalid_policy_and_refreshes_the_export(tmp_path):
    import telescope as ts
    from telescope.simulation.store import export_arrays

    store = tmp_path / "s"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(wide, PRIOR, 400, batch_size=100, store=store, progress_bar=False)
    with pytest.raises(ValueError, match="invalid='drop'"):
        ts.NLE(PRIOR).fit_store(store, max_epochs=1, progress_bar=False)
    with pytest.warns(UserWarning, match="dropping"):
        ts.NPE(PRIOR, transforms=1, hidden=(8,)).fit_store(store, max_epochs=1, progress_bar=False)
    n_before = export_arrays(store)[0].shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(wide, PRIOR, 600, batch_size=100, store=store, progress_bar=False)  # the store grows
    theta, x, n_failed = export_arrays(store)
    assert theta.shape[0] > n_before and torch.equal(x, load_simulations(store)[1])
