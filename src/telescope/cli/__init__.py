"""The ``telescope`` command, one module per command.

    telescope demo [--task two_moons] [--method npe] [--n 10000] [--out telescope-report]
    telescope tasks [--regenerate NAME [--observations 1,2] [--n 10000]]
    telescope simulate TASK --n N --store PATH [--workers W] [--scheduler ADDRESS]
    telescope simulate --simulator pkg.module:function --prior pkg.module:prior --n N --store PATH
    telescope train --method npe --store PATH --prior pkg.module:prior --out DIR
    telescope sample DIR --observation x_o.npy --n 1000 --out samples.csv
    telescope store info PATH | telescope store checkpoint PATH
    telescope mlmc-test ...
    telescope bench --methods npe,nre_c --tasks two_moons --budgets 1000 [--seeds 0,1] [--out FILE] | --summary FILE

Each command module (:mod:`~telescope.cli.demo`, :mod:`~telescope.cli.tasks`,
:mod:`~telescope.cli.simulate` (with ``store``), :mod:`~telescope.cli.train`,
:mod:`~telescope.cli.sample`, :mod:`~telescope.cli.mlmc`, :mod:`~telescope.cli.bench`) has
``add_parsers(subparsers)``, which registers its subcommands with a handler ``func(args) -> exit code``.
"""

from __future__ import annotations

import argparse

from . import bench, demo, mlmc, sample, simulate, tasks, train
from ._common import fail

__all__ = ["main", "build_parser"]

#: the command modules, in the order ``telescope --help`` lists them
COMMANDS = (demo, tasks, simulate, train, sample, mlmc, bench)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    p = argparse.ArgumentParser(prog="telescope", description="Simulation-based inference for expensive simulators.")
    p.add_argument("--version", action="version", version=f"telescope {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return fail(str(e))

