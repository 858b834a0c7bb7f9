"""sbi's posterior interface on every telescope estimator, next to telescope's own.

The ``sbi`` package (Tejero-Cantero et al., 2020; Boelts et al., 2025) asks a posterior for
``sample(sample_shape, x=x_o)``, ``sample_batched(sample_shape, x)``, ``log_prob(theta, x=x_o)``,
``set_default_x(x_o)`` and ``map()``.  Telescope's estimators take ``sample(x_o, n)`` and
``log_prob(theta, x_o)``.  This module makes every estimator answer both, so sbi's diagnostics
(``run_sbc``, ``run_tarp``, ``c2st``, ``pairplot``, ensembles) run on a telescope posterior
unmodified, while telescope's own code keeps its positional calls:

* ``sample`` / ``sample_batched``: a tuple or ``torch.Size`` of integers as first argument (or
  ``sample_shape=``, or no argument at all) means sbi's form; the result has shape
  ``(*sample_shape, d)`` (``(*sample_shape, m, d)`` batched).  ``x`` defaults to the observation
  given to :meth:`SBIInterface.set_default_x`.
* ``log_prob(theta, x=...)``: ``theta`` may have any leading shape ``(*, d)``; ``x`` defaults as above.
* sbi's keyword arguments are translated where telescope has the same setting
  (``show_progress_bars`` -> ``progress_bar``, ``max_sampling_time`` -> ``max_time``), ignored where
  they only tune sbi's own machinery (``max_sampling_batch_size``, ``norm_posterior``,
  ``leakage_correction_params``), and refused with a clear error where telescope cannot honour them
  (``reject_outside_prior=False``, ``track_gradients=True``).

Nothing here imports sbi: the interface is plain duck typing.

Example:
    >>> import telescope as ts
    >>> task = ts.tasks.get("gaussian_linear")
    >>> theta, x = ts.simulate(task.simulator, task.prior, 300, progress_bar=False)
    >>> est = ts.NPE(task.prior).fit(theta, x, max_epochs=1, progress_bar=False)
    >>> est.sample((4, 5), x=task.observation(1)).shape     # sbi's form
    torch.Size([4, 5, 10])
    >>> est.sample(task.observation(1), 20).shape           # telescope's form
    torch.Size([20, 10])
    >>> est.set_default_x(task.observation(1)).log_prob(torch.zeros(3, 10)).shape
    torch.Size([3])
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["SBIInterface", "sbi_compatible", "is_sample_shape"]

# sbi keywords that only tune sbi's own machinery: accepted and ignored
_IGNORED = {"max_sampling_batch_size", "sample_with", "mcmc_method", "mcmc_parameters",
            "rejection_sampling_parameters", "norm_posterior", "leakage_correction_params"}
# sbi keywords with a telescope equivalent
_RENAMED = {"show_progress_bars": "progress_bar", "max_sampling_time": "max_time"}


def is_sample_shape(value: Any) -> bool:
    """True for sbi's ``sample_shape``: a ``torch.Size`` or a tuple of non-negative integers.

    Lists are not shapes here: ``sample([1, 0, 1], 100)`` is telescope's form with a list observation.
    """
    if isinstance(value, torch.Size):
        return True
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _is_int(value: Any) -> bool:
    return hasattr(value, "__index__") and not isinstance(value, (bool, Tensor))


def _shape(value: Any) -> torch.Size:
    if value is None:
        return torch.Size([])
    if not is_sample_shape(value):
        raise TypeError(f"sample_shape must be a tuple of non-negative integers such as (1000,) (sbi's form), "
                        f"got {value!r} ({type(value).__name__})")
    return torch.Size(value)


def _params(fn: Callable) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def _translate(fn: Callable, kwargs: dict, what: str) -> dict:
    """sbi keyword arguments -> the telescope method's own."""
    accepted = _params(fn)
    out = {}
    for key, value in kwargs.items():
        if key in _IGNORED:
            continue
        if key == "reject_outside_prior":
            if not value:
                raise ValueError(f"{what}: reject_outside_prior=False is not supported; telescope's samples always "
                                 f"lie inside the prior support")
            continue
        if key == "return_partial_on_timeout":
            if value:
                raise ValueError(f"{what}: return_partial_on_timeout=True is not supported; telescope raises a "
                                 f"RuntimeError with the acceptance rate when sampling runs out of time")
            continue
        if key == "track_gradients":
            if value:
                raise ValueError(f"{what}: track_gradients=True is not supported; telescope's densities are "
                                 f"evaluated without gradients (use map() for the posterior mode)")
            continue
        if key in _RENAMED:
            if _RENAMED[key] in accepted:
                out[_RENAMED[key]] = value
            continue
        out[key] = value
    return out


