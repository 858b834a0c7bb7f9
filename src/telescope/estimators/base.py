"""What every estimator shares: input checks, dropping failed simulations, training, save and load.

An estimator is a small object holding a prior, a network built at ``fit`` (whose shapes and
standardisation statistics come from the training data), and a loss.  Training goes through
:func:`telescope.training.train`.  Saving writes ``config.json`` (class, version, constructor
arguments, data shapes) and ``weights.pt`` (a plain state dict of tensors, loaded with
``weights_only=True``): no pickled modules, so a saved estimator survives refactoring.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._version import __version__
from ..priors import check_prior, in_support
from ..simulation.simulators import seeded
from ..training import train
from ..utils import as_device, check_count, check_matrix
from .sbi_api import SBIInterface, sbi_compatible

__all__ = ["Estimator", "load"]

_CLASSES: dict[str, type] = {}


class Estimator(SBIInterface):
    """Base class of every estimator, with the public training protocol.

    The training protocol is what :meth:`fit` does, in pieces that other trainers (e.g. the multilevel
    estimators of :mod:`telescope.multilevel`) call in their own order:

    * :meth:`training_data` ``(theta, x) -> batch``: the dict of tensors the loss reads;
    * :meth:`build_net` ``(theta, x) -> nn.Module``: a new network, its shapes and standardisation
      statistics taken from the data;
    * :meth:`loss` ``(net, batch)``: the loss :func:`telescope.training.train` minimises (a scalar, or a
      dict of named terms);
    * :attr:`loss_terms`: ``loss_terms(net, batch) -> (n,)``, per-simulation losses whose mean is the loss,
      or ``None`` where the loss is not such a mean (NRE, NPSE);
    * :meth:`trained_net`: the trained network (an error before :meth:`fit`).

    ``fit(theta, x)`` is ``net = build_net(theta, x)`` and ``train(net, loss, training_data(theta, x))``.
    Subclasses implement the protocol through the hooks ``_build(theta, x)``, ``_loss(net, batch)`` and,
    where it exists, ``_loss_terms(net, batch)`` (and ``_data(theta, x)`` when the batch is not
    ``{"theta": theta, "x": x}``); the public names call them, so a subclass overriding a hook changes both.

    Example:
        >>> import telescope as ts
        >>> task = ts.tasks.get("gaussian_linear", dim=2)
        >>> theta, x = ts.simulate(task.simulator, task.prior, 100, seed=0, progress_bar=False)
        >>> est = ts.NPE(task.prior, transforms=1, hidden=(8,))
        >>> net, batch = est.build_net(theta, x), est.training_data(theta, x)
        >>> est.loss(net, batch).shape, est.loss_terms(net, batch).shape
        (torch.Size([]), torch.Size([100]))
        >>> ts.NRE(task.prior).loss_terms is None     # NRE's loss is not a mean of per-simulation terms
        True

    Every estimator also answers sbi's posterior calls (``sample((n,), x=x_o)``, ``log_prob(theta, x=x_o)``,
    ``set_default_x``, ``map``; :mod:`telescope.estimators.sbi_api`).
    """

    #: train() defaults for this estimator; overridden by fit(**kwargs)
    train_defaults: dict[str, Any] = {}
    #: what fit does with failed simulations (NaN/inf in x) by default: "drop" (with a warning) or "refuse".
    #: Posterior estimators may drop them; likelihood and ratio estimators refuse, because dropping
    #: conditions p(x | theta) on the simulation succeeding, which biases the posterior.
    invalid_default: str = "drop"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _CLASSES[cls.__name__] = cls
        sbi_compatible(cls)  # sample / sample_batched / log_prob also accept sbi's call forms

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
        x = as_real(name, x)
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

    def _prepare(self, theta, x, invalid: str | None = None) -> tuple[Tensor, Tensor]:
        """Check the training data; failed simulations (NaN/inf in x) follow the ``invalid`` policy."""
        invalid = self._check_invalid(invalid)
        theta = check_matrix("theta", theta, self.dim_theta)
        x = as_real("x", x)
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[0] != theta.shape[0]:
            raise ValueError(f"theta and x must have the same number of rows, got {theta.shape[0]} and {x.shape[0]}")
        if not torch.isfinite(theta).all():
            raise ValueError("theta contains NaN or inf; expected finite parameters drawn from the prior")
        ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)
        if not ok.all():
            name = type(self).__name__
            if invalid == "refuse":
                raise ValueError(
                    f"x has {int((~ok).sum())} of {x.shape[0]} simulations with NaN or inf (failed simulations). "
                    f"{name} learns from the joint of theta and x: dropping them conditions it on the simulation "
                    f"succeeding, which biases the posterior towards parameters where the simulator works. Pass "
                    f"fit(..., invalid='drop') to accept that, restrict the prior to the region where the "
                    f"simulator works (e.g. a classifier of validity used to truncate the prior), or use NPE, "
                    f"whose posterior may drop them")
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

    # -- the training protocol ----------------------------------------------------------------
    def build_net(self, theta: Tensor, x: Tensor) -> nn.Module:
        """A new network for training data ``theta (n, d)`` and ``x (n, *event)``, which give its shapes and
        standardisation statistics.  It is not stored: :meth:`fit` builds under the estimator's seed and
        keeps the result in ``self.net``."""
        return self._build(theta, x)

    def loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        """The training loss of ``net`` on ``batch`` (a dict of tensors made by :meth:`training_data`): a scalar,
        or a dict of named terms whose sum is minimised (:func:`telescope.training.train`)."""
        return self._loss(net, batch)

    @property
    def loss_terms(self) -> Callable[[nn.Module, dict[str, Tensor]], Tensor] | None:
        """``loss_terms(net, batch) -> (n,)``: the per-simulation losses whose mean is :meth:`loss`, or ``None``
        for an estimator whose loss is not a mean of per-simulation terms."""
        return getattr(self, "_loss_terms", None)

    def training_data(self, theta: Tensor, x: Tensor) -> dict[str, Tensor]:
        """The batch dict the loss reads for simulations ``theta (n, d)``, ``x (n, *event)``."""
        return self._data(theta, x)

    def trained_net(self) -> nn.Module:
        """The trained network; a RuntimeError before :meth:`fit`."""
        return self._trained()

    # -- the hooks subclasses implement -----------------------------------------------------
    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        raise NotImplementedError

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]):
        raise NotImplementedError

    def _data(self, theta: Tensor, x: Tensor) -> dict[str, Tensor]:
        return {"theta": theta, "x": x}

    # -- training ---------------------------------------------------------------------------
    def _check_invalid(self, invalid: str | None) -> str:
        invalid = self.invalid_default if invalid is None else invalid
        if invalid not in ("drop", "refuse"):
            raise ValueError(f"invalid must be 'drop' (train on the successful simulations, with a warning), "
                             f"'refuse' or None (the estimator's default, {self.invalid_default!r}); got {invalid!r}")
        return invalid

    def fit(self, theta, x, *, invalid: str | None = None, **train_kwargs):
        """Train on simulations ``theta (n, d)`` and ``x (n, *event)``; returns ``self``.

        ``invalid`` says what to do with failed simulations (NaN/inf in x): ``"drop"`` (with a warning;
        the default of posterior estimators) or ``"refuse"`` (the default of NLE and NRE, for which
        dropping biases the posterior).  Other keyword arguments go to :func:`telescope.training.train`
        (batch_size, lr, max_epochs, patience, val_fraction, clip, max_time, progress_bar, ...).
        """
        _check_train_kwargs(train_kwargs)
        theta, x = self._prepare(theta, x, invalid)
        self.x_shape = tuple(x.shape[1:])
        with seeded(self.seed if self.seed is not None else int(torch.randint(2**62, ()).item())):
            self.net = self.build_net(theta, x).to(self.device)
        kwargs = {"seed": self.seed, "device": self.device, "desc": f"train {type(self).__name__}",
                  **self.train_defaults, **train_kwargs}
        self.history = train(self.net, self.loss, self.training_data(theta, x), **kwargs)
        return self

    def fit_store(self, store, *, invalid: str | None = None, stats_rows: int = 100_000, **train_kwargs):
        """Train on the simulations of a :func:`telescope.simulate` store without loading them into memory.

        The usable rows are exported once to memory-mapped ``.npy`` files next to the store
        (:func:`telescope.simulation.store.export_arrays`) and training reads its minibatches from there: the memory
        it needs does not grow with the number of simulations (the mapped pages are page cache the
        operating system can reclaim), only an index of 8 bytes per simulation does.  Differences from
        ``fit(*load_simulations(store))``: the validation split is the last ``val_fraction`` of the rows
        (rows of a store are iid draws from the prior, in batch order), and the standardisation statistics
        and input checks use ``stats_rows`` rows drawn at random.  ``invalid`` as for :meth:`fit`.

        Returns ``self``.
        """
        from ..simulation.store import export_arrays

        _check_train_kwargs(train_kwargs)
        invalid = self._check_invalid(invalid)
        theta, x, n_failed = export_arrays(store)
        n = theta.shape[0]
        if n_failed:
            name = type(self).__name__
            if invalid == "refuse":
                raise ValueError(f"store {str(store)!r} holds {n_failed} failed simulations (of {n + n_failed}). {name} "
                                 f"learns from the joint of theta and x: dropping them conditions it on the "
                                 f"simulation succeeding, which biases the posterior. Pass invalid='drop' to accept "
                                 f"that, or use NPE")
            warnings.warn(f"dropping {n_failed} of {n + n_failed} simulations whose x contains NaN or inf",
                          stacklevel=2)
        if theta.dim() != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(f"the store's theta has shape {tuple(theta.shape)}, expected (n, {self.dim_theta}) for "
                             f"this prior")
        seed = self.seed if self.seed is not None else int(torch.randint(2**62, ()).item())
        g = torch.Generator().manual_seed(int(seed))
        pick = torch.randperm(n, generator=g)[: check_count("stats_rows", stats_rows, 2)].sort().values
        sub_theta, sub_x = self._prepare(theta[pick], x[pick], invalid)  # checks (support, finiteness) on a sample
        self.x_shape = tuple(x.shape[1:])
        with seeded(int(seed)):
            self.net = self.build_net(sub_theta, sub_x).to(self.device)
        kwargs = {"seed": self.seed, "device": self.device, "desc": f"train {type(self).__name__}",
                  **self.train_defaults, **train_kwargs}
        vf = float(kwargs.get("val_fraction", 0.1))
        n_val = min(max(int(round(vf * n)), 1 if vf > 0 else 0), n - 1)
        cut = n - n_val
        self.history = train(self.net, self.loss, self.training_data(theta[:cut], x[:cut]),
                             val_data=self.training_data(theta[cut:], x[cut:]), **kwargs)
        self._store_val = (theta[cut:], x[cut:])
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
        net = self.trained_net()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        torch.save(state, path / "weights.pt")
        (path / "config.json").write_text(json.dumps(self._config(), indent=2))
        return path

    @classmethod
    def load(cls, path, prior, *, embedding: nn.Module | None = None, device=None) -> Estimator:
        """Load an estimator saved with :meth:`save`; checks class, version and shapes."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no saved estimator at {str(path)!r} (config.json missing)")
        try:
            cfg = json.loads((path / "config.json").read_text())
            if not isinstance(cfg, dict):
                raise ValueError(f"expected a JSON object, got {type(cfg).__name__}")
            for key in ("class", "dim_theta", "x_shape", "config", "seed", "has_embedding"):
                if key not in cfg:
                    raise ValueError(f"the key {key!r} is missing")
        except ValueError as e:
            raise ValueError(f"{str(path / 'config.json')!r} is not a telescope estimator config: {e}") from None
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
        try:
            state = torch.load(path / "weights.pt", weights_only=True)
        except Exception as e:  # noqa: BLE001 - anything torch raises on a bad or foreign file
            raise ValueError(f"{str(path / 'weights.pt')!r} is not a readable state dict of tensors "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(f"{str(path / 'weights.pt')!r} does not hold a state dict of tensors")
        # build a skeleton with the right shapes, then load the weights (and the statistics)
        dummy_theta = torch.zeros(2, est.dim_theta)
        dummy_x = torch.zeros(2, *est.x_shape)
        net = _build_checked(est, dummy_theta, dummy_x, state, path)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"saved weights do not match the estimator's architecture: {e}") from None
        est.net = net.to(est.device).eval()
        return est


