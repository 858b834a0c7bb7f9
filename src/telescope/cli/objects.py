"""User objects, priors and arrays named on the command line (``package.module:attribute``, files).

``module:attribute`` names are imported with the current directory on the path; a prior attribute
may be a torch Distribution or a function returning one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

__all__ = ["load_object", "load_prior", "prior_from", "read_array", "positive"]


def load_object(spec: str, what: str):
    """The object named ``package.module:attribute`` (dots after the colon reach nested attributes)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{what} must be given as package.module:attribute (e.g. mypkg.model:simulate), got {spec!r}")
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not put the current directory on the path
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{what} {spec!r}: cannot import module {module_name!r} ({e}); run from the folder that "
                         f"holds it or install it") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_prior(spec: str):
    """A torch Distribution from ``module:attribute`` (a distribution, or a function without arguments returning one)."""
    import torch

    obj = load_object(spec, "--prior")
    if not isinstance(obj, torch.distributions.Distribution) and callable(obj):
        obj = obj()
    if not isinstance(obj, torch.distributions.Distribution):
        raise ValueError(f"--prior {spec!r} is a {type(obj).__name__}, expected a torch Distribution (or a function "
                         f"returning one)")
    return obj


def prior_from(args) -> tuple:
    """``(prior, how to rebuild it)`` from ``args.task`` or ``args.prior`` (exactly one of them)."""
    from .. import tasks

    if getattr(args, "task", None) and getattr(args, "prior", None):
        raise ValueError("give --task or --prior, not both")
    if getattr(args, "task", None):
        return tasks.get(args.task).prior, {"task": args.task}
    if getattr(args, "prior", None):
        return load_prior(args.prior), {"prior": args.prior}
    raise ValueError("the prior is needed: pass --prior package.module:prior (or --task NAME for a built-in task)")


def read_array(path: str, what: str):
    """A float32 tensor from ``.npy``, ``.pt``, ``.csv``/``.txt`` (comma separated) or ``.json``."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".pt":
            arr = torch.load(p, weights_only=True)
        elif suffix in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=1)
        elif suffix == ".json":
            arr = np.asarray(json.loads(p.read_text()), dtype=np.float64)
        else:
            raise ValueError(f"{what} file {str(p)!r}: unknown format {suffix!r}; expected .npy, .pt, .csv, .txt "
                             f"or .json")
        return torch.as_tensor(np.asarray(arr) if not isinstance(arr, torch.Tensor) else arr, dtype=torch.float32)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        if "unknown format" in str(e):
            raise
        raise ValueError(f"{what} file {str(p)!r} could not be read as numbers: {e}") from None


def positive(name: str, kind=int):
    """An argparse ``type`` accepting numbers > 0 of ``kind``; errors name the option."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {'whole' if kind is int else ''} number > 0, got "
                                             f"{text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text!r}")
        return v

    return parse
