"""One batch of a campaign: a pure function of its seed.

Batch ``b`` of a level is ``size`` simulations from the seed ``s = batch_seed(seed_l, b)``::

    theta = prior.sample((size,))      # under seeded(theta_seed(s)): a stream apart from the noise
    x_k   = G_k(theta, seed=s)          # every simulator of the level: same theta, same noise

An exception of the simulator on the batch is retried one simulation at a time, simulation ``i`` from its
own seed ``batch_seed(s, i)`` and all simulators of the level together (pairs stay seed-matched);
simulations that raise or return NaN/inf are recorded with their error text and marked not ``ok``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .simulators import Simulator, batch_seed, seeded, theta_seed

__all__ = ["Level", "batch_sizes", "draw_theta", "run_batch"]

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