_FACTORIES = {"empty", "zeros", "ones", "full", "rand", "randn", "randint", "eye", "empty_strided", "arange",
              "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "tensor"}


class _TooBig(Exception):
    pass


class _Budget(TorchFunctionMode):
    """Count the elements of the tensors created while building a network; stop past ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.numel = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, Tensor):
            if getattr(func, "__name__", "") in _FACTORIES:
                self.numel += out.numel()
            if self.numel > self.limit or out.numel() > self.limit:
                raise _TooBig
        return out


def _build_checked(est: Estimator, theta: Tensor, x: Tensor, state: dict, path: Path) -> nn.Module:
    """Build the network ``config.json`` describes, checked against the saved weights.

    The build is stopped as soon as it has created more tensor elements than a few times the saved weights
    hold, so a config edited to huge sizes is refused before gigabytes are allocated; then every tensor
    shape is compared with ``weights.pt``.
    """
    n_saved = sum(v.numel() for v in state.values())
    # first, without building anything: a layer width appears as a dimension of a saved tensor, so an integer
    # of the config far above every saved dimension cannot describe this network
    max_dim = max((d for v in state.values() for d in v.shape), default=1)
    ints = [v for val in est.config.values() for v in (val if isinstance(val, (list, tuple)) else [val])
            if isinstance(v, int) and not isinstance(v, bool)]
    if any(v > 4 * max_dim + 64 for v in ints):
        raise ValueError(f"{str(path / 'config.json')!r} does not describe the saved weights: its settings "
                         f"{est.config} hold {max(ints)}, far above every tensor dimension in weights.pt (at most "
                         f"{max_dim}); nothing was built. Was config.json edited?")
    try:
        with _Budget(4 * n_saved + 1_000_000):
            net = est.build_net(theta, x)
    except (_TooBig, MemoryError) as e:
        raise ValueError(f"{str(path / 'config.json')!r} describes a network far larger than the saved weights "
                         f"({n_saved:,} numbers in weights.pt); it was not built. Was config.json edited? "
                         f"(config: {est.config})") from None if isinstance(e, _TooBig) else e
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != saved:
        diff = [f"{k}: config gives {shapes.get(k)}, weights.pt has {saved.get(k)}"
                for k in sorted(set(shapes) | set(saved)) if shapes.get(k) != saved.get(k)]
        raise ValueError(f"{str(path / 'config.json')!r} does not describe the saved weights ({len(diff)} tensors "
                         f"differ, first: {'; '.join(diff[:3])}). Was config.json edited?")
    return net


def load(path, prior, **kwargs) -> Estimator:
    """Load any saved telescope estimator (the class is read from ``config.json``)."""
    return Estimator.load(path, prior, **kwargs)


def as_real(name: str, x) -> Tensor:
    """``x`` as a float32 tensor, or a TypeError naming ``name`` (strings, objects, complex numbers)."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__} {str(x)[:40]!r} "
                            f"({e})") from None
    if x.is_complex():
        raise TypeError(f"{name} must be real, got a complex tensor ({x.dtype}); taking its real part would lose "
                        f"the imaginary part: pass e.g. torch.cat([x.real, x.imag], -1) or x.abs()")
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                                                  torch.bool)):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    return x.float()


def _check_train_kwargs(kwargs: dict) -> None:
    for key in ("max_epochs", "batch_size"):
        if key in kwargs and kwargs[key] is not None:
            check_count(key, kwargs[key])


def check_n(n) -> int:
    return check_count("n", n)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
