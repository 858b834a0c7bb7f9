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
import time

import numpy as np
import torch

from ..utils import check_count, check_seed, progress
from .backends import (
    _dask_task,
    _executor_task,
    check_timeout,
    is_executor,
    make_backend,
    resolve_backend,
    use_executor,
)
from .batches import _RNG_LOCK, Level, batch_sizes, draw_theta, run_batch
from .records import _open_store, prior_info, simulator_info
from .simulators import batch_seed
from .workers import _subprocess_entry

__all__ = ["Level", "SimulatorFailing", "run_batch", "run_campaign", "run_levels", "batch_sizes"]

#: Single calls tried after a failing batch call before concluding (while nothing succeeded yet) that
#: the simulator is broken.
GIVE_UP = 5

#: Failed simulations, with no success yet, that stop a campaign early.
FAIL_FAST = 5

# names that lived in the single-module campaign.py, kept importable from here
_OLD_PATH = (_RNG_LOCK, draw_theta, _dask_task, _executor_task, check_timeout, use_executor, _open_store, prior_info,
             _subprocess_entry)


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
    ex = make_backend(levels, prior, backend, workers=workers, client=client, scheduler=scheduler,
                      mp_context=mp_context, timeout=timeout)
    run = _Collector(levels, by_level, st, mem, stats, fail_fast)
    queue = collections.deque(tasks)
    n_todo = sum(t[2] for t in tasks)
    if n_resumed:
        desc = f"{desc} (resuming, {n_resumed} stored)"
    aborted = True
    try:
        with progress(total=n_todo, desc=desc, enabled=progress_bar, unit="sim") as bar:
            while queue or ex.pending:
                while queue and ex.pending < ex.window:
                    ex.submit(queue.popleft() + (None if run.success or fail_fast is None else GIVE_UP,))
                run.take(*ex.next_done(), queue, bar)
        run.finish()
        aborted = False
    finally:
        ex.close(abort=aborted)
    return run.store_seconds


class _Collector:
    """The finished batches of a running campaign: written to the store (or to ``mem``) in order of arrival,
    once the output shape is known; while nothing has succeeded, batches that all failed are held back and
    the campaign stops with :class:`SimulatorFailing` after ``fail_fast`` failures."""

    def __init__(self, levels, by_level, st, mem, stats, fail_fast):
        self.by_level, self.st, self.mem, self.stats, self.fail_fast = by_level, st, mem, stats, fail_fast
        self.store_seconds = 0.0
        self.success = st.has_success() if st is not None else False
        self.event_shape = None
        if st is not None and st.meta.get("x_event_shape") is not None:
            self.event_shape = tuple(st.meta["x_event_shape"])
        self.held: list = []
        self.early = {"n": 0, "error": None}
        self.names = ", ".join(dict.fromkeys(repr(s.name) for lv in levels for s in lv.sims))

    def failing(self, what: str, error: str) -> SimulatorFailing:
        return SimulatorFailing(f"simulator {self.names} failed on every simulation tried so far ({what}), so the "
                                f"campaign stopped early; nothing was stored for them. First error: {error}")

    def take(self, task, out, queue, bar) -> None:
        """One finished batch: rerun it (gave up while something succeeded), hold it, or commit it."""
        size = task[2]
        if out.get("gave_up"):
            if not self.success:
                raise self.failing(f"a batch of {size} at once, then the first {out['tried']} one at a time",
                                   out["error"])
            queue.appendleft(task[:4])  # something succeeded meanwhile: rerun it in full
            return
        bar.update(size)
        n_ok = int(out["ok"].sum())
        if n_ok == 0 and not self.success and self.fail_fast is not None:
            self.held.append((task, out))
            self.early["n"] += size
            self.early["error"] = self.early["error"] or next(e for e in out["error"] if e)
            bar.set_postfix(failed=self.stats["n_failed"] + self.early["n"])
            if self.early["n"] >= self.fail_fast:
                raise self.failing(f"the first {self.early['n']}", self.early["error"])
            return
        if self.event_shape is None:
            shape = next((tuple(x.shape[1:]) for x in out["x"] if x is not None), None)
            if shape is None:  # fail_fast=None and every call raised: shape unknown, hold on
                self.held.append((task, out))
                return
            self.event_shape = shape
            if self.st is not None:
                self.st.set_meta(x_event_shape=list(self.event_shape))  # before the first batch is written
        self.success = self.success or n_ok > 0
        for t, o in self.held + [(task, out)]:
            self.commit(t, o)
        self.held.clear()
        bar.set_postfix(failed=self.stats["n_failed"])

    def commit(self, task, out) -> None:
        """Write one batch (NaN rows for a simulator that raised on all of it) and count its failures."""
        level, idx, size, bseed = task[:4]
        xs = out["x"]
        for k, x in enumerate(xs):
            if x is None:
                xs[k] = np.full((size, *self.event_shape), np.nan, dtype=np.float32)
            elif tuple(x.shape[1:]) != self.event_shape:
                raise ValueError(f"simulator {self.by_level[level].sims[k].name!r} returned x of shape "
                                 f"{tuple(x.shape[1:])} per simulation in batch {idx}, but {self.event_shape} before; "
                                 f"simulations must have one fixed output shape")
        if self.st is not None:
            t0 = time.perf_counter()
            self.st.write_batch(level, idx, bseed, out)
            self.store_seconds += time.perf_counter() - t0
        else:
            _into(self.mem, self.by_level[level], idx, out)
        secs = self.stats["seconds"][level]
        for k, s in enumerate(out["seconds"]):
            secs[k] += s
        bad = [e for e in out["error"] if e]
        self.stats["n_failed"] += len(bad)
        self.stats["first_errors"].extend(bad[: max(0, 3 - len(self.stats["first_errors"]))])

    def finish(self) -> None:
        """At the end: batches still held mean that every simulation failed."""
        if self.held:
            raise self.failing(f"all {self.early['n'] or sum(t[2] for t, _ in self.held)} of the campaign",
                               self.early["error"] or next(e for _, o in self.held for e in o["error"] if e))


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