class SBIInterface:
    """Mixin giving an estimator sbi's ``set_default_x``, ``default_x`` and ``map``.

    ``sample``, ``sample_batched`` and ``log_prob`` of every subclass are wrapped by
    :func:`sbi_compatible` (from ``Estimator.__init_subclass__``) to accept sbi's call forms too.
    """

    _default_x: Tensor | None = None

    @property
    def default_x(self) -> Tensor | None:
        """The observation used when ``x`` is omitted from an sbi-style call (``None`` until set)."""
        return self._default_x

    def set_default_x(self, x) -> "SBIInterface":
        """Remember ``x`` (one observation, or an iid set for NLE/NRE/NPSE) for sbi-style calls; returns ``self``."""
        self._check_x(x, "x")
        self._default_x = torch.as_tensor(x, dtype=torch.float32).clone()
        return self

    def _x_or_default(self, x, what: str) -> Tensor:
        if x is None:
            if self._default_x is None:
                raise ValueError(f"{type(self).__name__}.{what}: no x given and no default set; pass x=x_o or call "
                                 f"set_default_x(x_o) first")
            return self._default_x
        return x

    @torch.no_grad()
    def map(self, x=None, num_iter: int = 1000, num_to_optimize: int = 100, learning_rate: float = 0.01,
            init_method: str | Tensor = "posterior", num_init_samples: int = 1000, save_best_every: int = 10,
            show_progress_bars: bool = False, force_update: bool = False, *, seed: int = 0) -> Tensor:
        r"""The posterior mode (maximum a posteriori) for ``x`` (default: :attr:`default_x`): ``(d,)``.

        sbi's signature.  ``num_init_samples`` starting points come from the posterior
        (``init_method="posterior"``), the prior (``"prior"`` or ``"proposal"``) or a given tensor ``(k, d)``; the
        ``num_to_optimize`` with the highest density are refined for ``num_iter`` iterations by a
        derivative-free (1+1) evolution strategy on ``log_prob``: each point proposes a Gaussian step with
        the spread of the initial points times a per-point scale, keeps it when the density rises, and scales
        its step by ``exp(0.8)`` on success and ``exp(-0.2)`` on failure (Rechenberg's 1/5 success rule,
        Rechenberg 1973; Kern et al. 2004).  ``learning_rate`` is the initial step scale relative to that
        spread.  No gradients are needed, so every estimator with a density works the same way, and points
        never leave the prior support (their density is ``-inf`` there).  Estimators without a density (NPSE)
        return the highest point of a Gaussian kernel density estimate of ``num_init_samples`` posterior
        samples (Scott's bandwidth) refined by mean shift.  ``save_best_every`` is accepted for sbi's
        signature; the best point is kept at every iteration.  The result is cached per ``x`` unless
        ``force_update``.
        """
        x = self._x_or_default(x, "map")
        key = (torch.as_tensor(x, dtype=torch.float32).reshape(-1).tolist(), num_iter, num_to_optimize,
               learning_rate, str(init_method), num_init_samples, seed)
        cache = getattr(self, "_map_cache", None)
        if not force_update and cache is not None and cache[0] == key:
            return cache[1].clone()
        g = torch.Generator().manual_seed(int(seed))
        d = self.dim_theta
        if isinstance(init_method, Tensor):
            init = self._check_theta(init_method, "init_method")
        elif init_method == "posterior":
            init = self.sample(x, num_init_samples, seed=int(torch.randint(2**62, (), generator=g)))
        elif init_method in ("prior", "proposal"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (), generator=g)))
                init = self.prior.sample((num_init_samples,)).float()
        else:
            raise ValueError(f"init_method must be 'posterior', 'prior', 'proposal' or a tensor (k, {d}), "
                             f"got {init_method!r}")
        init = init.reshape(-1, d).float()
        has_density = type(self).log_prob is not SBIInterface.log_prob
        if not has_density:
            best = _kde_mode(init)
        else:
            best = _es_mode(lambda t: self.log_prob(t, x).reshape(-1).double(), init, num_iter, num_to_optimize,
                            learning_rate, g)
        self._map_cache = (key, best.clone())
        return best

    def log_prob(self, theta, x_o=None, **kwargs) -> Tensor:  # estimators with a density override this
        raise NotImplementedError(f"{type(self).__name__} has no posterior density (a score-based estimator "
                                  f"defines p(theta | x) only through its samples); use sample()")


def _es_mode(log_prob: Callable[[Tensor], Tensor], init: Tensor, iters: int, keep: int, lr: float,
             g: torch.Generator) -> Tensor:
    """(1+1)-ES with the 1/5 success rule from the ``keep`` best of ``init``; the best point ``(d,)``."""
    lp = log_prob(init)
    if not torch.isfinite(lp).any():
        raise ValueError("map: every starting point has log density -inf; check x and the prior support")
    top = torch.argsort(lp, descending=True)[: max(1, min(int(keep), init.shape[0]))]
    pts, lp = init[top].clone(), lp[top].clone()
    spread = init.std(0) if init.shape[0] > 1 else torch.ones(init.shape[1])
    spread = torch.where(torch.isfinite(spread) & (spread > 0), spread, torch.ones_like(spread))
    scale = torch.full((pts.shape[0], 1), float(lr) * 10.0)
    for _ in range(int(iters)):
        cand = pts + scale * spread * torch.randn(pts.shape, generator=g)
        lc = log_prob(cand)
        up = torch.isfinite(lc) & (lc > lp)
        pts[up], lp[up] = cand[up], lc[up]
        scale = torch.where(up[:, None], scale * math.exp(0.8), scale * math.exp(-0.2)).clamp(1e-8, 10.0)
    return pts[int(torch.argmax(lp))]


