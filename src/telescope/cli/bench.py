"""``telescope bench``: the benchmark grid (see :mod:`telescope.bench`).

    telescope bench --methods npe,nre_c --tasks two_moons,slcp --budgets 1000,10000 --seeds 0,1 \\
        --observations 1-3 --out runs/bench/results.jsonl [--plot runs/bench/plots]
    telescope bench --summary runs/bench/results.jsonl [--plot DIR]
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parsers"]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _json(name: str, text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{name} takes JSON such as '{{\"npse_jac\": {{\"steps\": 250}}}}', got {text!r} ({e})") from None


def _ints(name: str, text: str) -> list[int]:
    """``"1,2,5"``, ``"1-3"``, ``"1e3,1e4"`` -> integers; anything else is a clear error."""
    out: list[int] = []
    for part in _names(text):
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo:
                out.extend(range(int(lo), int(hi) + 1))
                continue
            v = float(part)
        except ValueError:
            raise ValueError(f"--{name} takes integers such as 1,2,5 or 1-3, got {part!r}") from None
        if v != int(v):
            raise ValueError(f"--{name} takes integers, got {part!r}")
        out.append(int(v))
    return out


def cmd_bench(args) -> int:
    import torch

    from .. import bench

    torch.set_num_threads(args.threads)
    if args.summary:
        spec, rows = bench.read_results(args.summary)
        metrics = spec["metrics"] if spec else bench.METRICS
        print(bench.summary_table(rows, metrics))
        if args.plot:
            for p in bench.plot(rows, args.plot, metrics):
                print(f"[bench] wrote {p}")
        return 0
    missing = [f"--{k}" for k in ("methods", "tasks", "budgets") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"telescope bench needs {', '.join(missing)} (or --summary FILE); methods: "
                         f"{', '.join(bench.METHODS)}")
    budgets = _ints("budgets", args.budgets)
    spec = bench.make_spec(methods=_names(args.methods), tasks=_names(args.tasks), budgets=budgets,
                           seeds=_ints("seeds", args.seeds), observations=_ints("observations", args.observations),
                           n_obs=_ints("n-obs", args.n_obs), metrics=_names(args.metrics), samples=args.samples,
                           c2st_max_samples=args.c2st_max_samples, max_epochs=args.max_epochs,
                           max_time=args.max_time, sample_options=_json("sample-options", args.sample_options),
                           fit_options=_json("fit-options", args.fit_options),
                           observation_set=args.observation_set)
    rows = bench.run(spec, args.out, max_cells=args.max_cells, retry_errors=args.retry_errors, quiet=args.quiet)
    print(bench.summary_table(rows, spec["metrics"]))
    if spec.get("observation_sets"):
        print(f"observations and references from sbibm's stored files for: {', '.join(spec['observation_sets'])}")
    if args.plot:
        for p in bench.plot(rows, args.plot, spec["metrics"]):
            print(f"[bench] wrote {p}")
    return 0


def add_parsers(subparsers) -> None:
    """Register ``bench`` on ``subparsers`` (from ``ArgumentParser.add_subparsers()``)."""
    from ..bench import DEFAULT_METRICS, METHODS, METRICS

    p = subparsers.add_parser(
        "bench", help="benchmark grid: methods x tasks x budgets x seeds (x n_obs); resumable JSON-lines results",
        description="Train each method on each task, simulation budget and seed; score posterior samples "
                    "against the reference (C2ST, MMD, sliced Wasserstein, NLPD) with wall times. One JSON "
                    "line per finished cell: rerun the same command to resume. --summary prints mean ± sd "
                    "over seeds; --plot draws metric against budget per task.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--tasks", help="comma-separated task names (telescope tasks lists them)")
    p.add_argument("--budgets", help="simulation budgets, e.g. 1000,10000 or 1e3,1e4")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1 or 0-4")
    p.add_argument("--observations", default="1-10", help="observation indices, e.g. 1-3 or 1,4")
    p.add_argument("--observation-set", choices=("sbibm", "telescope"), default="sbibm",
                   help="sbibm: sir and bernoulli_glm(_raw) use sbibm's stored observations and references "
                        "(like for like with published numbers); telescope: the library's own draws")
    p.add_argument("--n-obs", default="1", help="iid observations per posterior (tall data), e.g. 1,8,30")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from: {', '.join(METRICS)} (coverage: opt in, 200 extra posteriors per cell)")
    p.add_argument("--samples", type=int, default=10_000, help="posterior and reference samples per observation")
    p.add_argument("--c2st-max-samples", type=int, default=None, help="subsample both sides for C2ST (faster)")
    p.add_argument("--max-epochs", type=int, default=None, help="training epoch cap (default: the library's)")
    p.add_argument("--max-time", type=float, default=None, help="training time cap per cell in seconds")
    p.add_argument("--sample-options", default=None, metavar="JSON",
                   help='sample() arguments per method, e.g. \'{"npse_jac": {"steps": 250}}\'')
    p.add_argument("--fit-options", default=None, metavar="JSON",
                   help='estimator and fit() arguments per method, e.g. \'{"nre_c": {"K": 49, "width": 128}}\'')
    p.add_argument("--out", default="runs/bench/results.jsonl", help="results file (appended; resumable)")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    p.add_argument("--retry-errors", action="store_true", help="recompute cells recorded with an error")
    p.add_argument("--summary", metavar="FILE", help="print the summary table of a results file and exit")
    p.add_argument("--plot", metavar="DIR", help="write one metric-vs-budget PNG per task to DIR")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_bench)
