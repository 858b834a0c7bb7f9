"""What every estimator shares: input checks, dropping failed simulations, training, save and load.

An estimator is a small object holding a prior, a network built at ``fit`` (whose shapes and
standardisation statistics come from the training data), and a loss.  Training goes through
:func:`telescope.train.train`.  Saving writes ``config.json`` (class, version, constructor
arguments, data shapes) and ``weights.pt`` (a plain state dict of tensors, loaded with
``weights_only=True``): no pickled modules, so a saved estimator survives refactoring.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..priors import check_prior, in_support
from ..simulators import seeded
from ..train import train
from ..utils import as_device, check_count, check_matrix

__all__ = ["Estimator", "load"]

_CLASSES: dict[str, type] = {}


class Estimator:
    """Base class.  Subclasses implement ``_build(theta, x) -> nn.Module`` and ``_loss(net, batch)``."""

    #: train() defaults for this estimator; overridden by fit(**kwargs)
    train_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _CLASSES[cls.__name__] = cls

    def __init__(self, prior, *, embedding: nn.Module | None = None, device=None, seed: int | None = 0,
                 **config):
        self.prior = check_prior(prior)
        self.dim_theta = int(self.prior.event_shape[0])
        if embedding is not None and not isinstance(embedding, nn.Module):
            raise TypeError(f"embedding must be a torch.nn.Module mapping x (n, *event) -> (n, k), "
                            f"got {type(embedding).__name__}")
        self.embedding = embedding
        self.device = as_device(device)
        self.seed = seed
        self.config = config
        self.net: nn.Module | None = None
        self.x_shape: tuple[int, ...] | None = None
        self.history: dict = {}

    # -- input checks ---------------------------------------------------------------------
    def _check_theta(self, theta, name: str = "theta") -> Tensor:
        return check_matrix(name, theta, self.dim_theta, allow_vector=True)

    def _check_x(self, x, name: str = "x", *, single: bool = False) -> Tensor:
        """``x`` as ``(n, *x_shape)``; a single observation may omit the batch dimension."""
        x = torch.as_tensor(x, dtype=torch.float32) if not isinstance(x, Tensor) else x.float()
        if self.x_shape is None:
            raise RuntimeError(f"{type(self).__name__} is not trained yet: call fit(theta, x) first")
        if tuple(x.shape) == self.x_shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.x_shape or (single and x.shape[0] != 1):
            want = f"{self.x_shape}" if single else f"(n, {', '.join(map(str, self.x_shape))}) or {self.x_shape}"
            raise ValueError(f"{name} must have shape {want} as the x given to fit, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf; expected finite values")
        return x

    def _prepare(self, theta, x) -> tuple[Tensor, Tensor]:
        """Check the training data, drop failed simulations (NaN/inf in x) with a warning."""
        theta = check_matrix("theta", theta, self.dim_theta)
        x = torch.as_tensor(x, dtype=torch.float32) if not isinstance(x, Tensor) else x.float()
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[0] != theta.shape[0]:
            raise ValueError(f"theta and x must have the same number of rows, got {theta.shape[0]} and {x.shape[0]}")
        if not torch.isfinite(theta).all():
            raise ValueError("theta contains NaN or inf; expected finite parameters drawn from the prior")
        ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)
        if not ok.all():
            warnings.warn(f"dropping {int((~ok).sum())} of {x.shape[0]} simulations whose x contains NaN or inf",
                          stacklevel=3)
            theta, x = theta[ok], x[ok]
        inside = in_support(self.prior, theta)
        if not inside.all():
            i = int(torch.nonzero(~inside)[0])
            raise ValueError(f"theta has {int((~inside).sum())} rows outside the prior support "
                             f"(first: row {i}, {theta[i].tolist()}); expected draws from the prior")
        if theta.shape[0] < 2:
            raise ValueError(f"need at least 2 valid simulations to train, got {theta.shape[0]}")
        return theta, x

    # -- training ---------------------------------------------------------------------------
    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        raise NotImplementedError

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]):
        raise NotImplementedError

    def _data(self, theta: Tensor, x: Tensor) -> dict[str, Tensor]:
        return {"theta": theta, "x": x}

    def fit(self, theta, x, **train_kwargs):
        """Train on simulations ``theta (n, d)`` and ``x (n, *event)``; returns ``self``.

        Keyword arguments go to :func:`telescope.train.train` (batch_size, lr, max_epochs, patience,
        val_fraction, clip, max_time, progress_bar, ...).
        """
        theta, x = self._prepare(theta, x)
        self.x_shape = tuple(x.shape[1:])
        with seeded(self.seed if self.seed is not None else int(torch.randint(2**62, ()).item())):
            self.net = self._build(theta, x).to(self.device)
        kwargs = {"seed": self.seed, "device": self.device, "desc": f"train {type(self).__name__}",
                  **self.train_defaults, **train_kwargs}
        self.history = train(self.net, self._loss, self._data(theta, x), **kwargs)
        return self

    def _trained(self) -> nn.Module:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} is not trained yet: call fit(theta, x) first")
        return self.net

    # -- save / load ------------------------------------------------------------------------
    def _config(self) -> dict:
        return {"class": type(self).__name__, "version": __version__, "dim_theta": self.dim_theta,
                "x_shape": list(self.x_shape or []), "config": self.config, "seed": self.seed,
                "has_embedding": self.embedding is not None}

    def save(self, path) -> Path:
        """Write ``path/config.json`` and ``path/weights.pt``."""
        net = self._trained()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        torch.save(state, path / "weights.pt")
        (path / "config.json").write_text(json.dumps(self._config(), indent=2))
        return path

    @classmethod
    def load(cls, path, prior, *, embedding: nn.Module | None = None, device=None) -> "Estimator":
        """Load an estimator saved with :meth:`save`; checks class, version and shapes."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no saved estimator at {str(path)!r} (config.json missing)")
        cfg = json.loads((path / "config.json").read_text())
        klass = _CLASSES.get(cfg.get("class", ""))
        if klass is None or (cls is not Estimator and not issubclass(klass, cls)):
            raise ValueError(f"{str(path)!r} holds a {cfg.get('class')!r}, not a {cls.__name__}")
        major = str(cfg.get("version", "0")).split(".")[0]
        if major != __version__.split(".")[0]:
            raise ValueError(f"{str(path)!r} was saved by telescope {cfg.get('version')}, which is incompatible "
                             f"with this version {__version__}")
        if cfg["has_embedding"] and embedding is None:
            raise ValueError("this estimator was trained with an embedding network: pass embedding= with the "
                             "same architecture to load its weights")
        est = klass(prior, embedding=embedding, device=device, seed=cfg["seed"], **cfg["config"])
        if est.dim_theta != cfg["dim_theta"]:
            raise ValueError(f"prior has dimension {est.dim_theta} but the saved estimator expects "
                             f"{cfg['dim_theta']}")
        est.x_shape = tuple(cfg["x_shape"])
        state = torch.load(path / "weights.pt", weights_only=True)
        # build a skeleton with the right shapes, then load the weights (and the statistics)
        dummy_theta = torch.zeros(2, est.dim_theta)
        dummy_x = torch.zeros(2, *est.x_shape)
        net = est._build(dummy_theta, dummy_x)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"saved weights do not match the estimator's architecture: {e}") from None
        est.net = net.to(est.device).eval()
        return est


def load(path, prior, **kwargs) -> Estimator:
    """Load any saved telescope estimator (the class is read from ``config.json``)."""
    return Estimator.load(path, prior, **kwargs)


def check_n(n) -> int:
    return check_count("n", n)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
