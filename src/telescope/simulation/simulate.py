"""Run simulation campaigns: ``theta ~ prior``, ``x = simulator(theta)``.

A campaign of ``n`` simulations is cut into batches of ``batch_size``.  Batch ``b`` draws
its parameters and its noise from one seed, :func:`telescope.simulators.batch_seed`
``(seed, b)``, so results depend only on ``(seed, n, batch_size)`` — never on the order in
which batches run, the backend, or whether the campaign was interrupted and resumed.
The engine (backends, failures, the on-disk store) is :mod:`telescope.campaign`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..priors import check_prior
from ..utils import check_count, check_seed
from .campaign import failure_message, run_batch, run_campaign, use_executor
from .simulators import Simulator, as_simulator

__all__ = ["simulate", "simulate_batch"]


def simulate_batch(simulator: Simulator, prior, size: int, seed: int) -> dict:
    """Simulate one batch from its seed.  Returns ``theta``, ``x``, per-sample ``ok`` and ``error`` text.

    An exception raised by the simulator is recorded for every sample of the batch (and the batch is
    retried one sample at a time so that only the failing samples are lost).
    """
    out = run_batch((as_simulator(simulator),), prior, check_count("size", size), check_seed(seed))
    if out["x"][0] is None:
        first = next(e for e in out["error"] if e)
        raise RuntimeError(f"simulator {simulator.name!r} raised on every sample of a batch; first error: {first}")
    return {"theta": torch.from_numpy(out["theta"]), "x": torch.from_numpy(out["x"][0]),
            "ok": torch.from_numpy(out["ok"]), "error": out["error"], "noise_seed": torch.from_numpy(out["noise_seed"]),
            "seconds": sum(out["seconds"])}


def simulate(simulator, prior, n: int, seed: int = 0, batch_size: int = 1000, *, progress_bar: bool = True,
             store=None, workers: int = 1, backend: str | None = None, client=None,
             scheduler: str | None = None, timeout: float | None = None, executor=None) -> tuple[Tensor, Tensor]:
    """Draw ``n`` parameters from ``prior`` and simulate them.

    Arguments:
        simulator: a callable ``theta (n, d) -> x (n, d_x)`` or a :class:`telescope.Simulator`.
        prior: a torch Distribution with event shape ``(d,)``.
        n: number of simulations (> 0).
        seed: campaign seed, an integer in ``[-2**63, 2**64 - 1]`` (each gives its own stream; floats, strings
            and None are refused); batch ``b`` is seeded from ``(seed, b)``.
        batch_size: simulations per batch (the unit of storage and scheduling).
        progress_bar: show a progress bar (done/total, rate, ETA, failures so far).
        store: path of an on-disk store (:mod:`telescope.store`, a SQLite file): every finished batch
            is written at once, and calling again with the same arguments resumes, simulating only
            the missing batches.  Read it back with :func:`telescope.load_simulations`.
        workers: run batches in this many local worker processes (``backend="processes"``).
        backend: ``"serial"``, ``"processes"`` or ``"dask"``; inferred from ``workers``/``client``/``scheduler``
            (an executor object is accepted here too).
        executor: run the batches on any executor with ``submit(fn, *args)``: a
            ``concurrent.futures`` pool, loky, ``mpi4py.futures.MPIPoolExecutor``, submitit (SLURM; recipe in
            :mod:`telescope.simulation.campaign`) or a Dask client's ``get_executor()``; same seeding, failure
            recording and store as the built-in backends.  Same as ``backend=<executor>``; not both.
        client, scheduler: for ``backend="dask"``: a ``dask.distributed.Client``, or the address of a
            running scheduler (``"tcp://host:8786"``).
        timeout: seconds allowed per simulation (``None``: no limit).  A batch gets ``timeout`` times its
            size; past that its worker is stopped and the batch rerun one simulation at a time, each
            simulation that runs past ``timeout`` being recorded as failed ("timed out after N s").  Needs
            worker processes (``backend="processes"`` or Dask); the serial backend refuses it.

    Worker processes survive their simulator: a simulation that kills its process (a segfault in a C
    extension, ``os._exit``, an out-of-memory kill) is found by rerunning its batch one simulation at a
    time, recorded as failed with the cause ("process died: signal 11 (SIGSEGV)"), and the campaign goes
    on.  In the serial backend such a simulator kills this process: use worker processes for it.  Worker
    processes re-import the ``__main__`` script, so a script must start campaigns under
    ``if __name__ == "__main__":``.

    The result depends on ``(seed, n, batch_size)`` only: every backend, and a resumed campaign,
    give bitwise the same tensors.

    Returns:
        ``theta (n, d)`` and ``x (n, d_x)``.  Failed simulations (exceptions, NaN/inf) keep their row
        with NaN in ``x`` and are reported with a warning; estimators drop them before training
        (and :func:`telescope.load_simulations` excludes them).

    Example:
        >>> import telescope as ts
        >>> task = ts.tasks.get("gaussian_linear")
        >>> theta, x = ts.simulate(task.simulator, task.prior, 100, seed=0, progress_bar=False)
        >>> theta.shape, x.shape
        (torch.Size([100, 10]), torch.Size([100, 10]))
    """
    simulator, prior = as_simulator(simulator), check_prior(prior)
    n = check_count("n", n)
    batch_size = check_count("batch_size", batch_size)
    seed = check_seed(seed)
    backend = use_executor(backend, executor)
    data = run_campaign(simulator, prior, n, seed=seed, batch_size=batch_size, store=store, workers=workers,
                        backend=backend, client=client, scheduler=scheduler, progress_bar=progress_bar,
                        timeout=timeout)
    if data["summary"]["n_failed"]:
        warnings.warn(failure_message(data["summary"]), RuntimeWarning, stacklevel=2)
    return data["theta"], data["x"]
