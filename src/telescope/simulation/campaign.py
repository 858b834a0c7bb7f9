"""Simulation campaigns: batches, backends (serial, processes, Dask), failures and the store.

A campaign has one or more *levels*.  Level ``l`` is ``n_l`` simulations in batches of
``batch_size_l``, and batch ``b`` is a pure function of its seed ``s = batch_seed(seed_l, b)``::

    theta = prior.sample((size,))      # under seeded(theta_seed(s)): a stream apart from the noise
    x_k   = G_k(theta, seed=s)          # every simulator of the level: same theta, same noise

(:func:`telescope.simulate` has one level with one simulator; level ``l >= 1`` of
:func:`telescope.simulate_levels` evaluates ``G_l`` and ``G_{l-1}``.)  Results therefore depend
on ``(seed, n, batch_size)`` only — not on the backend, on the order in which batches finish,
or on interruptions.  Backends only decide *where* batches run:

* ``serial`` — in this process, in index order;
* ``processes`` — ``workers`` local processes (``concurrent.futures``; forkserver start);
* ``dask`` — a ``dask.distributed`` cluster (``client=`` or ``scheduler="tcp://..."``);
* an executor object — anything with ``submit(fn, *args)`` returning a future: loky's
  ``get_reusable_executor()``, ``mpi4py.futures.MPIPoolExecutor()``, submitit's ``AutoExecutor`` (SLURM)
  or ``LocalExecutor``, a Dask client's ``get_executor()``, ``concurrent.futures`` pools.  Each batch is
  one call ``_executor_task(payload, digest, task)``; the simulator and prior travel pickled (cloudpickle)
  in the payload.  SLURM with submitit::

      import submitit
      ex = submitit.AutoExecutor(folder="slurm_logs")
      ex.update_parameters(timeout_min=60, slurm_partition="cpu", cpus_per_task=1)
      theta, x = ts.simulate(simulator, prior, 100_000, batch_size=1000, store="sims.db", backend=ex)

  (one SLURM job per batch; ``ex.batch()`` is not needed).  The parent process keeps writing finished
  batches to the store, so an interrupted campaign resumes with the same call.

The parent process collects batches as they complete and writes each one to the store in one
transaction (:mod:`telescope.store`), so a crash loses only the batches in flight.

Failures: an exception of the simulator on a batch is retried one simulation at a time (each
from its own seed ``batch_seed(s, i)``, all simulators of the level together, so pairs stay
seed-matched); simulations that raise or return NaN/inf are recorded with their error text and
marked not ``ok``.  While nothing has succeeded yet, a campaign whose first ``fail_fast``
simulations all fail stops early and shows the first error.

Faults that take the process with them: in the ``processes`` backend (and with ``timeout=`` on Dask)
each worker is a process the parent watches.  When one dies (segfault, ``os._exit``, out-of-memory
kill) or runs past its deadline (``timeout`` seconds per simulation, times the batch size for a
batch), it is replaced and its batch is rerun one simulation at a time, streaming each result back,
so the simulation that was running when a process died is known exactly: it is recorded as failed
("process died: signal 11 (SIGSEGV)", "timed out after 5 s") and the campaign completes.  The rows
of such a batch are the rows the exception path gives (each from ``batch_seed(s, i)``).
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import multiprocessing
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..utils import check_count, check_seed, progress
from .simulators import Simulator, batch_seed, seeded, theta_seed

__all__ = ["Level", "SimulatorFailing", "run_batch", "run_campaign", "run_levels", "batch_sizes"]

#: Single calls tried after a failing batch call before concluding (while nothing succeeded yet) that
#: the simulator is broken.
GIVE_UP = 5
#: Failed simulations, with no success yet, that stop a campaign early.
FAIL_FAST = 5

# Batches seed torch's, numpy's and Python's *global* generators: two batches must never run at the same
# time in one process (Dask's threaded workers, user threads).  Re-entrant for simulators that simulate.
_RNG_LOCK = threading.RLock()


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the batches of a campaign of ``n`` simulations (the last one may be smaller)."""
    return [min(batch_size, n - b * batch_size) for b in range(-(-n // batch_size))]


@dataclass(frozen=True)
class Level:
    """One level of a campaign: ``n`` simulations of ``sims`` in batches of ``batch_size`` from ``seed``.

    ``sims`` are evaluated on the same theta and noise: ``(G,)``, or ``(G_l, G_{l-1})`` for a ladder.
    """

    level: int
    sims: tuple
    n: int
    batch_size: int
    seed: int

    @property
    def sizes(self) -> list[int]:
        return batch_sizes(self.n, self.batch_size)


# --------------------------------------------------------------------------------------------------
# one batch
# --------------------------------------------------------------------------------------------------
def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def draw_theta(prior, size: int, seed: int) -> torch.Tensor:
    """The parameters of a batch with seed ``seed``: ``prior.sample((size,))`` under ``seeded(theta_seed(seed))``."""
    # theta gets its own stream: drawing it from `seed` itself would make it equal (up to scale) to the
    # simulator's noise, which is also seeded from `seed` — a Gaussian prior and Gaussian noise would coincide
    with seeded(theta_seed(seed)):
        return prior.sample((size,)).float()


def _tagger(sims):
    return (lambda k: f"[{sims[k].name}] ") if len(sims) > 1 else (lambda k: "")


def run_batch(sims: Sequence[Simulator], prior, size: int, seed: int, give_up: int | None = None) -> dict:
    """Simulate one batch from its seed with every simulator of ``sims`` on the same theta and noise.

    Returns a dict of numpy arrays: ``theta (size, d)``, ``x`` (a list, one ``(size, *event)`` array per
    simulator, ``None`` where every call raised), ``ok (size,)``, ``error`` (text per sample, ``""`` if
    ok), ``noise_seed (size,)`` and ``seconds`` (wall time per simulator).  With ``give_up``, a batch whose
    batch call and first ``give_up`` single calls all raise returns ``{"gave_up": True, "error": ...}``.

    Every simulator gets its own copy of ``theta``: a simulator that changes its argument in place cannot
    change the parameters that are stored.
    """
    sims = tuple(sims)
    theta = draw_theta(prior, size, seed)
    tag = _tagger(sims)
    errors = [""] * size
    noise_seed = np.full(size, seed, dtype=np.int64)
    xs: list = []
    secs: list[float] = []
    try:
        for sim in sims:
            t0 = time.perf_counter()
            xs.append(_real(sim(theta.clone(), seed=seed), sim))
            secs.append(time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - isolate failures one simulation at a time
        batch_error = tag(len(xs)) + _err(exc)
        done = _one_by_one(sims, theta, seed, errors, tag, give_up)
        if done is None:
            return {"gave_up": True, "error": batch_error, "tried": give_up}
        xs, secs = done
        noise_seed = np.array([batch_seed(seed, i) for i in range(size)], dtype=np.int64)
    return _finish(sims, theta, xs, secs, errors, noise_seed)


def _finish(sims, theta, xs, secs, errors, noise_seed) -> dict:
    size = theta.shape[0]
    tag = _tagger(sims)
    shapes = {k: tuple(x.shape[1:]) for k, x in enumerate(xs) if x is not None}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{sims[k].name!r} -> {s}" for k, s in shapes.items())
        raise ValueError(f"the simulators of one ladder level disagree on the output shape per simulation "
                         f"({desc}); every level of a FidelityLadder must return x of the same shape")
    for k, x in enumerate(xs):
        if x is None:
            continue
        finite = torch.isfinite(x.reshape(size, -1)).all(-1)
        for i in torch.nonzero(~finite).flatten().tolist():
            errors[i] = errors[i] or f"{tag(k)}non-finite output (NaN or inf)"
    ok = np.array([not e for e in errors], dtype=bool)
    return {"theta": theta.numpy(), "x": [None if x is None else x.detach().cpu().numpy() for x in xs], "ok": ok,
            "error": errors, "noise_seed": noise_seed, "seconds": secs}


def _real(x, sim) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_complex():
        raise TypeError(f"simulator {sim.name!r} returned complex x ({x.dtype}); simulations must be real (the "
                        f"imaginary part would be lost): return e.g. torch.cat([x.real, x.imag], -1) or x.abs()")
    return x.float()


def _one_row(sims, theta, seed, i, tag) -> tuple[list, str, list[float]]:
    """Row ``i`` of a batch simulated alone from ``batch_seed(seed, i)`` by every simulator (stops at an error)."""
    s = batch_seed(seed, i)
    row: list = [None] * len(sims)
    secs = [0.0] * len(sims)
    error = ""
    for k, sim in enumerate(sims):
        t0 = time.perf_counter()
        try:
            row[k] = _real(sim(theta[i : i + 1].clone(), seed=s)[0], sim)
        except Exception as e:  # noqa: BLE001 - recorded per sample
            error = tag(k) + _err(e)
        secs[k] += time.perf_counter() - t0
        if error:
            break  # the row is lost; skip the other levels of the pair
    return row, error, secs


def _stack(rows_by_sim) -> list:
    xs = []
    for rows in rows_by_sim:
        shape = next((r.shape for r in rows if r is not None), None)
        xs.append(None if shape is None else
                  torch.stack([r if r is not None else torch.full(shape, float("nan")) for r in rows]))
    return xs


def _one_by_one(sims, theta, seed, errors, tag, give_up):
    size = theta.shape[0]
    rows = [[None] * size for _ in sims]
    secs = [0.0] * len(sims)
    n_ok = 0
    for i in range(size):
        row, errors[i], sec = _one_row(sims, theta, seed, i, tag)
        for k in range(len(sims)):
            rows[k][i] = row[k]
            secs[k] += sec[k]
        n_ok += not errors[i]
        if give_up is not None and n_ok == 0 and i + 1 >= give_up and i + 1 < size:
            return None
    return _stack(rows), secs


def _run_task(payload, task) -> dict:
    sims_by_level, prior = payload
    level, idx, size, seed, give_up = task
    with _RNG_LOCK:
        return run_batch(sims_by_level[level], prior, size, seed, give_up)


# --------------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------------
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


_WORKER: dict = {}


def _watch_parent(pid: int) -> None:
    while True:  # a worker orphaned by a kill -9 of the campaign exits instead of idling forever
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # pragma: no cover - pid reused by another user's process
            os._exit(1)


def _init_worker(payload: bytes, parent_pid: int) -> None:
    torch.set_num_threads(1)  # one process per core; no oversubscription
    try:
        _WORKER["payload"] = pickle.loads(payload)
    except BaseException as e:  # noqa: BLE001 - reported by the first task
        _WORKER["error"] = _err(e)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _pool_task(task) -> dict:
    if "error" in _WORKER:
        raise RuntimeError(f"the simulator could not be loaded in a worker process ({_WORKER['error']}); define it "
                           f"in a module the workers can import, or use workers=1")
    return _run_task(_WORKER["payload"], task)


def _sendable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - an exception that cannot travel: send its text
        return RuntimeError(_err(e))


def _worker_main(conn, payload: bytes, parent_pid: int) -> None:
    """A worker process: run the tasks it receives on ``conn`` until it receives ``None``.

    ``("batch", task)`` answers ``("done", result)``; ``("rows", task, start)`` simulates rows ``start, ...``
    one at a time and answers ``("theta", theta)``, then ``("row", i, xs, error, seconds)`` per row, then
    ``("rows_done",)``, so that the parent knows which simulation was running if the process dies.
    """
    _init_worker(payload, parent_pid)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone (killed, or its Dask worker was closed)
            return
        if msg is None:
            return
        try:
            if msg[0] == "batch":
                conn.send(("done", _pool_task(msg[1])))
                continue
            _, task, start = msg
            if "error" in _WORKER:
                _pool_task(task)  # raises the loading error
            level, idx, size, seed = task[:4]
            sims_by_level, prior = _WORKER["payload"]
            sims = tuple(sims_by_level[level])
            with _RNG_LOCK:
                theta = draw_theta(prior, size, seed)
                conn.send(("theta", theta.numpy()))
                tag = _tagger(sims)
                for i in range(start, size):
                    row, error, secs = _one_row(sims, theta, seed, i, tag)
                    conn.send(("row", i, [None if r is None else r.numpy() for r in row], error, secs))
            conn.send(("rows_done",))
        except BaseException as e:  # noqa: BLE001 - reported by the parent
            conn.send(("error", _sendable(e)))


def _subprocess_entry() -> None:  # pragma: no cover - runs in a child started by subprocess
    import sys
    from multiprocessing.connection import Connection

    conn = Connection(int(sys.argv[1]))
    payload = conn.recv_bytes()
    _worker_main(conn, payload, int(sys.argv[2]))


def _start_method(mp_context: str | None) -> str:
    if mp_context is not None:
        return mp_context
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _death(code: int | None) -> str:
    if code is None:
        return "process died"
    if code < 0:
        import signal

        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"process died: signal {-code}{name}"
    return f"process died: exit code {code}"


class _Proc:
    """One worker process and the pipe to it (a multiprocessing Process, or a subprocess in daemonic hosts)."""

    def __init__(self, payload: bytes, ctx):
        self.ready, self.job, self.deadline = False, None, None
        if ctx is not None:
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_worker_main, args=(child, payload, os.getpid()), daemon=False)
            self.proc.start()
            child.close()
            self.sentinel = self.proc.sentinel
            self.popen = None
        else:  # in a daemonic process (a Dask worker) multiprocessing may not start children
            import socket
            import subprocess
            import sys
            from multiprocessing.connection import Connection

            a, b = socket.socketpair()
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
            self.popen = subprocess.Popen(
                [sys.executable, "-c", "from telescope.campaign import _subprocess_entry; _subprocess_entry()",
                 str(b.fileno()), str(os.getpid())], pass_fds=(b.fileno(),), env=env)
            b.close()
            self.conn = Connection(a.detach())
            self.conn.send_bytes(payload)
            self.proc, self.sentinel = None, None

    def exitcode(self) -> int | None:
        if self.proc is not None:
            self.proc.join(timeout=10)
            return self.proc.exitcode
        try:
            return self.popen.wait(timeout=10)
        except Exception:  # noqa: BLE001
            return None

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=10)
        elif self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.conn.close()


def _startup_error(cause: str) -> RuntimeError:
    return RuntimeError(
        f"a worker process died while starting ({cause}), before it could run a simulation. If telescope runs "
        f"from a script, put the campaign under `if __name__ == \"__main__\":` — worker processes re-import the "
        f"script, and without that guard they run the campaign again (and find its store locked by this "
        f"process). Otherwise check that the simulator's module imports cleanly")


class _Job:
    def __init__(self, task):
        self.task, self.mode = task, "batch"
        self.theta = None
        self.next = 0
        self.rows = self.errors = self.secs = None

    def to_rows(self, sims) -> None:
        size = self.task[2]
        self.mode = "rows"
        self.rows = [[None] * size for _ in sims]
        self.errors = [""] * size
        self.secs = [0.0] * len(sims)

    def record(self, i, xs, error, secs) -> None:
        for k, x in enumerate(xs):
            self.rows[k][i] = None if x is None else torch.from_numpy(x)
        self.errors[i] = error
        for k, sec in enumerate(secs):
            self.secs[k] += sec
        self.next = i + 1

    def gave_up(self) -> dict | None:
        give_up, size = self.task[4], self.task[2]
        n_ok = sum(not e for e in self.errors[: self.next])
        if give_up is not None and n_ok == 0 and give_up <= self.next < size:
            return {"gave_up": True, "error": next(e for e in self.errors if e), "tried": self.next}
        return None


class _Processes:
    """Local worker processes that survive their simulator: a process that dies (segfault, ``os._exit``, an
    out-of-memory kill) or runs past its deadline is replaced, and its batch is rerun one simulation at a time
    so that exactly the culprits are recorded as failed ("process died: signal 11", "timed out after 5 s")."""

    def __init__(self, payload: bytes, workers: int, mp_context: str | None, timeout: float | None = None,
                 sims_by_level: dict | None = None):
        if multiprocessing.current_process().daemon and mp_context is None:
            self.ctx = None
        else:
            self.ctx = multiprocessing.get_context(_start_method(mp_context))
            if self.ctx.get_start_method() == "forkserver":  # fork workers with torch and telescope imported
                self.ctx.set_forkserver_preload(["__main__", "telescope.campaign"])
        self.payload, self.n, self.timeout = payload, workers, timeout
        self.sims_by_level = sims_by_level or {}
        self.procs: list[_Proc] = []
        self.queue: collections.deque = collections.deque()
        self.window = 2 * workers
        self.started = 0

    @property
    def pending(self) -> int:
        return len(self.queue) + sum(isinstance(p.job, _Job) for p in self.procs)

    def submit(self, task) -> None:
        self.queue.append(_Job(task))

    def _budget(self, job) -> float | None:
        if self.timeout is None:
            return None
        return self.timeout * (job.task[2] if job.mode == "batch" else 1)

    def _send(self, p: _Proc, job: _Job) -> None:
        p.job = job
        p.conn.send(("batch", job.task) if job.mode == "batch" else ("rows", job.task, job.next))
        budget = self._budget(job)
        p.deadline = None if budget is None or not p.ready else time.monotonic() + budget

    def _dispatch(self) -> None:
        while self.queue:
            idle = next((p for p in self.procs if p.job is None), None)
            if idle is None and len(self.procs) < self.n:
                idle = _Proc(self.payload, self.ctx)
                self.procs.append(idle)
                self.started += 1
            if idle is None:
                return
            job = self.queue.popleft()
            try:
                self._send(idle, job)
            except OSError:  # the idle process had died (killed from outside): replace it, the job is not to blame
                self.queue.appendleft(job)
                self.procs.remove(idle)
                code = idle.exitcode()
                idle.kill()
                if not idle.ready:
                    raise _startup_error(_death(code)) from None

    def _lost(self, p: _Proc, cause: str):
        """``p`` died or was killed while running ``p.job``: requeue or finish the job; returns a result or None."""
        job = p.job
        self.procs.remove(p)
        if not p.ready:
            raise _startup_error(cause)
        if job.mode == "batch":  # which simulation killed it? rerun the batch one simulation at a time
            job.to_rows(self.sims_by_level.get(job.task[0], (None,)))
            self.queue.appendleft(job)
            return None
        job.record(job.next, [None] * len(job.rows), cause, [0.0] * len(job.rows))
        return self._progress(job, requeue=True)

    def _progress(self, job: _Job, requeue: bool):
        """After a row: the job's result when it is finished (or gave up), else None (requeued if asked)."""
        size = job.task[2]
        gave = job.gave_up()
        if gave is not None:
            return job.task, gave
        if job.next >= size:
            return job.task, self._assemble(job)
        if requeue:
            self.queue.appendleft(job)
        return None

    def _assemble(self, job: _Job) -> dict:
        level, _, size, seed = job.task[:4]
        sims = tuple(self.sims_by_level[level])
        noise_seed = np.array([batch_seed(seed, i) for i in range(size)], dtype=np.int64)
        return _finish(sims, torch.from_numpy(job.theta), _stack(job.rows), job.secs, list(job.errors), noise_seed)

    def next_done(self):
        from multiprocessing.connection import wait as mp_wait

        while True:
            self._dispatch()
            busy = [p for p in self.procs if p.job is not None]
            if not self.queue and not any(isinstance(p.job, _Job) for p in busy):  # pragma: no cover
                raise RuntimeError("no batch is running")  # internal consistency
            deadlines = [p.deadline for p in busy if p.deadline is not None]
            wait_s = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            handles = [p.conn for p in busy] + [p.sentinel for p in busy if p.sentinel is not None]
            mp_wait(handles, timeout=wait_s)
            for p in busy:
                out = self._poll(p)
                if out is not None:
                    return out

    def _poll(self, p: _Proc):
        job = p.job
        while True:
            try:
                if not p.conn.poll():
                    break
                msg = p.conn.recv()
            except (EOFError, OSError):
                code = p.exitcode()
                p.kill()
                return self._lost(p, _death(code)) if isinstance(p.job, _Job) else self._drop(p)
            kind = msg[0]
            if kind == "ready":
                p.ready = True
                budget = self._budget(job)
                p.deadline = None if budget is None else time.monotonic() + budget
            elif kind == "done":
                p.job = p.deadline = None
                return job.task, msg[1]
            elif kind == "error":
                p.job = p.deadline = None
                raise msg[1]
            elif kind == "theta":
                job.theta = msg[1]
            elif kind == "row":
                job.record(*msg[1:])
                p.deadline = None if self.timeout is None else time.monotonic() + self.timeout
                out = self._progress(job, requeue=False)
                if out is not None:
                    if job.next < job.task[2]:  # gave up before the end: stop the process running the rest
                        self.procs.remove(p)
                        p.kill()
                    else:
                        p.job, p.deadline = "finishing", None  # busy until it reports rows_done
                    return out
            elif kind == "rows_done":
                p.job = p.deadline = None
        if p.sentinel is not None and p.proc is not None and not p.proc.is_alive() and not p.conn.poll():
            code = p.exitcode()
            p.kill()
            return self._lost(p, _death(code)) if isinstance(p.job, _Job) else self._drop(p)
        if p.deadline is not None and time.monotonic() >= p.deadline and isinstance(p.job, _Job):
            p.kill()
            return self._lost(p, f"timed out after {self.timeout:g} s")
        return None

    def _drop(self, p: _Proc) -> None:
        self.procs.remove(p)
        return None

    def close(self, abort: bool) -> None:
        for p in self.procs:
            if not abort and p.job is None:
                try:
                    p.conn.send(None)
                except OSError:
                    pass
        for p in self.procs:
            if abort or p.job is not None:
                p.kill()
            else:
                if p.proc is not None:
                    p.proc.join(timeout=30)
                else:
                    try:
                        p.popen.wait(timeout=30)
                    except Exception:  # noqa: BLE001
                        pass
                p.kill()
        self.procs.clear()


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


# --------------------------------------------------------------------------------------------------
# the store's metadata
# --------------------------------------------------------------------------------------------------
def prior_info(prior) -> dict:
    """Type, repr, event shape and fingerprints of a prior.

    ``fingerprint`` hashes 64 seeded draws (what every store compares); ``state_fingerprint`` also hashes
    the prior's parameters and its log density at those draws (compared when the store has it), so two
    priors that sample alike but differ in their density or support are not mixed either.
    """
    from .simulators import _canon

    with _RNG_LOCK, seeded(0x7E1E5C0):
        draws = prior.sample((64,)).float()
    h = hashlib.sha256(type(prior).__qualname__.encode() + np.ascontiguousarray(draws.numpy(), "<f4").tobytes())
    h2 = hashlib.sha256(h.digest())
    _canon(prior, h2, {}, 0)
    try:
        lp = prior.log_prob(draws).detach().double().cpu().numpy()
        h2.update(np.ascontiguousarray(np.round(lp, 5)).tobytes())
    except Exception as e:  # noqa: BLE001 - a prior without log_prob: its draws and parameters only
        h2.update(type(e).__name__.encode())
    return {"type": type(prior).__qualname__, "repr": repr(prior)[:400], "event_shape": list(prior.event_shape),
            "fingerprint": h.hexdigest()[:16], "state_fingerprint": h2.hexdigest()[:16]}


def simulator_info(sim: Simulator) -> dict:
    """Name, fingerprints and configuration of a simulator, as the store records them.

    ``fingerprint`` hashes the code *and* the values it captures (:meth:`Simulator.fingerprint`);
    ``code_fingerprint`` the name, configuration and source only (what stores of earlier versions compared).
    """
    return {"name": sim.name, "fingerprint": sim.fingerprint(), "code_fingerprint": sim.code_fingerprint(),
            "config": _jsonable(sim.config), "generator": sim.is_generator}


def _same_simulator(stored: dict, now: dict) -> bool:
    if (stored.get("name"), stored.get("config")) != (now["name"], now["config"]):
        return False
    if "code_fingerprint" in stored:
        return stored.get("fingerprint") == now["fingerprint"]
    # a store of an earlier version: only its code fingerprint can be compared
    return stored.get("fingerprint") in (now["code_fingerprint"], now["fingerprint"])


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj, default=repr))


