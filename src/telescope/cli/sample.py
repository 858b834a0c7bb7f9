"""``telescope sample``: posterior samples of a saved estimator at an observation, as .npy, .csv or NetCDF.

    telescope sample runs/npe --observation x_o.npy --n 1000 --out samples.csv      # or .npy, .nc (ArviZ)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._common import say
from .objects import positive as _positive
from .objects import prior_from, read_array

__all__ = ["add_parsers", "cmd_sample"]


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
        from ..interop.arviz import to_inference_data

        to_inference_data(samples, x_o=x_o, prior=prior, save=path)
    else:
        raise ValueError(f"--out {str(path)!r}: unknown format {suffix!r}; expected .npy, .csv or .nc (NetCDF, "
                         f"needs ArviZ)")


def cmd_sample(args) -> int:
    from ..estimators import load

    folder = Path(args.estimator)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no trained estimator in {str(folder)!r} (config.json missing); train one with "
                                f"'telescope train ... --out {folder}'")
    if args.prior or args.task:
        prior, _ = prior_from(args)
    elif (folder / "prior.json").exists():
        spec = json.loads((folder / "prior.json").read_text())
        prior, _ = prior_from(argparse.Namespace(task=spec.get("task"), prior=spec.get("prior")))
    else:
        raise ValueError(f"{str(folder)!r} has no prior.json: pass --prior package.module:prior or --task NAME")
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".csv", ".nc", ".netcdf"):
        raise ValueError(f"--out {str(out)!r}: unknown format {out.suffix!r}; expected .npy, .csv or .nc")
    est = load(folder, prior)
    x_o = read_array(args.observation, "--observation")
    say(f"sampling {args.n} draws from {type(est).__name__} for an observation of shape {tuple(x_o.shape)}",
        args.quiet, err=True)
    t0 = time.perf_counter()
    kwargs = {"seed": args.seed}
    if type(est).__name__ in ("NLE", "NRE", "NPSE"):
        kwargs["progress_bar"] = not args.quiet
    samples = est.sample(x_o, args.n, **kwargs)
    _write_samples(samples, out, x_o, prior)
    say(f"{samples.shape[0]} samples in {time.perf_counter() - t0:.1f} s written to {out}", args.quiet, err=True)
    return 0


def add_parsers(subparsers) -> None:
    """Register ``sample`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
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
