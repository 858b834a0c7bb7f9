"""Run simulation campaigns: ``theta ~ prior``, ``x = simulator(theta)``.

A campaign of ``n`` simulations is cut into batches of ``batch_size``.  Batch ``b`` draws
its parameters and its noise from one seed, :func:`telescope.simulators.batch_seed`
``(seed, b)``, so results depend only on ``(seed, n, batch_size)`` — never on the order in
which batches run, the backend, or whether the campaign was interrupted and resumed.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from .priors import check_prior
from .simulators import Simulator, as_simulator, batch_seed, seeded
from .utils import check_count, progress

__all__ = ["simulate", "simulate_batch"]


def simulate_batch(simulator: Simulator, prior, size: int, seed: int) -> dict:
    """Simulate one batch from its seed.  Returns ``theta``, ``x``, per-sample ``ok`` and ``error`` text.

    An exception raised by the simulator is recorded for every sample of the batch (and the batch is
    retried one sample at a time so that only the failing samples are lost).
    """
    with seeded(seed):
        theta = prior.sample((size,)).float()
    t0 = time.perf_counter()
    errors: list[str] = [""] * size
    try:
        x = simulator(theta, seed=seed)
    except Exception as exc:  # retry one by one to isolate failures
        rows, first_shape = [], None
        for i in range(size):
            try:
                xi = simulator(theta[i : i + 1], seed=batch_seed(seed, i))[0]
                first_shape = first_shape or xi.shape
                rows.append(xi)
            except Exception as e:  # noqa: BLE001 - recorded per sample
                errors[i] = f"{type(e).__name__}: {e}"
                rows.append(None)
        if first_shape is None:
            raise RuntimeError(f"simulator {simulator.name!r} raised on every sample of a batch; first error: "
                               f"{type(exc).__name__}: {exc}") from exc
        x = torch.stack([r if r is not None else torch.full(first_shape, float("nan")) for r in rows])
    x = torch.as_tensor(x).float()
    finite = torch.isfinite(x.reshape(size, -1)).all(-1)
    for i in torch.nonzero(~finite).flatten().tolist():
        errors[i] = errors[i] or "non-finite output (NaN or inf)"
    return {"theta": theta, "x": x, "ok": finite, "error": errors, "seconds": time.perf_counter() - t0}


def simulate(simulator, prior, n: int, seed: int = 0, batch_size: int = 1000, *, progress_bar: bool = True,
             store=None, workers: int = 1, backend: str = "serial") -> tuple[Tensor, Tensor]:
    """Draw ``n`` parameters from ``prior`` and simulate them.

    Arguments:
        simulator: a callable ``theta (n, d) -> x (n, d_x)`` or a :class:`telescope.Simulator`.
        prior: a torch Distribution with event shape ``(d,)``.
        n: number of simulations (> 0).
        seed: campaign seed; batch ``b`` is seeded from ``(seed, b)``.
        batch_size: simulations per batch (the unit of storage and scheduling).
        progress_bar: show a progress bar.
        store, workers, backend: on-disk store and parallel backends (see :mod:`telescope.store`).

    Returns:
        ``theta (n, d)`` and ``x (n, d_x)``.  Failed simulations keep their row with NaN in ``x``;
        estimators drop them before training with a warning.

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
    if store is not None or workers != 1 or backend != "serial":
        from .campaign import run_campaign  # store and parallel backends

        data = run_campaign(simulator, prior, n, seed=seed, batch_size=batch_size, store=store,
                            workers=workers, backend=backend, progress_bar=progress_bar)
        return data["theta"], data["x"]
    sizes = [min(batch_size, n - b * batch_size) for b in range((n + batch_size - 1) // batch_size)]
    thetas, xs, failed = [], [], 0
    with progress(total=n, desc=f"simulate {simulator.name}", enabled=progress_bar) as bar:
        for b, size in enumerate(sizes):
            out = simulate_batch(simulator, prior, size, batch_seed(seed, b))
            thetas.append(out["theta"])
            xs.append(out["x"])
            failed += int((~out["ok"]).sum())
            bar.update(size)
            bar.set_postfix(failed=failed)
    return torch.cat(thetas), torch.cat(xs)