def _open_store(path, kind: str, seed: int, levels: list[Level], prior, sims_info: list[dict]):
    from .store import SCHEMA_VERSION, Store, _version, damaged

    p_info = prior_info(prior)
    plan = [{"level": lv.level, "n": lv.n, "batch_size": lv.batch_size, "seed": lv.seed} for lv in levels]
    store = Store(path, write=True)
    try:
        meta = store.meta
        if not meta:
            store.set_meta(format="telescope-simulations", schema=SCHEMA_VERSION, kind=kind, seed=int(seed),
                           prior=p_info, simulators=sims_info, levels=plan, x_event_shape=None,
                           telescope_version=_version(), created=datetime.datetime.now().isoformat(timespec="seconds"),
                           seed_scheme=2)
            return store
        diffs: list[str] = []
        pin: list[str] = []
        if meta.get("kind") != kind:
            diffs.append(f"kind: the store holds a {meta.get('kind')}() campaign, this call is {kind}()")
        if meta.get("seed") != int(seed):
            diffs.append(f"seed: the store has seed={meta.get('seed')}, this call has seed={seed}")
        elif "seed_scheme" not in meta and not 0 <= int(seed) < 2**32:
            diffs.append(f"seed: the store was written by an earlier telescope, which used seed={seed} modulo 2**32; "
                         f"its stored batches and the ones simulated now would come from different streams")
        old_prior = meta.get("prior", {})
        if old_prior.get("fingerprint") != p_info["fingerprint"] or (
                "state_fingerprint" in old_prior and old_prior["state_fingerprint"] != p_info["state_fingerprint"]):
            old_p = meta.get("prior", {})
            diffs.append(f"prior: the store has {old_p.get('repr')} (fingerprint {old_p.get('fingerprint')}, state "
                         f"{old_p.get('state_fingerprint')}), this call has {p_info['repr']} (fingerprint "
                         f"{p_info['fingerprint']}, state {p_info['state_fingerprint']}); the fingerprints hash the "
                         f"prior's draws, parameters and log density")
        old_sims = meta.get("simulators", [])
        if len(old_sims) != len(sims_info):
            diffs.append(f"simulators: the store has {len(old_sims)} level(s), this call has {len(sims_info)}")
        else:
            for lv, (a, b) in enumerate(zip(old_sims, sims_info)):
                if not _same_simulator(a, b):
                    where = f"simulator of level {lv}" if kind == "levels" else "simulator"
                    diffs.append(f"{where}: the store has {a['name']!r} (fingerprint {a['fingerprint']}, config "
                                 f"{a.get('config')}), this call has {b['name']!r} (fingerprint {b['fingerprint']}, "
                                 f"config {b['config']}); the fingerprint hashes the name, config, source code and "
                                 f"the values the simulator captures (closure variables, default arguments, "
                                 f"module-level values it uses, attributes of a callable object)")
                    pin.append(a["fingerprint"])
        old_plan = {p["level"]: p for p in meta.get("levels", [])}
        for p in plan:
            old = old_plan.get(p["level"])
            if old is not None and old["batch_size"] != p["batch_size"]:
                diffs.append(f"batch_size{' of level %d' % p['level'] if kind == 'levels' else ''}: the store has "
                             f"{old['batch_size']}, this call has {p['batch_size']} (batches are seeded by index)")
        if diffs:
            raise ValueError(f"store {str(path)!r} holds simulations of a different campaign and cannot be mixed with "
                             f"this one:\n  - " + "\n  - ".join(diffs) +
                             "\nStart a new store path (another store=), or repeat the store's settings to resume it."
                             + (f" If the simulator changed in a way that does not change its simulations (a "
                                f"refactor, a renamed variable) and you mean to append to this store anyway, pin its "
                                f"fingerprint: Simulator(fn, name=..., config=..., fingerprint={pin[0]!r})"
                                if pin else ""))
        for lv in levels:
            stored = store.stored(lv.level)
            for b, size in enumerate(lv.sizes):
                if b in stored and stored[b] != size:
                    raise ValueError(
                        f"store {str(path)!r} holds batch {b}{' of level %d' % lv.level if kind == 'levels' else ''} "
                        f"with {stored[b]} simulations, but n={lv.n} with batch_size={lv.batch_size} puts {size} in "
                        f"it; batches are seeded by index and size, so it cannot be reused. Choose n so that every "
                        f"stored batch keeps its size (for example n={sum(stored.values())} or a multiple of "
                        f"batch_size), or use a new store")
        new_plan = [dict(p, n=max(p["n"], old_plan.get(p["level"], p)["n"])) for p in plan]
        if new_plan != meta.get("levels"):
            store.set_meta(levels=new_plan)
        return store
    except sqlite3.DatabaseError as e:
        store.close()
        raise damaged(store.file, e) from None
    except BaseException:
        store.close()
        raise


