"""The ``sbi`` package as a benchmark peer: its NPE, NLE and NRE-C, trained and sampled with their own defaults.

``sbi`` is optional (``pip install sbi``); without it the ``sbi_*`` methods raise a ``ValueError``
that says so.  sbi logs every training to TensorBoard under ``./sbi-logs`` by default; the peers
hand it a tracker that logs nothing instead, so a benchmark run writes nothing outside its results
file and never changes the working directory of the process.
"""

from __future__ import annotations

import inspect
import warnings

import torch

__all__ = ["import_sbi", "fit", "sampler"]


def import_sbi():
    """``sbi.inference``, or a ``ValueError`` saying how to install sbi."""
    try:
        import sbi.inference
    except ImportError as e:
        raise ValueError(f"the sbi_* methods need the sbi package ({e}); install it with: pip install sbi") from None
    return sbi.inference


class _NoTracker:
    """An sbi tracker (``sbi.sbi_types.Tracker``) that records nothing."""

    log_dir = None

    def log_metric(self, name, value, step=None) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_params(self, params) -> None:
        pass

    def add_figure(self, name, figure, step=None) -> None:
        pass

    def flush(self) -> None:
        pass


def _quiet_logging(cls) -> dict:
    """Constructor arguments that keep an sbi trainer from writing TensorBoard logs."""
    params = inspect.signature(cls.__init__).parameters
    if "tracker" in params:  # sbi >= 0.26
        return {"tracker": _NoTracker()}

    class _NoWriter:  # older sbi: a SummaryWriter-like object whose methods do nothing
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    return {"summary_writer": _NoWriter()} if "summary_writer" in params else {}


def fit(trainer: str, task, theta, x, seed: int, max_epochs: int | None = None):
    """Train sbi's ``trainer`` (``"NPE"``, ``"NLE"`` or ``"NRE_C"``) on ``(theta, x)``; returns ``(posterior, epochs)``."""
    si = import_sbi()
    torch.manual_seed(seed)
    cls = getattr(si, trainer)
    kw = {} if max_epochs is None else {"max_num_epochs": max_epochs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference = cls(prior=task.prior, show_progress_bars=False, **_quiet_logging(cls))
        inference.append_simulations(theta, x).train(**kw)
    return inference.build_posterior(), inference.summary.get("epochs_trained", [None])[-1]


def sampler(posterior):
    """``(sample(x_o, n, seed), log_prob(theta, x_o))`` of an sbi posterior."""
    def sample(x_o, n, s):
        torch.manual_seed(s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return posterior.sample((n,), x=x_o, show_progress_bars=False)

    def log_prob(th, x_o):
        return posterior.log_prob(th, x=x_o)

    return sample, log_prob
