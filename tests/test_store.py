"""The simulation store: readable without telescope, refuses mixing, extends, locks, CLI."""

import argparse
import json
import sqlite3
import warnings

import numpy as np
import pytest
import torch

from telescope.cli.simulate import add_parsers
from telescope.priors import BoxUniform, Gaussian
from telescope.simulation.simulate import simulate
from telescope.simulation.simulators import Simulator
from telescope.simulation.store import Store, db_file, load_simulations, store_info

PRIOR = BoxUniform([-1.0, -1.0], [1.0, 1.0])


def bitwise_equal(a, b):
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def sim_a(theta):
    return theta + 0.1 * torch.randn_like(theta)


def sim_b(theta):
    return theta - 0.1 * torch.randn_like(theta)


def half_nan(theta):
    x = theta.clone()
    x[theta[:, 0] < 0] = float("nan")
    return x


def test_readable_with_sqlite_and_numpy_only(tmp_path):
    theta, x = simulate(sim_a, PRIOR, 250, seed=1, batch_size=40, store=tmp_path / "run", progress_bar=False)
    con = sqlite3.connect(str(tmp_path / "run" / "simulations.sqlite"))
    rows = con.execute("SELECT theta, theta_shape, x, x_shape, ok, noise_seed, seed, n FROM batches "
                       "WHERE level = 0 ORDER BY idx").fetchall()
    th = np.concatenate([np.frombuffer(r[0], "<f4").reshape(json.loads(r[1])) for r in rows])
    xx = np.concatenate([np.frombuffer(r[2], "<f4").reshape(json.loads(r[3])) for r in rows])
    ok = np.concatenate([np.frombuffer(r[4], "u1") for r in rows])
    seeds = np.concatenate([np.frombuffer(r[5], "<i8") for r in rows])
    assert np.array_equal(th, theta.numpy()) and np.array_equal(xx, x.numpy()) and ok.all()
    assert [r[7] for r in rows] == [40] * 6 + [10]
    assert all((seeds[i * 40:(i + 1) * 40] == r[6]).all() for i, r in enumerate(rows))  # batch-drawn noise
    meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    assert meta["kind"] == "simulate" and meta["seed"] == 1 and meta["simulators"][0]["name"] == "sim_a"
    assert meta["levels"] == [{"level": 0, "n": 250, "batch_size": 40, "seed": 1}]
    assert con.execute("SELECT level, batches, n, failed FROM summary").fetchall() == [(0, 7, 250, 0)]
    con.close()
    assert (tmp_path / "run" / "README.md").read_text().startswith("# telescope simulation store")


def test_single_file_store(tmp_path):
    path = tmp_path / "sims.sqlite"
    theta, x = simulate(sim_a, PRIOR, 30, seed=1, batch_size=8, store=path, progress_bar=False)
    assert db_file(path) == path and path.is_file()
    t2, x2 = load_simulations(path)
    assert bitwise_equal(t2, theta) and bitwise_equal(x2, x)


@pytest.mark.parametrize("change,match", [
    ({"seed": 2}, r"seed: the store has seed=1, this call has seed=2"),
    ({"simulator": sim_b}, r"simulator: the store has 'sim_a'.*this call has 'sim_b'"),
    ({"simulator": Simulator(sim_a, config={"sigma": 2})}, r"config \{\}.*config \{'sigma': 2\}"),
    ({"prior": BoxUniform([-1.0, -1.0], [1.0, 2.0])}, r"prior: the store has BoxUniform"),
    ({"prior": Gaussian([0.0, 0.0], [1.0, 1.0])}, r"prior: "),
    ({"batch_size": 30}, r"batch_size: the store has 20, this call has 30"),
])
def test_refuses_to_mix_a_different_campaign(tmp_path, change, match):
    store = tmp_path / "run"
    simulate(sim_a, PRIOR, 100, seed=1, batch_size=20, store=store, progress_bar=False)
    args = {"simulator": sim_a, "prior": PRIOR, "seed": 1, "batch_size": 20, **change}
    with pytest.raises(ValueError, match=match) as info:
        simulate(args["simulator"], args["prior"], 100, seed=args["seed"], batch_size=args["batch_size"],
                 store=store, progress_bar=False)
    assert "cannot be mixed" in str(info.value) and "new store path" in str(info.value)
    assert len(load_simulations(store)[0]) == 100  # untouched


