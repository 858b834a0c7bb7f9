r"""Multilevel Monte Carlo: Giles' adaptive driver, convergence and complexity tests, coupled diffusion levels.

* :mod:`~telescope.mlmc.driver` — the method and the level-sampler protocol; :func:`convergence_test`,
  :func:`complexity_test`, :func:`mlmc_test` (Giles' tests); every driver name is importable from it;
* :mod:`~telescope.mlmc.adaptive` — :func:`mlmc` (Giles' adaptive algorithm, in named steps) and :class:`MLMCResult`;
* :mod:`~telescope.mlmc.sampling` — calling a level sampler, checking what it returns, per-level sums;
* :mod:`~telescope.mlmc.rates` — fitted rates, sample allocation, bias estimate, starting level
  (:func:`select_start_level`, :func:`start_level_from`);
* :mod:`~telescope.mlmc.common` — argument checks, JSON output and :class:`MLMCWarning`;
* :mod:`~telescope.mlmc.coupled` — :class:`CoupledDiffusion`, coarse and fine diffusion sampler paths
  driven by the same Gaussian increments (Haji-Ali et al. 2025, Algorithm 2);
* :mod:`~telescope.mlmc.npse` — :func:`npse_problem`, the level sampler for posterior moments under a trained NPSE;
* :mod:`~telescope.mlmc.gaussian` — :class:`GaussianData`, an exact test problem (exact rates per level)
  and :func:`~telescope.mlmc.gaussian.run_gaussian`, the check ``telescope mlmc-test`` runs;
* :mod:`~telescope.mlmc.report` — a test result's headline numbers and its JSON and figure files.

``telescope.mlmc.mlmc`` is the driver function, as before this package existed.
"""

from . import adaptive, common, coupled, driver, gaussian, npse, rates, report, sampling
from .coupled import CoupledDiffusion, square
from .driver import (
    LevelSampler,
    MLMCResult,
    MLMCWarning,
    complexity_test,
    convergence_test,
    fit_rate,
    mlmc,
    mlmc_test,
    select_start_level,
    start_level_from,
)
from .gaussian import GaussianData, gaussian_problem
from .npse import gaussian_linear_moments, npse_problem

__all__ = ['LevelSampler', 'MLMCResult', 'mlmc', 'convergence_test', 'complexity_test', 'mlmc_test', 'select_start_level', 'start_level_from', 'fit_rate', 'MLMCWarning', 'CoupledDiffusion', 'square', 'coupled', 'driver',
           'GaussianData', 'gaussian_problem', 'npse_problem', 'gaussian_linear_moments', 'gaussian', 'npse', 'report',
           'adaptive', 'common', 'rates', 'sampling']
