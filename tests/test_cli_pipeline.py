"""The pipeline on the command line (issue 21): simulate a user's simulator, train, sample; run as the console script."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from telescope.cli import main

EXE = shutil.which("telescope")

MODEL = textwrap.dedent("""
    import torch
    prior = torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(2), torch.ones(2)), 1)
    def make_prior():
        return prior
    def simulate(theta):
        return theta + 0.1 * torch.randn_like(theta)
""")


def _run(args, cwd):
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(__import__("telescope").__file__))
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])  # the telescope under test
    return subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(EXE is None, reason="the telescope console script is not installed")
def test_simulate_train_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel.py").write_text(MODEL)
    r = _run(["simulate", "--simulator", "mymodel:simulate", "--prior", "mymodel:prior", "--n", "400",
              "--batch-size", "100", "--store", "sims", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "400 simulations" in r.stdout
    r = _run(["train", "--method", "npe", "--store", "sims", "--prior", "mymodel:make_prior", "--out", "est",
              "--max-epochs", "2", "--option", "transforms=2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "training NPE on 400 simulations" in r.stderr
    assert json.loads((tmp_path / "est" / "prior.json").read_text()) == {"prior": "mymodel:make_prior"}
    assert json.loads((tmp_path / "est" / "config.json").read_text())["config"]["transforms"] == 2
    np.save(tmp_path / "xo.npy", np.array([0.2, -0.3], dtype=np.float32))
    (tmp_path / "xo.csv").write_text("0.2,-0.3\n")
    r = _run(["sample", "est", "--observation", "xo.npy", "--n", "30", "--out", "s.npy", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (30, 2) and (np.abs(s) <= 1).all()
    r = _run(["sample", "est", "--observation", "xo.csv", "--n", "30", "--out", "s.csv", "--quiet", "--seed", "0"],
             tmp_path)
    assert r.returncode == 0, r.stderr
    c = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert c.shape == (30, 2)
    np.testing.assert_allclose(c, np.load(tmp_path / "s.npy"), rtol=1e-6)  # same seed, same draws
    if _has("arviz"):  # in this process (a console-script start costs seconds)
        assert main(["sample", "est", "--observation", "xo.npy", "--n", "30", "--out", "s.nc", "--quiet"]) == 0
        import arviz as az
        assert az.from_netcdf(tmp_path / "s.nc").posterior["theta"].shape == (1, 30, 2)


def _has(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


class _Result:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


def _main(args, cwd, capsys):
    """The command in this process (same parser and handlers as the console script, without its start-up)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            code = main(args)
        except SystemExit as e:  # argparse: --help, bad values
            code = e.code
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def test_help_and_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_object puts the working directory on the path
    for cmd in ("train", "sample", "simulate"):
        r = _main([cmd, "--help"], tmp_path, capsys)  #
        assert r.returncode == 0 and "usage" in r.stdout
    r = _main(["simulate", "--simulator", "nomodule:f", "--prior", "nomodule:p", "--n", "10", "--store", "s"], tmp_path, capsys)
    assert r.returncode == 2 and "cannot import module 'nomodule'" in r.stderr
    r = _main(["simulate", "--simulator", "justaname", "--prior", "x:y", "--n", "10", "--store", "s"], tmp_path, capsys)
    assert r.returncode == 2 and "package.module:attribute" in r.stderr
    r = _main(["train", "--method", "npe", "--data", "missing.pt", "--task", "two_moons", "--out", "e"], tmp_path, capsys)
    assert r.returncode == 2 and "missing.pt" in r.stderr
    r = _main(["train", "--method", "npe", "--store", "s", "--out", "e"], tmp_path, capsys)
    assert r.returncode == 2 and "--prior" in r.stderr
    r = _main(["sample", "nothing-here", "--observation", "x.npy", "--out", "s.npy"], tmp_path, capsys)
    assert r.returncode == 2 and "no trained estimator" in r.stderr
    r = _main(["train", "--method", "npe", "--max-epochs", "0", "--task", "two_moons", "--out", "e"], tmp_path, capsys)
    assert r.returncode == 2 and "--max-epochs must be > 0" in r.stderr


def test_train_from_pt_file_with_a_task(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    import torch

    import telescope as ts

    task = ts.tasks.get("two_moons")
    theta, x = ts.simulate(task.simulator, task.prior, 300, progress_bar=False)
    torch.save({"theta": theta, "x": x}, tmp_path / "sims.pt")
    r = _main(["train", "--method", "nre", "--data", "sims.pt", "--task", "two_moons", "--out", "nre",
              "--max-epochs", "2", "--quiet"], tmp_path, capsys)
    assert r.returncode == 0, r.stderr
    (tmp_path / "xo.json").write_text(json.dumps(task.observation(1).tolist()))
    r = _main(["sample", "nre", "--observation", "xo.json", "--n", "20", "--out", "s.npy", "--quiet"], tmp_path, capsys)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "s.npy").shape == (20, 2)
    r = _main(["train", "--method", "nre", "--data", "sims.pt", "--task", "two_moons", "--out", "nre"], tmp_path, capsys)
    assert r.returncode == 2 and "--overwrite" in r.stderr
