"""Benchmark tasks: ``telescope.tasks.get(name)`` and ``telescope.tasks.list()``."""

from __future__ import annotations

from .base import Task, cache_dir

__all__ = ["Task", "get", "list", "register", "cache_dir"]

_REGISTRY: dict = {}
_SHIMS = {"g_and_k_ladder"}  # deprecated module paths, not tasks


def register(name: str):
    """Class decorator adding a Task subclass to the registry under ``name``."""

    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and mod.name not in _SHIMS:
            importlib.import_module(f"{__name__}.{mod.name}")


def list() -> list:  # noqa: A001 - public name from the design
    """Names of the available tasks."""
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> Task:
    """The task called ``name`` (keyword arguments go to its constructor)."""
    _load_builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
