"""How well learned couplings lift cheap toggle-switch simulations to the top fidelity, and what is reachable.

The lifted-simulation member of the default multilevel fit (``couple=True``,
:mod:`telescope.multilevel.coupling`) is trained on cheap simulations carried up the ladder by conditional
flows fitted on each level's pairs.  This script measures the quality of those lifted simulations on the toggle
switch at the paper's allocation A (10^4 / 500 / 100, the data and seeds of ``ml_equal_cost.py``): squared
MMD (the paper's, 500 draws per parameter) between lifted and real top-fidelity simulations at the 100 test
parameters of ``ml_equal_cost.py``, lifted from fidelity 0 (both couplings) and from fidelity 1 (the top one).
The couplings are fitted on the first cross-fitting fold's training pairs, as in a default fit.

Variants (``--variants``, JSON ``{name: {"net": {...Coupling kwargs}, "train": {...train kwargs},
"step": "residual" | "direct" | "asinh", "scale": s, "members": k}}``):

* ``step``: the flow models the residual ``x^l - x^(l-1)`` (the library's), ``x^l`` itself, or the residual
  of ``asinh(x / scale)``;
* ``members``: a mixture of ``k`` couplings fitted with different seeds (each lifted row uses one at random).

``--reference`` also prints the floor of the metric (two independent real draws) and the score of the same
MDN trained on 10^4 real top-fidelity simulations.

    OMP_NUM_THREADS=1 python benchmarks/ml_coupling.py --repeats 0,1 --reference
    OMP_NUM_THREADS=1 python benchmarks/ml_coupling.py --variants '{"small": {"net": {"transforms": 2, "hidden": [64, 64]}}}'

Prints one JSON line per (repeat, variant).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import Tensor

import telescope as ts
from _ml_common import mmd2_paper, set_threads
from ml_equal_cost import Case
from telescope.multilevel.coupling import Coupling, fit_couplings, lift
from telescope.multilevel.crossfit import fold_splits
from telescope.multilevel.levels import as_levels

DEFAULT_VARIANTS = {
    "default": {},
    "2x64": {"net": {"transforms": 2, "hidden": [64, 64]}},
    "1x32": {"net": {"transforms": 1, "hidden": [32, 32]}},
    "5x128": {"net": {"transforms": 5, "hidden": [128, 128]}},
    "weight_decay": {"train": {"weight_decay": 1e-3}},
    "four_members": {"members": 4},
    "direct": {"step": "direct"},
    "asinh_1": {"step": "asinh", "scale": 1.0},
    "asinh_100": {"step": "asinh", "scale": 100.0},
}


def _warp(step: str, scale: float):
    """``(forward, inverse)`` maps of the simulations in which the coupling's step is modelled."""
    if step == "asinh":
        return (lambda x: torch.asinh(x / scale)), (lambda y: scale * torch.sinh(y))
    return (lambda x: x), (lambda y: y)


class _Variant(Coupling):
    """A :class:`Coupling` whose step is modelled on warped simulations, or directly (not as a residual)."""

    warp = staticmethod(_warp("residual", 1.0))
    direct = False

    def yc(self, theta: Tensor, x: Tensor, x_low: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        fwd = self.warp[0]
        low = fwd(x_low.flatten(1))
        y = fwd(x.flatten(1))
        return (y if self.direct else y - low), torch.cat([theta, low], 1)

    @torch.no_grad()
    def step(self, theta: Tensor, x_low: Tensor) -> Tensor:
        fwd, inv = self.warp
        low = fwd(x_low.flatten(1))
        r = self.flow.sample(torch.cat([theta, low], 1), 1)[0]
        return inv(r if self.direct else low + r).reshape(x_low.shape)


def _fit(tr, va, variant: dict, seed: int) -> list:
    step = variant.get("step", "residual")
    kind = None
    if step != "residual":
        kind = type("V", (_Variant,), {"warp": staticmethod(_warp(step, variant.get("scale", 1.0))),
                                       "direct": step == "direct"})
    torch.manual_seed(seed)
    return fit_couplings(tr, va, "cpu", net_kwargs=variant.get("net"), kind=kind, seed=seed, progress_bar=False,
                         **variant.get("train", {}))


def _lift_any(sets: list[list], theta: Tensor, x: Tensor, fidelity: int) -> Tensor:
    which = torch.randint(len(sets), (theta.shape[0],), generator=torch.Generator().manual_seed(0))
    out = torch.empty_like(x)
    for i, cps in enumerate(sets):
        rows = which == i
        out[rows] = lift(cps, theta[rows], x[rows], fidelity)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", default="0,1")
    p.add_argument("--variants", default=None, help="JSON, see above (default: the nine variants of the README)")
    p.add_argument("--reference", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    set_threads(args.threads)
    case = Case("toggle")
    task = ts.tasks.get("toggle_switch")
    with ts.simulators.seeded(777):
        theta = case.prior.sample((100,))
    th = theta.repeat_interleave(500, 0)
    real = task.simulator(th, seed=4242).reshape(100, 500, -1)
    cheap = [case.ladder[f](th, seed=99 + f) for f in (0, 1)]

    def score(x: Tensor) -> float:
        x = x.reshape(100, 500, -1)
        return round(float(torch.tensor([mmd2_paper(x[i], real[i]) for i in range(100)]).mean()), 4)

    reps = [int(r) for r in args.repeats.split(",")]
    if args.reference:
        print(json.dumps({"floor": score(task.simulator(th, seed=4243))}), flush=True)
        for r in reps:
            t_hi, x_hi = ts.simulate(case.ladder[2], case.prior, 10_000, seed=80_000 + r, progress_bar=False)
            print(json.dumps({"r": r, "mdn_on_1e4_real": case.metric(case.make(r).fit(t_hi, x_hi, progress_bar=False))}),
                  flush=True)
    variants = json.loads(args.variants) if args.variants else DEFAULT_VARIANTS
    for r in reps:
        levels = ts.simulate_levels(case.ladder, case.prior, n=case.n, seed=10_000 + r, progress_bar=False)
        tr, va = fold_splits(as_levels(levels, case.prior.sample((1,)).shape[-1]), 5, torch.Generator().manual_seed(r))[0]
        for name, v in variants.items():
            t0 = time.perf_counter()
            sets = [_fit(tr, va, v, 100 * r + k) for k in range(int(v.get("members", 1)))]
            out = {"r": r, "variant": name, **{f"from_{f}": score(_lift_any(sets, th, cheap[f], f)) for f in (0, 1)},
                   "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
