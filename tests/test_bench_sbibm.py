"""telescope bench records which observation set (sbibm's stored data or the library's draws) each cell used (issue 21)."""

from __future__ import annotations

import json

import pytest
import torch

from telescope import bench, tasks


def test_bench_scores_sir_on_sbibms_data_and_records_it(tmp_path, monkeypatch):
    seen = []
    ref = bench._reference
    monkeypatch.setattr(bench.runner, "_reference", lambda task, i, n_obs, n: seen.append(ref(task, i, n_obs, n)) or seen[-1])
    spec = bench.make_spec(methods=["npe"], tasks=["sir", "two_moons"], budgets=[200], metrics=["swd"], samples=100,
                           max_epochs=2)
    assert spec["observation_sets"] == {"sir": "sbibm", "two_moons": "sbibm"}  # both ship sbibm's files
    recs = bench.run(spec, tmp_path / "r.jsonl", quiet=True)
    by_task = {r["cell"]["task"]: r for r in recs}
    assert by_task["sir"]["observation_set"] == "sbibm" and by_task["sir"]["reference_source"] == "sbibm"
    assert by_task["two_moons"]["observation_set"] == "sbibm" and by_task["two_moons"]["reference_source"] == "sbibm"
    assert torch.equal(seen[0], tasks.get("sir").reference_samples(1, 100))  # sbibm's stored reference
    header = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert header["spec"]["observation_sets"] == {"sir": "sbibm", "two_moons": "sbibm"}
    # the library's own draws: no observation_sets in the spec, so the header differs and the file is refused
    own = bench.make_spec(methods=["npe"], tasks=["sir", "two_moons"], budgets=[200], metrics=["swd"], samples=100,
                          max_epochs=2, observation_set="telescope")
    assert "observation_sets" not in own
    with pytest.raises(ValueError, match="observation_sets"):
        bench.run(own, tmp_path / "r.jsonl", quiet=True)
    assert bench._get_task("sir", own).observation_set == "telescope"
    assert bench._get_task("two_moons", own).observation_set == "telescope"
    with pytest.raises(ValueError, match="observation_set must be 'sbibm' or 'telescope', got 'paper'"):
        bench.make_spec(methods=["npe"], tasks=["sir"], budgets=[200], observation_set="paper")


def test_tarp_metric_for_telescope_and_sbi_peers_and_coverage_for_sbi_npe(tmp_path, monkeypatch):
    pytest.importorskip("sbi")
    monkeypatch.setattr(bench.runner, "COVERAGE_PAIRS", 40)
    monkeypatch.setattr(bench.runner, "COVERAGE_SAMPLES", 100)
    spec = bench.make_spec(methods=["npe", "sbi_npe"], tasks=["gaussian_linear"], budgets=[300],
                           metrics=["coverage", "tarp"], samples=100, max_epochs=3)
    recs = bench.run(spec, tmp_path / "r.jsonl", quiet=True)
    alphas = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert [r["cell"]["method"] for r in recs] == ["npe", "sbi_npe"] and not any("error" in r for r in recs)
    for r in recs:
        for name in ("coverage", "tarp"):
            curve = torch.tensor(r[f"{name}_curve"], dtype=torch.float64)
            assert curve.shape == (101,) and curve[-1] == 1.0 and (curve.diff() >= 0).all()
            assert torch.allclose(curve * 40, (curve * 40).round(), atol=1e-3)  # 40 pairs: steps of 1/40
            assert r[name] == pytest.approx(float((curve - alphas).mean()), abs=1e-3)
            assert r[f"{name}_max_gap"] == pytest.approx(float((curve - alphas).abs().max()), abs=1e-3)
