"""The ``telescope train`` and ``telescope sample`` subcommands, and loading user objects by name.

The whole pipeline on the command line (simulate -> train -> sample)::

    telescope simulate --simulator mypkg.model:simulate --prior mypkg.model:prior --n 10000 --store runs/sims
    telescope train --method npe --store runs/sims --prior mypkg.model:prior --out runs/npe
    telescope sample runs/npe --observation x_o.npy --n 1000 --out samples.csv      # or .npy, .nc (ArviZ)

``--task NAME`` replaces ``--prior`` (and ``--simulator``) for the built-in tasks.  ``train`` saves the
estimator (``config.json``, ``weights.pt``) and how to rebuild its prior (``prior.json``) in ``--out``, so
``sample`` needs only that folder.  ``module:attribute`` names are imported with the current directory
on the path; a prior attribute may be a torch Distribution or a function returning one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["add_parsers", "cmd_train", "cmd_sample", "load_object", "load_prior", "read_array"]

METHODS = {"npe": "NPE", "nle": "NLE", "nre": "NRE", "npse": "NPSE"}


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[telescope] {msg}", file=sys.stderr, flush=True)


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


def _prior_from(args):
    from . import tasks

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


def _read_data(args):
    import torch

    from .store import load_simulations

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

    prior, prior_spec = _prior_from(args)
    theta, x = _read_data(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {str(out)!r} exists and is not empty; pass --overwrite to replace it")
    est = getattr(ts, METHODS[args.method])(prior, seed=args.seed, **_options(args.option))
    train = {k: v for k, v in (("max_epochs", args.max_epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                ("max_time", args.max_time)) if v is not None}
    _say(f"training {METHODS[args.method]} on {theta.shape[0]} simulations (theta {tuple(theta.shape[1:])}, "
         f"x {tuple(x.shape[1:])})", args.quiet)
    t0 = time.perf_counter()
    est.fit(theta, x, progress_bar=not args.quiet, **train)
    est.save(out)
    (out / "prior.json").write_text(json.dumps(prior_spec))
    epochs = len(est.history.get("train_loss", [])) if isinstance(est.history, dict) else 0
    _say(f"trained in {time.perf_counter() - t0:.1f} s ({epochs} epochs); saved to {out}", args.quiet)
    return 0


def _write_samples(samples, path: Path, x_o, prior) -> None:
    import numpy as np

    suffix = path.suffix.lower()
    arr = samples.detach().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".csv":
        header = ",".join(f"theta_{i}" for i in range(arr.shape[1]))
        np.savetxt(path, arr, delimiter=",", header=header, comments="")
    elif suffix in (".nc", ".netcdf"):
        from .interop.arviz import to_inference_data

        to_inference_data(samples, x_o=x_o, prior=prior, save=path)
    else:
        raise ValueError(f"--out {str(path)!r}: unknown format {suffix!r}; expected .npy, .csv or .nc (NetCDF, "
                         f"needs ArviZ)")


def cmd_sample(args) -> int:
    from .estimators import load

    folder = Path(args.estimator)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no trained estimator in {str(folder)!r} (config.json missing); train one with "
                                f"'telescope train ... --out {folder}'")
    if args.prior or args.task:
        prior, _ = _prior_from(args)
    elif (folder / "prior.json").exists():
        spec = json.loads((folder / "prior.json").read_text())
        prior, _ = _prior_from(argparse.Namespace(task=spec.get("task"), prior=spec.get("prior")))
    else:
        raise ValueError(f"{str(folder)!r} has no prior.json: pass --prior package.module:prior or --task NAME")
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".csv", ".nc", ".netcdf"):
        raise ValueError(f"--out {str(out)!r}: unknown format {out.suffix!r}; expected .npy, .csv or .nc")
    est = load(folder, prior)
    x_o = read_array(args.observation, "--observation")
    _say(f"sampling {args.n} draws from {type(est).__name__} for an observation of shape {tuple(x_o.shape)}",
         args.quiet)
    t0 = time.perf_counter()
    kwargs = {"seed": args.seed}
    if type(est).__name__ in ("NLE", "NRE", "NPSE"):
        kwargs["progress_bar"] = not args.quiet
    samples = est.sample(x_o, args.n, **kwargs)
    _write_samples(samples, out, x_o, prior)
    _say(f"{samples.shape[0]} samples in {time.perf_counter() - t0:.1f} s written to {out}", args.quiet)
    return 0


def _positive(name: str, kind=int):
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


def add_parsers(subparsers) -> None:
    """Register ``train`` and ``sample`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
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

    s = subparsers.add_parser(
        "sample", help="draw posterior samples from a saved estimator for an observation",
        description="Load an estimator saved by 'telescope train', sample its posterior at an observation and "
                    "write the samples as .npy, .csv or NetCDF (.nc, an ArviZ InferenceData).")
    s.add_argument("estimator", help="folder written by 'telescope train'")
    s.add_argument("--observation", required=True, help="observation file: .npy, .pt, .csv, .txt or .json")
    s.add_argument("--n", type=_positive("--n"), default=1000, help="number of samples (default 1000)")
    s.add_argument("--out", required=True, help="output file: .npy, .csv or .nc")
    s.add_argument("--prior", help="override the prior recorded at training (package.module:attribute)")
    s.add_argument("--task", help="override the prior with a built-in task's")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress")
    s.set_defaults(func=cmd_sample)
