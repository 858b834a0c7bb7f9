"""telescope: simulation-based inference when every simulation is expensive.

The public API (see DESIGN.md):

>>> import telescope as ts
>>> task = ts.tasks.get("two_moons")
>>> theta, x = ts.simulate(task.simulator, task.prior, 1000, seed=0, progress_bar=False)
"""

from . import diagnostics, diffusion, metrics, mlmc, multilevel, simulation, tasks, training
from ._version import __version__
from .estimators import NLE, NPE, NPSE, NRE, Estimator, load
from .interop import to_inference_data
from .multilevel import MultilevelNLE, MultilevelNPE
from .priors import BoxUniform, Gaussian, Joint, LogNormal
from .simulation import (  # noqa: F401 - module attributes of earlier versions
    FidelityLadder,
    Simulator,
    campaign,
    ladder,
    load_simulations,
    simulate,
    simulate_levels,
    simulators,
    store,
)
from .training import train

__all__ = [
    "__version__", "tasks", "metrics", "diagnostics", "plots", "diffusion", "mlmc", "simulate", "Simulator", "BoxUniform", "Gaussian", "LogNormal", "Joint",
    "NPE", "NLE", "NPSE", "NRE", "Estimator", "load", "train", "FidelityLadder", "simulate_levels", "load_simulations",
    "to_inference_data",
    "multilevel", "MultilevelNLE", "MultilevelNPE", "simulation", "training",
]

_LAZY = {"plots"}  # imported on first use: matplotlib is not loaded by ``import telescope``


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | _LAZY)
