"""Fault injection (issue 20, cases 7-9): untrusted files, errors that name the argument, invalid simulations."""

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import telescope as ts
from telescope.cli import main as cli_main

PRIOR = ts.BoxUniform([-1.0, -1.0], [1.0, 1.0])


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = PRIOR.low + (PRIOR.high - PRIOR.low) * torch.rand(n, 2, generator=g)
    return theta, theta + 0.1 * torch.randn(n, 2, generator=g)


# ---------------------------------------------------------------------------------------------
# 7. untrusted files
# ---------------------------------------------------------------------------------------------
def test_every_torch_load_uses_weights_only():
    import ast
    import pathlib

    src = pathlib.Path(ts.__file__).parent
    calls = [(p, node) for p in src.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"]
    assert calls
    safe = lambda call: any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)  # noqa: E731
                            and k.value.value is True for k in call.keywords)
    assert all(safe(c) for _, c in calls), [f"{p}:{c.lineno}" for p, c in calls if not safe(c)]


@pytest.mark.parametrize("cls, key, value", [
    (ts.NPE, "hidden", [30000, 30000]),  # would allocate gigabytes
    (ts.NRE, "width", 40000),
    (ts.NPE, "hidden", [80, 80]),  # small, but not what the weights hold
])
def test_config_edited_to_other_sizes_is_refused_before_building(tmp_path, cls, key, value):
    theta, x = _data()
    est = cls(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False)
    est.save(tmp_path / "m")
    assert torch.equal(ts.load(tmp_path / "m", PRIOR).sample(x[0], 5, seed=0), est.sample(x[0], 5, seed=0))
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"][key] = value
    cfg_path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"config\.json.*(does not describe the saved weights|far larger)"):
        ts.load(tmp_path / "m", PRIOR)
    assert time.perf_counter() - t0 < 2.0


def test_unreadable_config_and_weights_are_named(tmp_path):
    theta, x = _data()
    ts.NRE(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False).save(tmp_path / "m")
    (tmp_path / "m" / "weights.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"weights\.pt' is not a readable state dict"):
        ts.load(tmp_path / "m", PRIOR)
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json' is not a telescope estimator config"):
        ts.load(tmp_path / "m", PRIOR)


# ---------------------------------------------------------------------------------------------
# 8. errors that name the argument
# ---------------------------------------------------------------------------------------------
def test_gaussian_with_a_bad_covariance():
    with pytest.raises(ValueError, match="cov must be positive definite.*smallest eigenvalue is -1"):
        ts.Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="cov must be positive definite"):
        ts.Gaussian([0.0, 0.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="cov must be symmetric"):
        ts.Gaussian([0.0, 0.0], [[1.0, 0.5], [0.1, 1.0]])
    ts.Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("kwargs, match", [
    ({"transforms": -1}, "transforms must be an integer >= 1, got -1"),
    ({"transforms": 0}, "transforms must be an integer >= 1"),
    ({"hidden": (64, 0)}, r"hidden\[1\] must be an integer >= 1"),
    ({"bins": 0}, "bins must be an integer >= 1"),
    ({"flow": "xyz"}, "flow must be one of"),
])
def test_flow_arguments_are_checked_up_front(kwargs, match):
    for cls in (ts.NPE, ts.NLE):
        with pytest.raises(ValueError, match=match):
            cls(PRIOR, **kwargs)


def test_bad_observations_and_training_arguments():
    theta, x = _data()
    est = ts.NPE(PRIOR, transforms=1, hidden=(8,)).fit(theta, x, max_epochs=1, progress_bar=False)
    with pytest.raises(TypeError, match="x_o must be a tensor or array of numbers, got str 'abc'"):
        est.sample("abc", 10)
    with pytest.raises(TypeError, match="x_o must be real, got a complex tensor"):
        est.sample(torch.zeros(2, dtype=torch.complex64), 10)
    with pytest.raises(TypeError, match="x must be real, got a complex tensor"):
        ts.NPE(PRIOR).fit(theta, x.to(torch.complex64), max_epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="max_epochs must be an integer >= 1, got 0"):
        ts.NPE(PRIOR).fit(theta, x, max_epochs=0, progress_bar=False)
    with pytest.raises(ValueError, match="max_epochs must be an integer >= 1, got 0"):
        ts.NRE(PRIOR).fit(theta, x, max_epochs=0, progress_bar=False)


def complex_sim(theta):
    return torch.complex(theta, theta)


def test_complex_simulator_output_is_refused_not_cut():
    from telescope.simulation.campaign import SimulatorFailing

    with pytest.raises(SimulatorFailing, match="returned complex x"):
        ts.simulate(complex_sim, PRIOR, 10, progress_bar=False)


@pytest.mark.parametrize("argv, match", [
    (["--observations", "0"], "--observations must be >= 1"),
    (["--observations", "11"], "--observations must be at most 10"),
    (["--samples", "0"], "--samples must be >= 2"),
])
def test_demo_arguments_are_checked_before_any_work(tmp_path, capsys, argv, match):
    out = tmp_path / "report"
    assert cli_main(["demo", "--out", str(out), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


NO_GUARD = '''
import torch
import telescope as ts

def sim(theta):
    return theta + torch.randn_like(theta)

ts.simulate(sim, ts.BoxUniform([-1.0], [1.0]), 40, batch_size=10, store=STORE, workers=2, progress_bar=False)
'''


@pytest.mark.slow
def test_script_without_main_guard_explains_the_guard(tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent(NO_GUARD).replace("STORE", repr(str(tmp_path / "run"))))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert 'if __name__ == "__main__":' in res.stderr and "died while starting" in res.stderr


# ---------------------------------------------------------------------------------------------
# 9. invalid simulations and the estimator
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ts.NLE, ts.NRE])
def test_likelihood_and_ratio_estimators_refuse_failed_simulations_by_default(cls):
    theta, x = _data()
    x[:5] = float("nan")
    with pytest.raises(ValueError, match=r"(?s)5 of 200 simulations with NaN.*biases the posterior.*invalid='drop'"):
        cls(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False)
    with pytest.warns(UserWarning, match="dropping 5 of 200"):
        cls(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False, invalid="drop")


def test_posterior_estimator_drops_with_a_warning_and_can_refuse():
    theta, x = _data()
    x[:5] = float("nan")
    with pytest.warns(UserWarning, match="dropping 5 of 200"):
        ts.NPE(PRIOR, transforms=1, hidden=(8,)).fit(theta, x, max_epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="5 of 200 simulations with NaN"):
        ts.NPE(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False, invalid="refuse")
    with pytest.raises(ValueError, match="invalid must be 'drop'"):
        ts.NPE(PRIOR).fit(theta, x, max_epochs=1, progress_bar=False, invalid="keep")
