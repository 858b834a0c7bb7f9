"""The pipeline commands together, ``telescope train`` and ``telescope sample`` (formerly ``telescope.cli_pipeline``).

The whole pipeline on the command line (simulate -> train -> sample)::

    telescope simulate --simulator mypkg.model:simulate --prior mypkg.model:prior --n 10000 --store runs/sims
    telescope train --method npe --store runs/sims --prior mypkg.model:prior --out runs/npe
    telescope sample runs/npe --observation x_o.npy --n 1000 --out samples.csv      # or .npy, .nc (ArviZ)
"""

from __future__ import annotations

from . import sample, train
from .objects import load_object, load_prior, read_array
from .sample import cmd_sample
from .train import METHODS, cmd_train

__all__ = ["add_parsers", "cmd_train", "cmd_sample", "load_object", "load_prior", "read_array", "METHODS"]


def add_parsers(subparsers) -> None:
    """Register ``train`` and ``sample`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    train.add_parsers(subparsers)
    sample.add_parsers(subparsers)
