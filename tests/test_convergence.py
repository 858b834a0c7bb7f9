"""Rank-normalised R-hat and bulk/tail ESS (Vehtari et al. 2021): one implementation, equal to ArviZ's."""

import math

import numpy as np
import pytest
import torch

from telescope.samplers import convergence
from telescope.samplers.mcmc import rhat as rhat_draws_first
from telescope.tasks._benchmark import ess as benchmark_ess


def _ar1(chains: int, draws: int, d: int, phi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(chains, draws, d, generator=g, dtype=torch.float64)
    z = torch.zeros_like(e)
    z[:, 0] = e[:, 0] / math.sqrt(1 - phi**2)
    for t in range(1, draws):
        z[:, t] = phi * z[:, t - 1] + e[:, t]
    return z


def test_truths():
    g = torch.Generator().manual_seed(0)
    iid = torch.randn(4, 1000, 2, generator=g, dtype=torch.float64)
    assert (convergence.rhat(iid) < 1.01).all()
    assert ((convergence.ess_bulk(iid) / 4000 - 1).abs() < 0.15).all()
    ar = _ar1(8, 2000, 1, 0.8, seed=1)  # tau = (1 + phi) / (1 - phi) = 9
    assert abs(convergence.ess(ar).item() / (16_000 / 9) - 1) < 0.2
    assert abs(convergence.ess_bulk(ar).item() / (16_000 / 9) - 1) < 0.2
    stuck = iid.clone()
    stuck[0] += 3.0  # one chain elsewhere
    assert (convergence.rhat(stuck) > 1.1).all()
    # a chain with the right mean but a different spread: only the folded (tail) R-hat sees it
    spread = iid.clone()
    spread[0] *= 3.0
    assert convergence.rhat(spread).min() > 1.05 > convergence.split_rhat(spread).max()


def test_one_copy_everywhere():
    x = _ar1(5, 200, 2, 0.5, seed=2)
    assert torch.allclose(rhat_draws_first(x.transpose(0, 1).float()).double(), convergence.rhat(x), atol=1e-6)
    assert torch.allclose(benchmark_ess(x.transpose(0, 1)), convergence.ess_bulk(x))


@pytest.mark.parametrize("case", ["iid", "ar_odd", "ties", "many_short", "stuck"])
def test_equal_to_arviz(case):
    az = pytest.importorskip("arviz")
    g = torch.Generator().manual_seed(3)
    x = {"iid": lambda: torch.randn(4, 500, 2, generator=g, dtype=torch.float64),
         "ar_odd": lambda: _ar1(3, 301, 3, 0.9, seed=4),
         "ties": lambda: torch.randint(0, 5, (4, 100, 2), generator=g).double(),
         "many_short": lambda: torch.randn(200, 6, 2, generator=g, dtype=torch.float64),
         "stuck": lambda: _ar1(4, 100, 2, 0.95, seed=5) + torch.tensor([0.0, 0, 0, 2.0]).reshape(4, 1, 1)}[case]()
    with pytest.warns(UserWarning) if case == "many_short" else _nothing():
        ds = az.convert_to_dataset(x.numpy())
    ours = {"rhat": convergence.rhat(x), "bulk": convergence.ess_bulk(x), "tail": convergence.ess_tail(x),
            "mean": convergence.ess(x)}
    theirs = {"rhat": az.rhat(ds)["x"].values, "bulk": az.ess(ds, method="bulk")["x"].values,
              "tail": az.ess(ds, method="tail")["x"].values, "mean": az.ess(ds, method="mean")["x"].values}
    for key in ours:
        np.testing.assert_allclose(ours[key].numpy(), theirs[key], rtol=1e-9, atol=1e-6, err_msg=key)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_check_chains_warns_and_errors():
    g = torch.Generator().manual_seed(6)
    good = torch.randn(4, 400, 2, generator=g)
    out = convergence.check_chains(good)
    assert out["ok"] and set(out) >= {"rhat", "ess_bulk", "ess_tail", "problems"}
    bad = good.clone()
    bad[1] += 5
    with pytest.warns(RuntimeWarning, match="R-hat"):
        assert not convergence.check_chains(bad)["ok"]
    with pytest.raises(ValueError, match="at least 4 draws"):
        convergence.rhat(torch.zeros(10, 3, 2))
    with pytest.raises(ValueError, match=r"\(chains, draws\)"):
        convergence.ess_bulk(torch.zeros(5))
