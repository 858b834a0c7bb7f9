"""Where the batches of a campaign run: in this process, in local worker processes, on Dask or on any executor.

Every backend has the same small interface: ``submit(task)``, ``next_done() -> (task, result)``, ``pending``,
``window`` (how many batches to keep submitted) and ``close(abort)``; :func:`make_backend` builds the one a
campaign asked for.  Backends only decide where batches run: a batch is a pure function of its seed, so
every backend gives the same data.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import threading
import time
from collections.abc import Sequence

from ..utils import check_count
from .batches import _err, _run_task
from .simulators import Simulator
from .workers import _Processes

__all__ = ["is_executor", "use_executor", "check_timeout", "resolve_backend", "make_backend"]


def _dumps(payload, sims: Sequence[Simulator], prior, where: str) -> bytes:
    try:
        import cloudpickle

        dumps = cloudpickle.dumps
    except ImportError:  # pragma: no cover - cloudpickle comes with dask
        dumps = pickle.dumps
    for what, obj in [*((f"simulator {s.name!r}", s) for s in sims), ("the prior", prior)]:
        try:
            dumps(obj)
        except Exception as e:  # noqa: BLE001 - any pickling failure
            raise TypeError(
                f"{what} cannot be sent to {where}: it cannot be pickled ({_err(e)}). Fix: define it as a "
                f"top-level function or class in an importable module (not a local function, lambda or closure "
                f"over unpicklable state), create open files, locks, sockets, GPU handles or pools inside the "
                f"call instead of holding them, or run it in this process with workers=1 (backend='serial')"
            ) from e
    return dumps(payload)


class _Serial:
    window = 1

    def __init__(self, payload):
        self.payload, self.queue = payload, collections.deque()

    @property
    def pending(self) -> int:
        return len(self.queue)

    def submit(self, task) -> None:
        self.queue.append(task)

    def next_done(self):
        task = self.queue.popleft()
        return task, _run_task(self.payload, task)

    def close(self, abort: bool) -> None:
        self.queue.clear()


_DASK_CACHE: dict = {}

_DASK_LOCAL = threading.local()


def _dask_task(payload: bytes, digest: str, task, timeout: float | None = None) -> dict:
    if timeout is not None:  # in a child process of the Dask worker, which can be killed at the deadline
        held = getattr(_DASK_LOCAL, "pool", None)  # one child per worker thread, kept for the next batches
        if held is None or held[0] != (digest, timeout):
            if held is not None:
                held[1].close(abort=True)
            _DASK_LOCAL.pool = held = ((digest, timeout),
                                       _Processes(payload, 1, None, timeout, _dask_payload(payload, digest)[0]))
        ex = held[1]
        try:
            ex.submit(task)
            return ex.next_done()[1]
        except BaseException:
            ex.close(abort=True)
            _DASK_LOCAL.pool = None
            raise
    return _run_task(_dask_payload(payload, digest), task)


def _dask_payload(payload: bytes, digest: str):
    obj = _DASK_CACHE.get(digest)
    if obj is None:
        obj = pickle.loads(payload)
        if len(_DASK_CACHE) >= 4:
            _DASK_CACHE.clear()
        _DASK_CACHE[digest] = obj
    return obj


class _Dask:
    def __init__(self, payload: bytes, client, scheduler: str | None, timeout: float | None = None):
        try:
            from distributed import Client, as_completed, default_client
        except ImportError:  # pragma: no cover
            raise ImportError("backend='dask' needs dask.distributed: pip install 'dask[distributed]'") from None
        self.own = False
        if client is None and scheduler is not None:
            client, self.own = Client(scheduler), True
        elif client is None:
            try:
                client = default_client()
            except ValueError:
                raise ValueError("backend='dask' needs client= (a dask.distributed.Client, e.g. on a LocalCluster) "
                                 "or scheduler='tcp://host:8786' (the address of a running scheduler)") from None
        self.client, self.timeout = client, timeout
        self.digest = hashlib.sha1(payload).hexdigest()
        self.payload = client.scatter(payload, broadcast=True)
        self.ac = as_completed()
        self.futures: dict = {}
        nthreads = sum(client.nthreads().values()) or 1
        self.window = max(4, 2 * nthreads)

    @property
    def pending(self) -> int:
        return len(self.futures)

    def submit(self, task) -> None:
        fut = self.client.submit(_dask_task, self.payload, self.digest, task, self.timeout, pure=False)
        self.futures[fut.key] = (fut, task)
        self.ac.add(fut)

    def next_done(self):
        fut = next(self.ac)
        _, task = self.futures.pop(fut.key)
        try:
            return task, fut.result()
        except Exception as e:
            if type(e).__name__ == "KilledWorker":
                raise RuntimeError(f"Dask workers died repeatedly while simulating batch {task[1]} of level "
                                   f"{task[0]}; finished batches are kept in the store") from e
            raise

    def close(self, abort: bool) -> None:
        try:
            if self.futures:
                self.client.cancel([f for f, _ in self.futures.values()])
        finally:
            if self.own:
                self.client.close()


def _executor_task(payload: bytes, digest: str, task) -> dict:
    """One batch on a worker of a user's executor: the payload is unpickled once per worker process."""
    return _run_task(_dask_payload(payload, digest), task)