# --------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------
class SimulatorFailing(RuntimeError):
    """Raised when every simulation of a campaign failed before any succeeded (see ``fail_fast``)."""


def run_levels(levels: list[Level], prior, *, kind: str = "simulate", seed: int = 0,
               sims_info: list[dict] | None = None, store=None, backend: str | None = None, workers: int = 1,
               client=None, scheduler: str | None = None, progress_bar: bool = True, mp_context: str | None = None,
               fail_fast: int | None = FAIL_FAST, desc: str = "simulate",
               timeout: float | None = None) -> tuple[list[dict], dict]:
    """Run a campaign of one or more levels; return per-level data (tensors, all rows) and a summary.

    Each level's data is a dict with ``theta``, ``x``, ``x_low`` (``None`` for one-simulator levels),
    ``ok`` and ``noise_seed``, ordered by batch index then row, including failed rows (NaN in ``x``).
    """
    backend = resolve_backend(backend, workers, client, scheduler)
    timeout = check_timeout(timeout, backend)
    t_start = time.perf_counter()
    store_seconds = 0.0
    st = None
    if store is not None:
        t0 = time.perf_counter()
        st = _open_store(store, kind, seed, levels, prior, sims_info or [simulator_info(lv.sims[0]) for lv in levels])
        store_seconds += time.perf_counter() - t0
    try:
        by_level = {lv.level: lv for lv in levels}
        tasks = []
        n_resumed = batches_resumed = 0
        for lv in sorted(levels, key=lambda lv: -lv.level):  # expensive levels first
            stored = st.stored(lv.level) if st is not None else {}
            for b, size in enumerate(lv.sizes):
                if b in stored:
                    n_resumed += size
                    batches_resumed += 1
                else:
                    tasks.append((lv.level, b, size, batch_seed(lv.seed, b)))
        mem: dict = {}
        stats = {"n_failed": 0, "first_errors": [], "seconds": {lv.level: [0.0] * len(lv.sims) for lv in levels}}
        if tasks:
            store_seconds += _drive(tasks, levels, by_level, prior, st, mem, stats, backend=backend, workers=workers,
                                    client=client, scheduler=scheduler, progress_bar=progress_bar,
                                    mp_context=mp_context, fail_fast=fail_fast, n_resumed=n_resumed, desc=desc,
                                    timeout=timeout)
        t0 = time.perf_counter()
        data = []
        for lv in levels:
            if st is not None:
                d = st.read(lv.level, include_failed=True, max_batches=len(lv.sizes))
            else:
                d = {k: None if v is None else torch.from_numpy(v) for k, v in mem.pop(lv.level).items()}
            if d["theta"].shape[0] != lv.n:  # pragma: no cover - internal consistency
                raise RuntimeError(f"level {lv.level}: expected {lv.n} simulations, assembled {d['theta'].shape[0]}")
            d["n_failed"] = int((~d["ok"]).sum())
            data.append(d)
        level_seconds = {}
        if st is not None:
            ls = st.level_stats()
            for lv in levels:
                s = ls.get(lv.level, {})
                secs = [s.get("seconds") or 0.0, s.get("seconds_low") or 0.0]
                level_seconds[lv.level] = {"n": s.get("n") or 0, "seconds": secs[: len(lv.sims)]}
            first_errors = [e for *_, e in st.failures(limit=3)]
        else:
            for lv in levels:
                level_seconds[lv.level] = {"n": lv.n, "seconds": stats["seconds"][lv.level]}
            first_errors = stats["first_errors"]
        store_seconds += (time.perf_counter() - t0) if st is not None else 0.0
    finally:
        if st is not None:
            st.close()
    n_total = sum(lv.n for lv in levels)
    summary = {
        "n": n_total, "n_simulated": n_total - n_resumed, "n_resumed": n_resumed,
        "batches_run": len(tasks), "batches_resumed": batches_resumed,
        "n_failed": sum(d["n_failed"] for d in data), "first_errors": first_errors,
        "seconds": time.perf_counter() - t_start, "store_seconds": store_seconds,
        "backend": f"executor:{type(backend).__name__}" if is_executor(backend) else backend,
        "levels": level_seconds,
    }
    return data, summary


