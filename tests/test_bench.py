"""``telescope bench``: a tiny grid end to end, resuming, grid mismatch and bad names."""

import json

import pytest
import torch

from telescope import bench
from telescope.cli import main

TINY = dict(tasks=["gaussian_linear"], budgets=[300], seeds=[0], observations=[1], samples=200,
            c2st_max_samples=200, max_epochs=3)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TELESCOPE_CACHE", str(tmp_path / "cache"))  # analytic references: cheap to recompute
    torch.set_num_threads(1)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_grid_end_to_end_with_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    rc = main(["bench", "--methods", "npe,nre_c", "--tasks", "gaussian_linear", "--budgets", "300",
               "--observations", "1", "--samples", "200", "--c2st-max-samples", "200", "--max-epochs", "3",
               "--out", str(out), "--plot", str(tmp_path / "plots")])
    assert rc == 0
    lines = _lines(out)
    assert lines[0]["kind"] == "header" and lines[0]["spec"]["methods"] == ["npe", "nre_c"]
    recs = lines[1:]
    assert [r["cell"]["method"] for r in recs] == ["npe", "nre_c"]
    for r in recs:
        assert 0.4 <= r["c2st"] <= 1.0 and r["mmd"] > -1 and r["swd"] >= 0
        assert r["train_s"] > 0 and r["sample_s"] >= 0 and r["simulate_s"] >= 0
    assert "nlpd" in recs[0] and "nlpd" not in recs[1]  # NRE's density is unnormalised
    assert (tmp_path / "plots" / "gaussian_linear.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "[2/2] nre_c gaussian_linear n=300 seed=0" in printed and "±" in printed
    assert main(["bench", "--summary", str(out)]) == 0
    table = capsys.readouterr().out
    assert "gaussian_linear" in table and "npe" in table and "c2st" in table


def test_coverage_metric_is_recorded_for_batched_estimators(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.runner, "COVERAGE_PAIRS", 40)
    monkeypatch.setattr(bench.runner, "COVERAGE_SAMPLES", 100)
    spec = bench.make_spec(methods=["npe", "nre_c"], metrics=["c2st", "coverage"], **TINY)
    recs = bench.run(spec, tmp_path / "r.jsonl", quiet=True)
    alphas = torch.linspace(0, 1, 101, dtype=torch.float64)
    for r in recs:
        curve = torch.tensor(r["coverage_curve"], dtype=torch.float64)
        assert curve.shape == (101,) and curve[-1] == 1.0 and (curve.diff() >= 0).all()
        # each of the 40 pairs lands at one level: the curve moves in steps of 1/40
        assert torch.allclose(curve * 40, (curve * 40).round(), atol=1e-3)
        assert r["coverage"] == pytest.approx(float((curve - alphas).mean()), abs=1e-3)
        assert r["coverage_max_gap"] == pytest.approx(float((curve - alphas).abs().max()), abs=1e-3)
    assert "coverage" not in bench.make_spec(methods=["npe"], **TINY)["metrics"]  # opt in


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    out = tmp_path / "r.jsonl"
    spec = bench.make_spec(methods=["npe", "nre_c"], metrics=["c2st"], **{**TINY, "seeds": [0, 1]})

    class Stop(Exception):
        pass

    def stop(rec):
        raise Stop  # "killed" right after the first cell is written

    with pytest.raises(Stop):
        bench.run(spec, out, on_cell=stop, quiet=True)
    first = _lines(out)
    assert len(first) == 2
    with open(out, "a") as f:
        f.write('{"kind": "cell", "cell": {"task"')  # and a half-written line, as a kill mid-write leaves
    seen = []
    rows = bench.run(spec, out, on_cell=seen.append, quiet=True)
    assert len(rows) == 4 and len(seen) == 3  # the finished cell was not recomputed
    lines = _lines(out)  # the partial line was dropped: every line parses
    assert lines[:2] == first and len(lines) == 5
    assert {bench.cell_key(r["cell"]) for r in lines[1:]} == {bench.cell_key(c) for c in bench.cells(spec)}
    assert bench.run(spec, out, on_cell=seen.append, quiet=True) and len(seen) == 3  # all done: nothing new
    # --max-cells stops early, too
    out2 = tmp_path / "r2.jsonl"
    assert len(bench.run(spec, out2, max_cells=1, quiet=True)) == 1


def test_cells_that_differ_only_in_sampler_or_n_obs_share_one_training(tmp_path, monkeypatch):
    fits = []
    fit = bench._fit
    monkeypatch.setattr(bench.runner, "_fit", lambda kind, *a, **k: fits.append(kind) or fit(kind, *a, **k))
    monkeypatch.setattr(bench.runner, "_reference", lambda task, i, n_obs, n: task.prior.sample((n,)))  # no MCMC here
    spec = bench.make_spec(methods=["npse_gauss", "npse_jac"], tasks=["bernoulli_glm"], budgets=[300],
                           n_obs=[1, 2], metrics=["swd"], samples=100, max_epochs=2,
                           sample_options={"npse_jac": {"steps": 20}})
    recs = bench.run(spec, tmp_path / "r.jsonl", quiet=True)
    assert fits == ["npse"]  # four cells, one score network
    assert recs[3]["cell"]["method"] == "npse_jac" and recs[3]["cell"]["n_obs"] == 2
    assert [r.get("shared_train", False) for r in recs] == [False, True, True, True]
    assert len({r["train_s"] for r in recs}) == 1 and all(r["swd"] > 0 for r in recs)


def test_fit_options_reach_the_estimator_and_its_training(tmp_path, monkeypatch):
    """Constructor arguments (K, width) and fit arguments (batch_size, max_epochs) both arrive, per method."""
    monkeypatch.setattr(bench.runner, "_reference", lambda task, i, n_obs, n: task.prior.sample((n,)))
    built = []
    fit = bench._fit

    def recording_fit(kind, *a, **k):
        est, epochs = fit(kind, *a, **k)
        built.append(est)
        return est, epochs

    monkeypatch.setattr(bench.runner, "_fit", recording_fit)
    spec = bench.make_spec(methods=["nre_c", "nre_b"], tasks=["two_moons"], budgets=[300], metrics=["swd"],
                           samples=50, fit_options={"nre_c": {"K": 3, "width": 16, "batch_size": 64,
                                                              "max_epochs": 2}})
    assert bench.cells(spec) and spec["fit_options"]["nre_c"]["K"] == 3
    bench.run(spec, tmp_path / "r.jsonl", quiet=True)
    c, b = built
    assert (c.K, c.config["width"], c.gamma, c.history["epochs"]) == (3, 16, 1.0, 2)
    assert (b.K, b.config["width"], b.gamma) == (9, 50, float("inf"))  # nre_b keeps the defaults


def test_results_file_of_another_grid_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    spec = bench.make_spec(methods=["npe"], metrics=["c2st"], **TINY)
    bench.run(spec, out, max_cells=0, quiet=True)  # just the header
    other = bench.make_spec(methods=["npe"], metrics=["c2st"], **{**TINY, "budgets": [400]})
    with pytest.raises(ValueError, match=r"different grid \(budgets: file has \[300\], this run \[400\]\)"):
        bench.run(other, out, quiet=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods=["npx"]), "unknown method 'npx'; available: npe, nle"),
    (dict(tasks=["two_moon"]), "unknown task 'two_moon'; available: .*two_moons"),
    (dict(metrics=["c2st", "kl"]), "unknown metric 'kl'; available: c2st, mmd, swd, nlpd, coverage"),
    (dict(budgets=[0]), "budgets must be integers >= 1"),
    (dict(observations=[11]), "observations 1..10"),
    (dict(n_obs=[1, 8]), "take one observation only"),
    (dict(sample_options={"nle": {"steps": 3}}), r"names methods \['nle'\] that are not telescope methods"),
    (dict(sample_options={"npe": 3}), "must map method names to dicts"),
    (dict(fit_options={"nle": {"K": 3}}), r"fit_options names methods \['nle'\] that are not telescope methods"),
    (dict(fit_options={"npe": {"K": 3}}), r"fit_options for 'npe' has unknown arguments \['K'\]"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    args = {**TINY, "methods": ["npe"], **kwargs}
    with pytest.raises(ValueError, match=message):
        bench.make_spec(**args)


def test_cli_bad_names_and_missing_arguments(capsys):
    assert main(["bench", "--methods", "npe", "--tasks", "nope", "--budgets", "100"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["bench", "--methods", "npe"]) == 2
    assert "needs --tasks, --budgets" in capsys.readouterr().err
    assert main(["bench", "--methods", "npe", "--tasks", "two_moons", "--budgets", "1e3,x"]) == 2
    assert "--budgets takes integers" in capsys.readouterr().err
