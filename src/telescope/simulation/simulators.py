"""Simulators: plain callables ``theta -> x`` and generators ``x = G(theta, u)``.

A *generator* makes its randomness explicit: ``u = noise(n, generator)`` draws the noise
and ``G(theta, u)`` is deterministic.  Two simulators that share one noise sampler can be
run on the *same* ``(theta, u)`` — the seed-matching that multilevel training needs
(Section 3 and Appendix B.4 of Hikida et al., 2025).  A plain callable draws its own randomness from
torch's global generator, which :func:`telescope.simulate` seeds per batch.

Every simulator is wrapped in :class:`Simulator`, which carries a name and a JSON-able
configuration (used by the simulation store to refuse mixing simulators).

References:
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import random
import weakref
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

__all__ = ["Simulator", "as_simulator", "batch_seed", "level_seed", "theta_seed", "seeded"]


def _entropy(seed: int, *words: int) -> list[int]:
    """SeedSequence entropy of a campaign seed: ``[seed, *words]`` for ``0 <= seed < 2**32`` (as it always was),
    extended with the seed's high word and sign (and a marker) outside that range, so that every seed in
    ``[-2**63, 2**64 - 1]`` gets its own stream."""
    seed = int(seed)
    if 0 <= seed < 2**32:
        return [seed, *words]
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [-2**63, 2**64 - 1], got {seed}")
    u = seed & 0xFFFFFFFFFFFFFFFF
    return [u & 0xFFFFFFFF, *words, u >> 32, int(seed < 0), 0x5EED64]


def batch_seed(seed: int, index: int) -> int:
    """Seed of batch ``index`` of a campaign with seed ``seed``: independent of scheduling.

    Every seed in ``[-2**63, 2**64 - 1]`` gives its own stream (seeds in ``[0, 2**32)`` keep the streams
    of earlier versions).
    """
    return int(np.random.SeedSequence(_entropy(seed, int(index))).generate_state(1, np.uint64)[0] >> 1)


def level_seed(seed: int, level: int) -> int:
    """Campaign seed of level ``level`` of a fidelity ladder run with seed ``seed``.

    Levels get independent streams (the MLMC terms are independent); within a level, the
    batches are seeded with :func:`batch_seed` ``(level_seed(seed, l), b)``.
    """
    state = np.random.SeedSequence(_entropy(seed, int(level), 0x1E7E1)).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def theta_seed(seed: int) -> int:
    """Seed of the parameter draws of a batch whose simulator noise is seeded with ``seed`` (a separate stream)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x7E7A]).generate_state(1, np.uint64)[0] >> 1)