def _kde_mode(samples: Tensor, iters: int = 100) -> Tensor:
    """Highest mode of a Gaussian KDE of ``samples (n, d)`` (Scott's bandwidth, per-dimension scale)."""
    s = samples.double()
    n, d = s.shape
    sd = s.std(0).clamp_min(1e-12)
    z = s / sd
    h = n ** (-1.0 / (d + 4))

    def log_dens(p: Tensor) -> Tensor:
        return torch.logsumexp(-0.5 * torch.cdist(p, z) ** 2 / h**2, 1)

    pts = z[torch.argsort(log_dens(z), descending=True)[: min(50, n)]].clone()
    for _ in range(iters):  # mean shift
        w = torch.softmax(-0.5 * torch.cdist(pts, z) ** 2 / h**2, 1)
        pts = w @ z
    return (pts[int(torch.argmax(log_dens(pts)))] * sd).float()


def _wrap_sample(fn: Callable, batched: bool) -> Callable:
    names = list(_params(fn))[1:]  # without self
    x_name = names[0]
    what = "sample_batched" if batched else "sample"

    @functools.wraps(fn)
    def sample(self, *args, **kwargs):
        first = args[0] if args else kwargs.get("sample_shape", None)
        sbi_form = ("sample_shape" in kwargs
                    or (args and is_sample_shape(args[0]) and not (len(args) > 1 and _is_int(args[1])))
                    or (not args and "n" not in kwargs and x_name not in kwargs))
        if not sbi_form:
            return fn(self, *args, **kwargs)
        kwargs.pop("sample_shape", None)
        shape = _shape(first)
        rest = list(args[1:])
        x = rest.pop(0) if rest else kwargs.pop("x", None)
        if rest:
            raise TypeError(f"{type(self).__name__}.{what}(sample_shape, x, **options): too many positional "
                            f"arguments ({len(args)})")
        if batched and x is None:
            raise ValueError(f"{type(self).__name__}.sample_batched(sample_shape, x): x (m, *event) is required")
        x = self._x_or_default(x, what)
        n = math.prod(shape)
        out = fn(self, x, max(n, 1), **_translate(fn, kwargs, f"{type(self).__name__}.{what}"))
        extra = ()
        if isinstance(out, tuple):  # e.g. (samples, chains) with return_chains=True
            out, extra = out[0], out[1:]
        if n == 0:
            out = out[:0]
        out = out.reshape(*shape, *out.shape[1:])
        return (out, *extra) if extra else out

    return sample


def _wrap_log_prob(fn: Callable) -> Callable:
    names = list(_params(fn))[1:]
    x_name = names[1] if len(names) > 1 else "x_o"

    @functools.wraps(fn)
    def log_prob(self, theta, *args, **kwargs):
        if args:
            x, rest = args[0], args[1:]
        else:
            x, rest = kwargs.pop(x_name, None), ()
            if "x" in kwargs and x_name != "x":
                if x is not None:
                    raise TypeError(f"{type(self).__name__}.log_prob: give x or {x_name}, not both")
                x = kwargs.pop("x")
        sbi_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _IGNORED or k == "track_gradients"}
        _translate(fn, sbi_kwargs, f"{type(self).__name__}.log_prob")  # refuses track_gradients=True
        x = self._x_or_default(x, "log_prob")
        t = torch.as_tensor(theta, dtype=torch.float32) if not isinstance(theta, Tensor) else theta
        if t.dim() > 2:  # sbi allows theta (*batch, d)
            lead = t.shape[:-1]
            return fn(self, t.reshape(-1, t.shape[-1]), x, *rest, **kwargs).reshape(lead)
        return fn(self, theta, x, *rest, **kwargs)

    return log_prob


def sbi_compatible(cls: type) -> type:
    """Wrap ``sample``, ``sample_batched`` and ``log_prob`` defined on ``cls`` to accept sbi's forms too."""
    for name, wrap in (("sample", lambda f: _wrap_sample(f, False)), ("sample_batched", lambda f: _wrap_sample(f, True)),
                       ("log_prob", _wrap_log_prob)):
        fn = cls.__dict__.get(name)
        if fn is None or getattr(fn, "_sbi_wrapped", False) or not callable(fn):
            continue
        wrapped = wrap(fn)
        wrapped._sbi_wrapped = True
        setattr(cls, name, wrapped)
    return cls
