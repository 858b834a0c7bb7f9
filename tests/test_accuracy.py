"""Issue 2's accuracy targets at 10,000 simulations, against the tasks' reference posteriors.

These train full-size estimators (about a minute each on 2 cores), so they are marked slow and
CI skips them; run them with ``python -m pytest -m slow tests/test_accuracy.py``.

Tolerances: the target applies to the mean C2ST over observations 1-3 (2,000 posterior samples
each, 5-fold C2ST); a single observation's C2ST has a standard error of about 0.01.
"""

import pytest

import telescope as ts
from telescope import metrics

pytestmark = pytest.mark.slow

OBS = (1, 2, 3)


def _c2st(task, est, n=2000):
    values = [metrics.c2st(est.sample(task.observation(i), n, seed=i), task.reference_samples(i, n=n), seed=i)
              for i in OBS]
    print(f"{task.name} {type(est).__name__}: C2ST {[round(v, 3) for v in values]}")
    return sum(values) / len(values)


def _data(name, n=10_000):
    task = ts.tasks.get(name)
    theta, x = ts.simulate(task.simulator, task.prior, n, seed=0, progress_bar=False)
    return task, theta, x


# the default NPE (3 spline transforms, plain weights) is tuned for speed: 0.555 on gaussian_linear
# (0.538, 0.519, 0.607; 2026-11-30), where 9,000 pairs in 20 dimensions overfit after ~15 epochs.  Five
# transforms with a moving average of the weights reach the 0.55 target (0.544, 0.529, 0.576 -> 0.550).
ACCURATE = {"gaussian_linear": ({"transforms": 5}, {"ema": 0.99, "patience": 10})}


@pytest.mark.parametrize("name, target", [("gaussian_linear", 0.55), ("two_moons", 0.62)])
def test_npe_c2st_at_10k(name, target):
    task, theta, x = _data(name)
    init, fit = ACCURATE.get(name, ({}, {}))
    est = ts.NPE(task.prior, seed=0, **init).fit(theta, x, progress_bar=False, **fit)
    assert _c2st(task, est) <= target


def test_nle_gaussian_linear_c2st_at_10k():
    task, theta, x = _data("gaussian_linear")
    est = ts.NLE(task.prior, seed=0).fit(theta, x, progress_bar=False)
    assert _c2st(task, est) <= 0.58