def is_executor(backend) -> bool:
    """True for an executor object (anything with ``submit(fn, *args)``) rather than a backend name."""
    return not isinstance(backend, str) and backend is not None and callable(getattr(backend, "submit", None))


def use_executor(backend, executor):
    """The backend of a call given ``backend=`` and/or ``executor=`` (the issue's name for an executor backend).

    ``executor`` must be an object with ``submit(fn, *args)`` (a ``concurrent.futures.Executor``, loky,
    ``mpi4py.futures``, submitit, a Dask client's ``get_executor()``); it then is the backend.  Giving both
    is refused."""
    if executor is None:
        return backend
    if backend is not None:
        raise ValueError(f"give the executor once: executor= or backend=, not both (got backend={backend!r} and "
                         f"executor={type(executor).__name__})")
    if not is_executor(executor):
        raise TypeError(f"executor must be an object with submit(fn, *args) (a concurrent.futures.Executor, loky, "
                        f"mpi4py.futures.MPIPoolExecutor, a submitit executor, a Dask client.get_executor()), got "
                        f"{type(executor).__name__}: {executor!r}")
    return executor


class _Executor:
    """Batches on any ``concurrent.futures.Executor``-like object (``submit(fn, *args) -> future``).

    Works with loky, ``mpi4py.futures.MPIPoolExecutor``, submitit's executors (SLURM or local), a Dask
    client's ``get_executor()`` and the standard library's pools.  Futures are waited on with
    ``concurrent.futures.wait`` when they are standard futures, else polled through ``done()`` (submitit's
    jobs).  The executor is the caller's: it is not shut down here, and batches still running when the
    campaign stops are cancelled where the executor allows it.
    """

    def __init__(self, payload: bytes, executor, window: int | None = None):
        self.ex = executor
        self.payload = payload
        self.digest = hashlib.sha1(payload).hexdigest()
        self.futures: list = []
        workers = getattr(executor, "_max_workers", None) or getattr(executor, "num_workers", None) or os.cpu_count()
        self.window = window or max(4, 2 * int(workers or 1))

    @property
    def pending(self) -> int:
        return len(self.futures)

    def submit(self, task) -> None:
        self.futures.append((self.ex.submit(_executor_task, self.payload, self.digest, task), task))

    def next_done(self):
        import concurrent.futures as cf

        futs = [f for f, _ in self.futures]
        if all(isinstance(f, cf.Future) for f in futs):
            cf.wait(futs, return_when=cf.FIRST_COMPLETED)
        else:
            while not any(f.done() for f in futs):
                time.sleep(0.05)
        for i, (f, task) in enumerate(self.futures):
            if f.done():
                del self.futures[i]
                return task, f.result()
        raise AssertionError("no finished future")  # pragma: no cover

    def close(self, abort: bool) -> None:
        for f, _ in self.futures:
            cancel = getattr(f, "cancel", None)
            if callable(cancel):
                cancel()
        self.futures.clear()


