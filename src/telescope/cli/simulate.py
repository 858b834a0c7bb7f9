"""``telescope simulate`` and ``telescope store``: run a simulation campaign into a store, inspect the store.

``add_parsers(subparsers)`` registers them on an argparse subparsers object; each parser sets
``func`` to a handler taking the parsed arguments and returning an exit code::

    telescope simulate two_moons --n 10000 --store runs/x --workers 4 [--timeout 60]
    telescope simulate two_moons --n 10000 --store runs/x --scheduler tcp://10.0.0.1:8786
    telescope store info runs/x [--json]
    telescope store checkpoint runs/x      # fold the write-ahead log into the .sqlite file (before copying it)
"""

from __future__ import annotations

import json
import sys

from ._common import fail as _fail
from .objects import load_object, load_prior

__all__ = ["add_parsers", "cmd_simulate", "cmd_store_checkpoint", "cmd_store_info", "format_info"]


def add_parsers(subparsers) -> None:
    """Register ``simulate`` and ``store info`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "simulate", help="run (or resume) a simulation campaign of a task into a store",
        description="Simulate n parameters of a task's prior into an on-disk store. Running the same "
                    "command again resumes an interrupted campaign; the data depend only on --seed, --n "
                    "and --batch-size, whatever the workers or scheduler.")
    p.add_argument("task", nargs="?", help="task name (see telescope.tasks.list()); or --simulator and --prior")
    p.add_argument("--simulator", help="your simulator as package.module:function (theta (n, d) -> x (n, ...))")
    p.add_argument("--prior", help="your prior as package.module:attribute (a torch Distribution or a function "
                                   "returning one), with --simulator")
    p.add_argument("--n", type=int, required=True, help="number of simulations")
    p.add_argument("--store", required=True, help="store directory (created if missing), e.g. runs/x")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: this process)")
    p.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--batch-size", type=int, default=1000, help="simulations per batch (default 1000)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per simulation; one that runs longer is recorded as failed (needs --workers or "
                        "--scheduler)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_simulate)

    s = subparsers.add_parser("store", help="inspect simulation stores",
                              description="Inspect simulation stores written by simulate.")
    ss = s.add_subparsers(dest="store_command", metavar="{info,checkpoint}")
    ss.required = True
    i = ss.add_parser("info", help="size, levels, failures, simulator and seeds of a store")
    i.add_argument("path", help="store directory or .sqlite file")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_store_info)
    c = ss.add_parser("checkpoint", help="move the write-ahead log into the .sqlite file (then the file alone "
                                         "holds the store and can be copied)")
    c.add_argument("path", help="store directory or .sqlite file")
    c.set_defaults(func=cmd_store_checkpoint)


def cmd_simulate(args) -> int:
    import warnings

    from .. import tasks
    from ..simulation.campaign import failure_message, run_campaign

    if args.scheduler and args.workers != 1:
        print("telescope: note: --workers is ignored with --scheduler (the Dask cluster's workers run the batches)",
              file=sys.stderr)
    try:
        if args.simulator or args.prior:
            if args.task or not (args.simulator and args.prior):
                raise ValueError("give a task name, or --simulator package.module:function together with --prior "
                                 "package.module:prior (not both)")
            simulator, prior = load_object(args.simulator, "--simulator"), load_prior(args.prior)
            if not callable(simulator):
                raise ValueError(f"--simulator {args.simulator!r} is a {type(simulator).__name__}, not a function")
            args.task = args.simulator
        elif not args.task:
            raise ValueError("give a task name (telescope tasks lists them) or --simulator and --prior")
        else:
            task = tasks.get(args.task)
            simulator, prior = task.simulator, task.prior
        data = run_campaign(simulator, prior, args.n, seed=args.seed, batch_size=args.batch_size,
                            store=args.store, workers=1 if args.scheduler else args.workers,
                            scheduler=args.scheduler, progress_bar=not args.quiet, timeout=args.timeout)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        return _fail(str(e))
    s = data["summary"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        print(f"{args.task}: {s['n']} simulations in {args.store} ({s['n_simulated']} simulated now, "
              f"{s['n_resumed']} already stored) in {s['seconds']:.1f} s with backend {s['backend']}")
    if s["n_failed"]:
        print(failure_message(s))
    return 0


def format_info(info: dict) -> str:
    """Human-readable text of :func:`telescope.simulation.store.store_info`."""
    lines = [f"store      {info['path']}",
             f"file       {info['file']} ({_size(info['size_bytes'])}, {info['format']})",
             f"kind       {info['kind']}() campaign, seed {info['seed']}, written by telescope "
             f"{info['telescope_version']} on {info['created']}",
             f"prior      {info['prior']['repr']} (fingerprint {info['prior']['fingerprint']})",
             f"x shape    {info['x_event_shape']} per simulation"]
    for lv in info["levels"]:
        cost = lv["seconds_per_simulation"]
        lines.append(
            f"level {lv['level']}    {lv['simulator']} (fingerprint {lv['fingerprint']}): "
            f"{lv['n_stored']}/{lv['n_target']} simulations, {lv['batches_stored']}/{lv['batches_target']} batches "
            f"of {lv['batch_size']}, {lv['n_failed']} failed, seed {lv['seed']}"
            + (f", {cost * 1e3:.3g} ms per simulation" if cost else ""))
    if info["failures"]:
        lines.append("failures   (first ones)")
        lines += [f"  level {f['level']} batch {f['batch']} row {f['row']}: {f['error']}" for f in info["failures"]]
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def cmd_store_info(args) -> int:
    from ..simulation.store import store_info

    try:
        info = store_info(args.path)
    except (ValueError, OSError, RuntimeError) as e:
        return _fail(str(e))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_store_checkpoint(args) -> int:
    from ..simulation.store import checkpoint

    try:
        res = checkpoint(args.path)
    except (ValueError, OSError, RuntimeError) as e:
        return _fail(str(e))
    print(f"{res['file']}: {res['checkpointed']} write-ahead log pages moved into the file; it now holds the "
          f"whole store")
    return 0
