"""sbibm's published observations, true parameters and reference posteriors, shipped as data files.

The SBI benchmark (Lueckmann et al., 2021, arXiv:2101.04653; the ``sbibm`` package, MIT licence)
publishes, for each task, ten observations, the parameters that generated them and 10,000 reference
posterior samples per observation.  Comparisons with the numbers of papers that use the benchmark
are like for like only on these files, so the ten tasks of the benchmark that this library has
(``two_moons``, ``gaussian_linear``, ``gaussian_linear_uniform``, ``gaussian_mixture``, ``slcp``,
``slcp_distractors``, ``lotka_volterra``, ``sir``, ``bernoulli_glm`` and ``bernoulli_glm_raw``) read them
(``observations="sbibm"``, the default) from ``telescope/tasks/data/sbibm/`` (copied unchanged from the
sbibm 1.1.0 wheel; see the README there).  ``sbibm`` itself is not needed.

:class:`SBIBMObservations` is the mixin that gives a task the choice:

* ``observations="sbibm"``: :meth:`observation` and :meth:`true_parameters` read sbibm's files;
  :meth:`reference_samples` returns sbibm's reference samples (``reference="sbibm"``, the default) or
  this library's own reference on sbibm's observation (``reference="mcmc"``: its exact-likelihood MCMC, or
  its analytic or rejection sampler where the task has one);
* ``observations="telescope"``: the library's own draws (fixed seeds) and its own MCMC references, as before.

The choice is recorded in :attr:`observation_set` / :attr:`reference_source` (and by ``telescope bench``).
"""

from __future__ import annotations

import bz2
import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["SBIBMObservations", "data_dir", "read_csv", "SBIBM_REFERENCE_N"]

SBIBM_REFERENCE_N = 10_000  # reference samples per observation in sbibm's files
OBSERVATION_SETS = ("sbibm", "telescope")


def data_dir(task: str) -> Path:
    """The folder of sbibm's files for ``task`` (sbibm's task name; ``slcp_distractors`` reads ``"slcp"``)."""
    path = Path(__file__).parent / "data" / "sbibm" / task
    if not path.is_dir():
        raise FileNotFoundError(f"sbibm data for task {task!r} not found at {path}; the package data is incomplete")
    return path


def read_csv(path: Path) -> Tensor:
    """A CSV file of sbibm (one header row; ``.csv.bz2`` decompressed) as a float32 tensor ``(rows, columns)``."""
    path = Path(path)
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    arr = np.loadtxt(io.StringIO(raw.decode()), delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return torch.from_numpy(arr).float()


class SBIBMObservations:
    """Mixin for a :class:`~telescope.tasks.base.Task` that has sbibm's files under ``data/sbibm/<sbibm_name>``.

    Subclasses set ``sbibm_name`` (the folder) and ``sbibm_observation_file`` and call
    :meth:`_init_observations` in their constructor.  The constructors take these two arguments, documented
    here once (a task's own docstring says where its meaning differs):

    Arguments:
        observations: ``"sbibm"`` (the benchmark's stored observations and true parameters; the default) or
            ``"telescope"`` (this library's own draws).
        reference: ``"sbibm"`` (the benchmark's stored reference samples; the default with its
            observations) or ``"mcmc"`` (this library's own reference; the default otherwise).
    """

    sbibm_name: str = ""
    sbibm_observation_file: str = "observation.csv"
    observation_set: str = "telescope"
    reference_source: str = "mcmc"

    def _init_observations(self, observations: str, reference: str | None) -> None:
        if observations not in OBSERVATION_SETS:
            raise ValueError(f"observations must be one of {OBSERVATION_SETS} for task {self.name!r}, "
                             f"got {observations!r}")
        if reference is None:
            reference = "sbibm" if observations == "sbibm" else "mcmc"
        if reference not in ("sbibm", "mcmc"):
            raise ValueError(f"reference must be 'sbibm' or 'mcmc' for task {self.name!r}, got {reference!r}")
        if reference == "sbibm" and observations != "sbibm":
            raise ValueError(f"reference='sbibm' needs observations='sbibm' (sbibm's references are for its own "
                             f"observations), got observations={observations!r}")
        self.observation_set = observations
        self.reference_source = reference

    def _file(self, i: int, name: str) -> Path:
        return data_dir(self.sbibm_name) / f"num_observation_{i}" / name

    def true_parameters(self, i: int = 1) -> Tensor:
        """True parameters ``(dim_theta,)`` behind observation ``i`` (sbibm's file under ``observations="sbibm"``)."""
        if self.observation_set != "sbibm":
            return super().true_parameters(i)
        i = self._check_index(i)
        return read_csv(self._file(i, "true_parameters.csv"))[0]

    def observation(self, i: int = 1) -> Tensor:
        """Observation ``i`` as ``(dim_x,)`` (sbibm's file under ``observations="sbibm"``)."""
        if self.observation_set != "sbibm":
            return super().observation(i)
        i = self._check_index(i)
        return read_csv(self._file(i, self.sbibm_observation_file))[0]

    def reference_samples(self, i: int = 1, n: int = 10_000, *, cache: bool = True) -> Tensor:
        """``n`` reference posterior samples ``(n, dim_theta)`` for observation ``i``.

        With ``reference="sbibm"``: the first ``n`` of sbibm's 10,000 stored samples (``n <= 10,000``);
        otherwise this library's own reference (MCMC against the exact likelihood, or exact where the task has
        an analytic or rejection sampler; cached on disk)."""
        if self.reference_source != "sbibm":
            return super().reference_samples(i, n, cache=cache)
        i = self._check_index(i)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= SBIBM_REFERENCE_N:
            raise ValueError(f"n must be an integer in 1..{SBIBM_REFERENCE_N} for sbibm's stored references of task "
                             f"{self.name!r}, got {n!r}; use reference='mcmc' for more samples")
        return read_csv(self._file(i, "reference_posterior_samples.csv.bz2"))[:n]

    def cache_key(self) -> str:
        return self.name if self.observation_set == "telescope" else f"{self.name}-sbibm"