class seeded:
    """Context manager: run a block with torch's, numpy's and Python's global RNGs seeded, restoring them after."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        self._np = np.random.get_state()
        np.random.seed(self.seed % (2**32))
        self._py = random.getstate()
        random.seed(self.seed)
        return self

    def __exit__(self, *exc):
        random.setstate(self._py)
        np.random.set_state(self._np)
        return self._fork.__exit__(*exc)


class Simulator:
    """A simulator with a name and a configuration.

    Arguments:
        fn: ``fn(theta) -> x`` for a plain simulator, or ``fn(theta, u) -> x`` when ``noise`` is given.
            Called on a batch ``theta (n, d_theta)``, returns ``x (n, d_x)`` (or ``(n, *event)``).
            With ``vectorized=False`` it is called on one ``theta (d_theta,)`` at a time.
        noise: ``noise(n, generator) -> u (n, *)``, the explicit noise sampler of a generator.
        name: stored with simulations; defaults to the function's qualified name.
        config: JSON-able settings that define the simulator (stored, compared on resume).
        vectorized: ``False`` to call ``fn`` on one ``theta (d_theta,)`` at a time.
        fingerprint: pin the fingerprint the store compares (default: computed from the code and the
            values it captures, see :meth:`fingerprint`).

    Example:
        >>> sim = Simulator(lambda th, u: th + 0.1 * u, noise=lambda n, g: torch.randn(n, 2, generator=g))
        >>> sim(torch.zeros(3, 2), seed=0).shape
        torch.Size([3, 2])
    """

    def __init__(self, fn: Callable, noise: Callable | None = None, name: str | None = None,
                 config: dict[str, Any] | None = None, vectorized: bool = True, fingerprint: str | None = None):
        if not callable(fn):
            raise TypeError(f"simulator must be callable, got {type(fn).__name__}")
        if noise is not None and not callable(noise):
            raise TypeError(f"noise must be callable noise(n, generator) -> Tensor, got {type(noise).__name__}")
        self.fn, self.noise, self.vectorized = fn, noise, vectorized
        self.name: str = name or cast(str, getattr(fn, "__qualname__", type(fn).__name__))
        self.config = dict(config or {})
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a string (or None to compute it), got {type(fingerprint).__name__}")
        self._fingerprint = fingerprint

    @property
    def is_generator(self) -> bool:
        return self.noise is not None

    def sample_noise(self, n: int, seed: int | torch.Generator) -> Tensor:
        if self.noise is None:
            raise ValueError(f"simulator {self.name!r} has no noise sampler; pass noise=... to Simulator")
        g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        return self.noise(n, g)

    def run(self, theta: Tensor, u: Tensor | None = None) -> Tensor:
        """Evaluate on ``theta`` (and noise ``u`` for generators), no seeding."""
        args = (theta,) if u is None else (theta, u)
        if self.vectorized:
            x = self.fn(*args)
        else:
            x = torch.stack([torch.as_tensor(self.fn(*(a[i] for a in args))) for i in range(theta.shape[0])])
        x = torch.as_tensor(x)
        if x.dim() == 0 or x.shape[0] != theta.shape[0]:
            got = f"{x.shape[0]} outputs" if x.dim() else "a scalar"
            raise ValueError(f"simulator {self.name!r} returned {got} for {theta.shape[0]} "
                             f"parameters (shape {tuple(x.shape)}); it must return one row per theta")
        return x.float() if x.dtype == torch.float64 else x

    def __call__(self, theta: Tensor, seed: int | None = None) -> Tensor:
        """Simulate ``x`` for a batch ``theta``; the same seed gives the same ``x``."""
        theta = torch.as_tensor(theta, dtype=torch.float32)
        single = theta.dim() == 1
        theta = theta.unsqueeze(0) if single else theta
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        else:
            from ..utils import check_seed

            seed = check_seed(seed)
        if self.is_generator:
            x = self.run(theta, self.sample_noise(theta.shape[0], seed))
        else:
            with seeded(seed):
                x = self.run(theta)
        return x[0] if single else x

    def fingerprint(self) -> str:
        """Hash of the simulator's code *and state*: name, configuration, source code of ``fn`` and ``noise``,
        and the values they capture (closure cells, default arguments, referenced module-level values, the
        attributes of a callable object or of the object of a bound method, the arguments of a partial).

        The simulation store compares fingerprints to refuse mixing simulators.  ``Simulator(...,
        fingerprint="...")`` pins it instead (to resume a store on purpose after a change that does not alter
        the simulations, give the fingerprint the store holds).
        """
        if self._fingerprint is not None:
            return self._fingerprint
        h = hashlib.sha256(self.code_fingerprint().encode())
        memo: dict = {}
        _canon(self.fn, h, memo, 0)
        if self.noise is not None:
            _canon(self.noise, h, memo, 0)
        return h.hexdigest()[:16]

    def code_fingerprint(self) -> str:
        """Hash of the name, configuration and source code only (the fingerprint of telescope <= 0.x stores)."""
        parts = [self.name, repr(sorted(self.config.items())), _source(self.fn), str(self.vectorized)]
        if self.noise is not None:
            parts.append(_source(self.noise))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        kind = "generator" if self.is_generator else "callable"
        return f"Simulator({self.name!r}, {kind})"


def _source(fn) -> str:
    """Source code of a function, method, partial or callable object ("" when unavailable)."""
    if isinstance(fn, functools.partial):
        return _source(fn.func) + repr(fn.args) + repr(sorted(fn.keywords.items()))
    target = fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn)
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        return getattr(target, "__qualname__", "")


_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def _canon(obj, h, memo: dict, depth: int) -> None:
    """Feed a canonical, process-independent description of ``obj`` into the hash ``h``.

    Functions contribute their code (bytecode, constants, names), closure cells, defaults and the
    module-level values they reference; callable objects and bound methods their attributes; tensors and
    arrays their dtype, shape and bytes.  Modules and classes contribute their names; cycles and depth > 6
    stop the walk.  No pickling: the result does not depend on the process, the module name or addresses.
    """
    if _canon_leaf(obj, h.update):
        return
    if id(obj) in memo or depth > 6:
        h.update(f"seen:{type(obj).__qualname__};".encode())
        return
    memo[id(obj)] = obj  # keeps obj alive: a freed temporary's id could be reused
    if not _canon_composite(obj, h, memo, depth):
        _canon_object(obj, h, memo, depth)


def _canon_leaf(obj, up) -> bool:
    """Scalars, tensors, arrays, numpy scalars, classes and modules (no recursion); False for anything else."""
    if isinstance(obj, _SCALARS):
        up(f"{type(obj).__name__}:{obj!r};".encode())
        return True
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        up(f"tensor:{t.dtype}:{tuple(t.shape)};".encode())
        up(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return True
    if isinstance(obj, np.ndarray):
        up(f"ndarray:{obj.dtype.str}:{obj.shape};".encode())
        up(np.ascontiguousarray(obj).tobytes() if obj.dtype != object else repr(obj.tolist()).encode())
        return True
    if isinstance(obj, np.generic):
        up(f"np:{obj.dtype.str}:{obj!r};".encode())
        return True
    if isinstance(obj, type) or inspect.ismodule(obj):
        up(f"ref:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))};".encode())
        return True
    return False


def _canon_composite(obj, h, memo: dict, depth: int) -> bool:
    """Containers, simulators, partials, methods and functions (recursing into their parts); False for anything else."""
    up = h.update
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        up(f"{type(obj).__name__}[{len(obj)}]:".encode())
        for v in items:
            _canon(v, h, memo, depth + 1)
        return True
    if isinstance(obj, dict):
        up(f"dict[{len(obj)}]:".encode())
        for k in sorted(obj, key=repr):
            _canon(k, h, memo, depth + 1)
            _canon(obj[k], h, memo, depth + 1)
        return True
    if isinstance(obj, Simulator):
        up(b"Simulator:")
        _canon((obj.name, obj.config, obj.vectorized, obj._fingerprint), h, memo, depth + 1)
        _canon(obj.fn, h, memo, depth + 1)
        _canon(obj.noise, h, memo, depth + 1)
        return True
    if isinstance(obj, functools.partial):
        up(b"partial:")
        _canon((obj.func, obj.args, obj.keywords), h, memo, depth + 1)
        return True
    if inspect.ismethod(obj):
        up(b"method:")
        _canon(obj.__func__, h, memo, depth + 1)
        _canon(obj.__self__, h, memo, depth + 1)
        return True
    if inspect.isfunction(obj):
        code = obj.__code__
        up(f"function:{obj.__qualname__};".encode())
        _canon_code(code, h)
        cells = [c.cell_contents if _cell_full(c) else "<empty cell>" for c in (obj.__closure__ or ())]
        _canon(cells, h, memo, depth + 1)
        _canon((obj.__defaults__, obj.__kwdefaults__), h, memo, depth + 1)
        g = obj.__globals__
        names = sorted(n for n in _code_names(code) if n in g and not n.startswith("__"))
        _canon({n: g[n] for n in names}, h, memo, depth + 1)
        return True
    return False


def _canon_object(obj, h, memo: dict, depth: int) -> None:
    """Distributions and modules (their parameters or state), routines (their name), other objects (their state
    and their class's ``__call__``)."""
    up = h.update
    if isinstance(obj, torch.distributions.Distribution) or isinstance(obj, torch.nn.Module):
        up(f"obj:{type(obj).__module__}.{type(obj).__qualname__};".encode())
        if isinstance(obj, torch.nn.Module):
            state = obj.state_dict()
        else:  # the parameters only: lazily cached properties (scale_tril, ...) must not change the hash
            from torch.distributions.utils import lazy_property

            names = [*getattr(obj, "arg_constraints", {}), "base_dist", "transforms", "low", "high"]
            lazy = {k for k in names if isinstance(inspect.getattr_static(type(obj), k, None), lazy_property)}
            state = {k: vars(obj)[k] for k in names if k in vars(obj) and k not in lazy}
            state["shapes"] = (tuple(obj.batch_shape), tuple(obj.event_shape))
        _canon(state, h, memo, depth + 1)
        return
    if inspect.isroutine(obj):  # builtins, C functions
        up(f"routine:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))};".encode())
        return
    up(f"obj:{type(obj).__module__}.{type(obj).__qualname__};".encode())
    try:
        state = vars(obj)
    except TypeError:  # no __dict__ (slots, C types): the type and its call method only
        state = {s: getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s)}
    # caches, weak references and torch's lazily made inverse transforms are not state
    _canon({k: v for k, v in state.items()
            if not (isinstance(k, str) and (k.startswith("_cache") or k == "_inv") or isinstance(v, weakref.ref))},
           h, memo, depth + 1)
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's own __call__, hashed below
    if inspect.isfunction(call):
        _canon(call, h, memo, depth + 1)


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError when the cell is empty
    except ValueError:
        return False
    return True


def _code_names(code) -> set:
    names = set(code.co_names)
    for c in code.co_consts:
        if inspect.iscode(c):
            names |= _code_names(c)
    return names


def _canon_code(code, h) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for c in code.co_consts:
        if inspect.iscode(c):
            _canon_code(c, h)
        else:
            h.update(f"{type(c).__name__}:{c!r};".encode())


def as_simulator(simulator) -> Simulator:
    """Wrap a callable (or return a :class:`Simulator` unchanged)."""
    if isinstance(simulator, Simulator):
        return simulator
    if not callable(simulator):
        raise TypeError(f"simulator must be a callable theta -> x or a telescope.Simulator, "
                        f"got {type(simulator).__name__}")
    return Simulator(simulator)