def _into(mem: dict, lv: Level, idx: int, out: dict) -> None:
    """Copy batch ``idx`` of level ``lv`` into the level's arrays (allocated once, at the first batch)."""
    part = {"theta": out["theta"], "x": out["x"][0], "x_low": out["x"][1] if len(lv.sims) > 1 else None,
            "ok": out["ok"], "noise_seed": out["noise_seed"]}
    slot = mem.get(lv.level)
    if slot is None:
        slot = mem[lv.level] = {k: None if v is None else np.empty((lv.n, *v.shape[1:]), v.dtype)
                                for k, v in part.items()}
    start = idx * lv.batch_size
    for k, v in part.items():
        if v is not None:
            slot[k][start : start + v.shape[0]] = v


def _drive(tasks, levels, by_level, prior, st, mem, stats, *, backend, workers, client, scheduler, progress_bar,
           mp_context, fail_fast, n_resumed, desc, timeout=None) -> float:
    """Run ``tasks`` on the backend, writing each finished batch; returns the seconds spent in the store."""
    payload = ({lv.level: tuple(lv.sims) for lv in levels}, prior)
    all_sims = [s for lv in levels for s in lv.sims]
    if is_executor(backend):
        ex = _Executor(_dumps(payload, all_sims, prior, f"the executor's workers ({type(backend).__name__})"), backend)
    elif backend == "serial":
        ex = _Serial(payload)
    elif backend == "processes":
        ex = _Processes(_dumps(payload, all_sims, prior, f"worker processes (workers={workers})"), workers, mp_context,
                        timeout, payload[0])
    else:
        ex = _Dask(_dumps(payload, all_sims, prior, "Dask workers"), client, scheduler, timeout)
    store_seconds = 0.0
    success = st.has_success() if st is not None else False
    event_shape = None
    if st is not None and st.meta.get("x_event_shape") is not None:
        event_shape = tuple(st.meta["x_event_shape"])
    held: list = []
    early = {"n": 0, "error": None}
    queue = collections.deque(tasks)
    n_todo = sum(t[2] for t in tasks)
    names = ", ".join(dict.fromkeys(repr(s.name) for s in all_sims))
    if n_resumed:
        desc = f"{desc} (resuming, {n_resumed} stored)"

    def commit(task, out):
        nonlocal store_seconds
        level, idx, size, bseed = task[:4]
        xs = out["x"]
        for k, x in enumerate(xs):
            if x is None:
                xs[k] = np.full((size, *event_shape), np.nan, dtype=np.float32)
            elif tuple(x.shape[1:]) != event_shape:
                raise ValueError(f"simulator {by_level[level].sims[k].name!r} returned x of shape {tuple(x.shape[1:])} "
                                 f"per simulation in batch {idx}, but {event_shape} before; simulations must have "
                                 f"one fixed output shape")
        if st is not None:
            t0 = time.perf_counter()
            st.write_batch(level, idx, bseed, out)
            store_seconds += time.perf_counter() - t0
        else:
            _into(mem, by_level[level], idx, out)
        secs = stats["seconds"][level]
        for k, s in enumerate(out["seconds"]):
            secs[k] += s
        bad = [e for e in out["error"] if e]
        stats["n_failed"] += len(bad)
        stats["first_errors"].extend(bad[: max(0, 3 - len(stats["first_errors"]))])

    def failing(what: str, error: str) -> SimulatorFailing:
        return SimulatorFailing(f"simulator {names} failed on every simulation tried so far ({what}), so the campaign "
                                f"stopped early; nothing was stored for them. First error: {error}")

    aborted = True
    try:
        with progress(total=n_todo, desc=desc, enabled=progress_bar, unit="sim") as bar:
            while queue or ex.pending:
                while queue and ex.pending < ex.window:
                    ex.submit(queue.popleft() + (None if success or fail_fast is None else GIVE_UP,))
                task, out = ex.next_done()
                size = task[2]
                if out.get("gave_up"):
                    if not success:
                        raise failing(f"a batch of {size} at once, then the first {out['tried']} one at a time",
                                      out["error"])
                    queue.appendleft(task[:4])  # something succeeded meanwhile: rerun it in full
                    continue
                bar.update(size)
                n_ok = int(out["ok"].sum())
                if n_ok == 0 and not success and fail_fast is not None:
                    held.append((task, out))
                    early["n"] += size
                    early["error"] = early["error"] or next(e for e in out["error"] if e)
                    bar.set_postfix(failed=stats["n_failed"] + early["n"])
                    if early["n"] >= fail_fast:
                        raise failing(f"the first {early['n']}", early["error"])
                    continue
                if event_shape is None:
                    shape = next((tuple(x.shape[1:]) for x in out["x"] if x is not None), None)
                    if shape is None:  # fail_fast=None and every call raised: shape unknown, hold on
                        held.append((task, out))
                        continue
                    event_shape = shape
                    if st is not None:
                        st.set_meta(x_event_shape=list(event_shape))  # before the first batch is written
                success = success or n_ok > 0
                for t, o in held + [(task, out)]:
                    commit(t, o)
                held.clear()
                bar.set_postfix(failed=stats["n_failed"])
        if held:
            raise failing(f"all {early['n'] or sum(t[2] for t, _ in held)} of the campaign",
                          early["error"] or next(e for _, o in held for e in o["error"] if e))
        aborted = False
    finally:
        ex.close(abort=aborted)
    return store_seconds