def check_timeout(timeout, backend: str) -> float | None:
    """``timeout`` (seconds per simulation, > 0, or None) checked against the backend."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or timeout == float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds > 0 per simulation (or None), got {timeout!r}")
    if is_executor(backend):
        raise ValueError(f"timeout={timeout!r} is not supported with an executor (backend={type(backend).__name__}): "
                         f"use the executor's own time limit (e.g. submitit's timeout_min), backend='processes' or "
                         f"a Dask backend")
    if backend == "serial":
        raise ValueError(f"timeout={timeout!r} needs simulations in worker processes that can be stopped: pass "
                         f"workers=2 or more, backend='processes' (workers=1 is fine), or a Dask backend; "
                         f"the serial backend runs the simulator in this process, which cannot interrupt it")
    return float(timeout)


def resolve_backend(backend: str | None, workers: int, client, scheduler) -> str:
    """Check the backend arguments and return ``"serial"``, ``"processes"`` or ``"dask"`` (or the executor)."""
    workers = check_count("workers", workers)
    if is_executor(backend):
        if workers != 1 or client is not None or scheduler is not None:
            raise ValueError(f"with an executor as backend ({type(backend).__name__}) its workers run the batches: "
                             f"leave workers=1, client=None and scheduler=None")
        return backend
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be 'serial', 'processes', 'dask' or an executor with submit(fn, *args) "
                        f"(concurrent.futures, loky, mpi4py.futures, submitit, a Dask client's get_executor()), got "
                        f"{type(backend).__name__}")
    if backend is None:
        backend = "dask" if client is not None or scheduler is not None else ("processes" if workers > 1 else "serial")
    if backend not in ("serial", "processes", "dask"):
        raise ValueError(f"backend must be 'serial', 'processes' or 'dask', got {backend!r}")
    if backend == "serial" and workers > 1:
        raise ValueError(f"workers={workers} runs batches in worker processes; use backend='processes' (or leave "
                         f"backend unset), or workers=1 for backend='serial'")
    if backend != "dask" and (client is not None or scheduler is not None):
        raise ValueError(f"client= and scheduler= are for backend='dask', got backend={backend!r}")
    if backend == "dask" and workers != 1:
        raise ValueError(f"with backend='dask' the cluster's workers run the batches; got workers={workers}: "
                         f"leave workers=1 and size the Dask cluster instead")
    if backend == "dask" and client is not None and scheduler is not None:
        raise ValueError("pass either client= or scheduler= for backend='dask', not both")
    return backend


def make_backend(levels, prior, backend, *, workers: int, client, scheduler, mp_context: str | None,
                 timeout: float | None):
    """The backend object that runs the batches of ``levels`` (``backend`` as resolved by :func:`resolve_backend`).

    Every backend but the serial one receives the simulators and the prior pickled (cloudpickle where
    available), checked first so that an unpicklable simulator is named in the error.
    """
    payload = ({lv.level: tuple(lv.sims) for lv in levels}, prior)
    all_sims = [s for lv in levels for s in lv.sims]
    if is_executor(backend):
        return _Executor(_dumps(payload, all_sims, prior, f"the executor's workers ({type(backend).__name__})"),
                         backend)
    if backend == "serial":
        return _Serial(payload)
    if backend == "processes":
        return _Processes(_dumps(payload, all_sims, prior, f"worker processes (workers={workers})"), workers,
                          mp_context, timeout, payload[0])
    return _Dask(_dumps(payload, all_sims, prior, "Dask workers"), client, scheduler, timeout)
