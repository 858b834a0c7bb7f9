"""telescope: simulation-based inference when every simulation is expensive.

The public API (see DESIGN.md):

>>> import telescope as ts
>>> task = ts.tasks.get("two_moons")
>>> theta, x = ts.simulate(task.simulator, task.prior, 1000, seed=0, progress_bar=False)
"""

__version__ = "0.1.0"

from . import diagnostics, diffusion, metrics, mlmc, multilevel, plots, tasks
from .estimators import NLE, NPE, NPSE, NRE, Estimator, load
from .ladder import FidelityLadder, simulate_levels
from .multilevel import MultilevelNLE, MultilevelNPE
from .priors import BoxUniform, Gaussian, Joint, LogNormal
from .simulate import simulate
from .simulators import Simulator
from .store import load_simulations
from .train import train

__all__ = [
    "__version__", "tasks", "metrics", "diagnostics", "plots", "diffusion", "mlmc", "simulate", "Simulator", "BoxUniform", "Gaussian", "LogNormal", "Joint",
    "NPE", "NLE", "NPSE", "NRE", "Estimator", "load", "train", "FidelityLadder", "simulate_levels", "load_simulations",
    "multilevel", "MultilevelNLE", "MultilevelNPE",
]