def run_campaign(simulator, prior, n: int, *, seed: int = 0, batch_size: int = 1000, store=None, workers: int = 1,
                 backend: str | None = None, client=None, scheduler: str | None = None, progress_bar: bool = True,
                 mp_context: str | None = None, fail_fast: int | None = FAIL_FAST,
                 timeout: float | None = None) -> dict:
    """Simulate ``n`` parameters with one simulator: the engine behind :func:`telescope.simulate`.

    Arguments:
        simulator: a :class:`telescope.Simulator` (or a callable, wrapped).
        prior: a torch Distribution with event shape ``(d,)``.
        n: number of simulations; batch ``b`` of ``batch_size`` is seeded from ``(seed, b)``.
        store: a store path (:mod:`telescope.store`): finished batches are written there and an
            interrupted campaign resumes from it.
        workers, backend, client, scheduler: see :func:`telescope.simulate`.
        mp_context: start method of worker processes (default forkserver, else spawn).
        fail_fast: stop when this many simulations failed before any succeeded (``None``: never).
        timeout: seconds per simulation (see :func:`telescope.simulate`).

    Returns:
        A dict with ``theta (n, d)``, ``x (n, *event)`` (NaN rows where failed), ``ok (n,)``,
        ``noise_seed (n,)`` and ``summary`` (counts, failures, seconds, store overhead).
    """
    from .simulators import as_simulator

    simulator = as_simulator(simulator)
    n = check_count("n", n)
    batch_size = check_count("batch_size", batch_size)
    seed = check_seed(seed)
    level = Level(0, (simulator,), n, batch_size, seed)
    data, summary = run_levels([level], prior, kind="simulate", seed=seed, sims_info=[simulator_info(simulator)],
                               store=store, backend=backend, workers=workers, client=client, scheduler=scheduler,
                               progress_bar=progress_bar, mp_context=mp_context, fail_fast=fail_fast,
                               desc=f"simulate {simulator.name}", timeout=timeout)
    d = data[0]
    return {"theta": d["theta"], "x": d["x"], "ok": d["ok"], "noise_seed": d["noise_seed"], "summary": summary}


def failure_message(summary: dict, what: str = "simulations") -> str:
    first = summary["first_errors"][0] if summary["first_errors"] else "?"
    return (f"{summary['n_failed']} of {summary['n']} {what} failed (raised or returned NaN/inf; first: {first}); "
            f"they are recorded, and dropped before training")
