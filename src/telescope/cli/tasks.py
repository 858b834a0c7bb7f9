"""``telescope tasks``: list the benchmark tasks, or regenerate a cached reference posterior.

    telescope tasks [--regenerate NAME [--observations 1,2] [--n 10000]]
"""

from __future__ import annotations

import sys
import time

from ._common import say as _say

__all__ = ["add_parsers", "cmd_tasks"]


def cmd_tasks(args) -> int:
    from .. import tasks

    if args.regenerate:
        from ..tasks._benchmark import regenerate

        task = tasks.get(args.regenerate)  # unknown names: ValueError listing the tasks
        if task.reference_kind is None:
            raise ValueError(f"task {task.name!r} has no reference posterior to regenerate")
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        obs = range(1, task.num_observations + 1) if args.observations == "all" else \
            [int(v) for v in args.observations.split(",")]
        for i in obs:
            t0 = time.perf_counter()
            try:
                regenerate(task, i, args.n)
            except RuntimeError as e:  # failed convergence checks: nothing was cached
                print(f"telescope: error: {e}", file=sys.stderr)
                return 1
            diag = getattr(task, "diagnostics", {}) or {}
            extra = f", max rhat = {float(diag['rhat'].max()):.4f}" if "rhat" in diag else ""
            extra += f", min ESS = {float(diag['ess'].min()):.0f}" if "ess" in diag else ""
            _say(f"{task.name}: reference for observation {i} ({args.n} samples) in "
                 f"{time.perf_counter() - t0:.0f} s{extra}")
        return 0
    for name in tasks.list():
        t = tasks.get(name)
        print(f"{name:26s} dim_theta={t.dim_theta:<3d} dim_x={t.dim_x:<4d} reference={t.reference_kind}")
    return 0


def add_parsers(subparsers) -> None:
    """Register ``tasks`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    t = subparsers.add_parser("tasks", help="list the benchmark tasks (or regenerate a cached reference posterior)")
    t.add_argument("--regenerate", metavar="NAME", help="recompute and re-cache the reference posterior of task NAME")
    t.add_argument("--observations", default="all", help="with --regenerate: 'all' or a list such as 1,2,5")
    t.add_argument("--n", type=int, default=10_000, help="with --regenerate: reference samples per observation")
    t.set_defaults(func=cmd_tasks)
