"""``telescope train``: train an estimator on simulations (a store or a .pt file) and save it.

    telescope train --method npe --store runs/sims --prior mypkg.model:prior --out runs/npe

``--task NAME`` replaces ``--prior`` for the built-in tasks.  ``train`` saves the estimator
(``config.json``, ``weights.pt``) and how to rebuild its prior (``prior.json``) in ``--out``, so
``telescope sample`` needs only that folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._common import say
from .objects import positive as _positive
from .objects import prior_from

__all__ = ["add_parsers", "cmd_train", "METHODS"]

METHODS = {"npe": "NPE", "nle": "NLE", "nre": "NRE", "npse": "NPSE"}


def _read_data(args):
    import torch

    from ..simulation.store import load_simulations

    if bool(args.store) == bool(args.data):
        raise ValueError("give the simulations as --store PATH (a telescope simulate store) or --data FILE.pt "
                         "(a dict with 'theta' and 'x', or a (theta, x) pair), one of them")
    if args.store:
        return load_simulations(args.store)
    if not Path(args.data).exists():
        raise FileNotFoundError(f"--data file {args.data!r} does not exist")
    obj = torch.load(args.data, weights_only=True)
    if isinstance(obj, dict) and {"theta", "x"} <= set(obj):
        return obj["theta"], obj["x"]
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    raise ValueError(f"--data {args.data!r} must hold a dict with keys 'theta' and 'x' or a (theta, x) pair, got "
                     f"{type(obj).__name__}")


def _options(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--option must be key=value (e.g. transforms=5), got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args) -> int:
    import telescope as ts

    prior, prior_spec = prior_from(args)
    theta, x = _read_data(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {str(out)!r} exists and is not empty; pass --overwrite to replace it")
    est = getattr(ts, METHODS[args.method])(prior, seed=args.seed, **_options(args.option))
    train = {k: v for k, v in (("max_epochs", args.max_epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                ("max_time", args.max_time)) if v is not None}
    say(f"training {METHODS[args.method]} on {theta.shape[0]} simulations (theta {tuple(theta.shape[1:])}, "
        f"x {tuple(x.shape[1:])})", args.quiet, err=True)
    t0 = time.perf_counter()
    est.fit(theta, x, progress_bar=not args.quiet, **train)
    est.save(out)
    (out / "prior.json").write_text(json.dumps(prior_spec))
    epochs = len(est.history.get("train_loss", [])) if isinstance(est.history, dict) else 0
    say(f"trained in {time.perf_counter() - t0:.1f} s ({epochs} epochs); saved to {out}", args.quiet, err=True)
    return 0


def add_parsers(subparsers) -> None:
    """Register ``train`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    t = subparsers.add_parser(
        "train", help="train an estimator on simulations (a store or a .pt file) and save it",
        description="Train NPE, NLE, NRE or NPSE on simulations and save it (with how to rebuild its prior) to "
                    "--out, for 'telescope sample'.")
    t.add_argument("--method", choices=sorted(METHODS), required=True, help="estimator")
    t.add_argument("--store", help="simulations: a store written by 'telescope simulate'")
    t.add_argument("--data", help="simulations: a .pt file with {'theta': (n, d), 'x': (n, ...)}")
    t.add_argument("--prior", help="the prior as package.module:attribute")
    t.add_argument("--task", help="a built-in task whose prior to use (instead of --prior)")
    t.add_argument("--out", required=True, help="output folder for the trained estimator")
    t.add_argument("--max-epochs", type=_positive("--max-epochs"), default=None)
    t.add_argument("--batch-size", type=_positive("--batch-size"), default=None)
    t.add_argument("--lr", type=_positive("--lr", float), default=None, help="learning rate")
    t.add_argument("--max-time", type=_positive("--max-time", float), default=None, help="training time limit (s)")
    t.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="estimator setting, e.g. --option transforms=5 --option hidden=[128,128] (repeatable)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    t.add_argument("--quiet", action="store_true", help="no progress")
    t.set_defaults(func=cmd_train)
