"""Simulation: simulators and seeds, ``simulate``, campaigns and their backends, the store, fidelity ladders.

* :mod:`~telescope.simulation.simulators` — :class:`Simulator` (a callable or a generator
  ``x = G(theta, u)`` with an explicit noise sampler), seeds per batch, parameter and level;
* :mod:`~telescope.simulation.campaign` — batches run in processes, threads or on Dask, failures recorded:
  :mod:`~telescope.simulation.batches` (one batch from its seed), :mod:`~telescope.simulation.backends`
  (serial, Dask, executors), :mod:`~telescope.simulation.workers` (local processes that survive their
  simulator), :mod:`~telescope.simulation.records` (what a store records of its campaign);
* :mod:`~telescope.simulation.store` — the crash-safe on-disk store that campaigns resume from;
* :mod:`~telescope.simulation.simulate` — :func:`simulate`, the one call users make;
* :mod:`~telescope.simulation.ladder` — seed-matched :class:`FidelityLadder` and :func:`simulate_levels`.
"""

from . import campaign, ladder, simulators, store
from .ladder import FidelityLadder, simulate_levels
from .simulate import simulate, simulate_batch
from .simulators import Simulator, as_simulator, batch_seed, level_seed, seeded, theta_seed
from .store import Store, checkpoint, export_arrays, load_simulations, store_info

__all__ = ["Simulator", "as_simulator", "batch_seed", "level_seed", "theta_seed", "seeded", "simulate",
           "simulate_batch", "FidelityLadder", "simulate_levels", "Store", "checkpoint", "export_arrays",
           "load_simulations", "store_info", "campaign", "ladder", "simulators", "store"]
