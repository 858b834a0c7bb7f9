"""Local worker processes that survive their simulator (the ``processes`` backend).

Each worker is a process the parent watches.  When one dies (segfault, ``os._exit``, out-of-memory kill)
or runs past its deadline (``timeout`` seconds per simulation, times the batch size for a batch), it is
replaced and its batch is rerun one simulation at a time, streaming each result back, so the simulation
that was running when a process died is known exactly: it is recorded as failed ("process died: signal 11
(SIGSEGV)", "timed out after 5 s") and the campaign completes.  The rows of such a batch are the rows the
exception path of :func:`~telescope.simulation.batches.run_batch` gives (each from ``batch_seed(s, i)``).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import pickle
import threading
import time

import numpy as np
import torch

from .batches import _RNG_LOCK, _err, _finish, _one_row, _run_task, _stack, _tagger, draw_theta
from .simulators import batch_seed

__all__: list[str] = []

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
                [sys.executable, "-c", "from telescope.simulation.workers import _subprocess_entry; _subprocess_entry()",
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
                self.ctx.set_forkserver_preload(["__main__", "telescope.simulation.workers"])
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