def test_extending_a_campaign_simulates_only_new_batches(tmp_path):
    store = tmp_path / "run"
    simulate(sim_a, PRIOR, 100, seed=1, batch_size=20, store=store, progress_bar=False)
    from telescope.simulation.campaign import run_campaign

    res = run_campaign(sim_a, PRIOR, 170, seed=1, batch_size=20, store=store, progress_bar=False)
    assert res["summary"]["batches_run"] == 4 and res["summary"]["batches_resumed"] == 5
    ref = simulate(sim_a, PRIOR, 170, seed=1, batch_size=20, progress_bar=False)
    assert bitwise_equal(res["theta"], ref[0]) and bitwise_equal(res["x"], ref[1])
    # a smaller n whose batches are stored returns exactly the smaller in-memory campaign, simulating nothing
    res = run_campaign(sim_a, PRIOR, 60, seed=1, batch_size=20, store=store, progress_bar=False)
    assert res["summary"]["batches_run"] == 0
    assert bitwise_equal(res["theta"], simulate(sim_a, PRIOR, 60, seed=1, batch_size=20, progress_bar=False)[0])
    # the last batch (10 simulations) cannot become a batch of 20
    with pytest.raises(ValueError, match=r"holds batch 8 with 10 simulations.*puts 20"):
        simulate(sim_a, PRIOR, 200, seed=1, batch_size=20, store=store, progress_bar=False)
    assert store_info(store)["levels"][0]["n_target"] == 170


def test_load_excludes_failed_and_warns_when_incomplete(tmp_path):
    store = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="failed"):
        theta, x = simulate(half_nan, PRIOR, 200, seed=0, batch_size=50, store=store, progress_bar=False)
    t_ok, x_ok = load_simulations(store)
    keep = theta[:, 0] >= 0
    assert bitwise_equal(t_ok, theta[keep]) and torch.isfinite(x_ok).all()
    con = sqlite3.connect(str(db_file(store)))
    con.execute("DELETE FROM batches WHERE idx = 3")
    con.commit()
    con.close()
    with pytest.warns(RuntimeWarning, match=r"incomplete \(level 0: 150 of 200"):
        t3, _ = load_simulations(store, include_failed=True)
    assert bitwise_equal(t3, theta[:150])
    with pytest.raises(ValueError, match="level must be None or 0"):
        load_simulations(store, level=1)


def test_second_writer_is_refused_while_a_campaign_runs(tmp_path):
    store = tmp_path / "run"
    simulate(sim_a, PRIOR, 10, store=store, progress_bar=False)
    with Store(store, write=True):
        with pytest.raises(RuntimeError, match="being written by another campaign"):
            simulate(sim_a, PRIOR, 10, store=store, progress_bar=False)
    simulate(sim_a, PRIOR, 10, store=store, progress_bar=False)  # lock released


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no simulation store"):
        load_simulations(tmp_path / "missing")
    bad = tmp_path / "bad.sqlite"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a readable telescope simulation store"):
        load_simulations(bad)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="telescope")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_store_info(tmp_path, capsys):
    store = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(half_nan, PRIOR, 90, seed=4, batch_size=40, store=store, progress_bar=False)
    assert _cli(["store", "info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "simulate() campaign, seed 4" in out and "half_nan" in out and "90/90 simulations" in out
    assert "3/3 batches of 40" in out and "non-finite output" in out
    assert _cli(["store", "info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"][0]["n_failed"] == int((load_simulations(store, include_failed=True)[0][:, 0] < 0).sum())
    assert _cli(["store", "info", str(tmp_path / "nope")]) == 2
    assert "no simulation store" in capsys.readouterr().err


def test_cli_simulate_parses_and_reports_errors(tmp_path, capsys):
    assert _cli(["simulate", "no_such_task", "--n", "10", "--store", str(tmp_path / "x")]) == 2
    assert "unknown task" in capsys.readouterr().err
