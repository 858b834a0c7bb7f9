"""``executor=`` on ts.simulate and ts.simulate_levels, the issue's name for an executor backend (issue 21, item 4)."""

import concurrent.futures as cf

import pytest
import torch

import telescope as ts

PRIOR = ts.priors.BoxUniform(-torch.ones(2), torch.ones(2))


def _low(theta, u):
    return theta + u


def _high(theta, u):
    return theta + u + 0.01 * theta**2


def _noise(n, generator):
    return torch.randn(n, 2, generator=generator)


def test_executor_keyword_gives_the_serial_rows():
    task = ts.tasks.get("two_moons")
    want = ts.simulate(task.simulator, task.prior, 120, seed=7, batch_size=30, progress_bar=False)
    with cf.ThreadPoolExecutor(2) as ex:
        got = ts.simulate(task.simulator, task.prior, 120, seed=7, batch_size=30, progress_bar=False, executor=ex)
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_executor_keyword_on_simulate_levels_gives_the_serial_levels():
    ladder = ts.simulation.ladder.FidelityLadder([_low, _high], noise=_noise, costs=[1.0, 2.0])
    want = ts.simulate_levels(ladder, PRIOR, [40, 20], seed=2, batch_size=10, progress_bar=False)
    with cf.ThreadPoolExecutor(2) as ex:
        got = ts.simulate_levels(ladder, PRIOR, [40, 20], seed=2, batch_size=10, progress_bar=False, executor=ex)
    assert len(got) == 2 and len(got[1]) == 3
    assert all(torch.equal(a, b) for lw, lg in zip(want, got) for a, b in zip(lw, lg))


def test_executor_and_backend_together_or_a_non_executor_are_refused():
    task = ts.tasks.get("two_moons")
    with cf.ThreadPoolExecutor(1) as ex:
        with pytest.raises(ValueError, match="executor= or backend=, not both.*backend='processes'.*ThreadPoolExecutor"):
            ts.simulate(task.simulator, task.prior, 10, progress_bar=False, backend="processes", executor=ex)
        with pytest.raises(ValueError, match="not both"):
            ts.simulate_levels([_low, _high], PRIOR, [10, 5], progress_bar=False, backend=ex, executor=ex)
    with pytest.raises(TypeError, match=r"executor must be an object with submit\(fn, \*args\).*got int"):
        ts.simulate(task.simulator, task.prior, 10, progress_bar=False, executor=4)
