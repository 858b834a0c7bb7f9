"""Summaries of a results file: mean and sd over seeds, a plain-text table, metric-vs-budget figures."""

from __future__ import annotations

import statistics
from pathlib import Path

from .grid import METRICS

__all__ = ["summary", "summary_table", "plot"]


def summary(rows: list[dict], metrics=METRICS) -> list[dict]:
    """Mean and sd over seeds of each metric (already averaged over observations) and of the wall times."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["cell"]
        groups.setdefault((c["task"], c["method"], c["budget"], c["n_obs"]), []).append(r)
    out = []
    for (task, method, budget, n_obs), rs in sorted(groups.items()):
        ok = [r for r in rs if "error" not in r]
        row = {"task": task, "method": method, "budget": budget, "n_obs": n_obs, "seeds": len(ok),
               "errors": len(rs) - len(ok)}
        for m in (*metrics, "train_s", "sample_s"):
            vals = [r[m] for r in ok if m in r]
            if vals:
                row[m] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        out.append(row)
    return out


def summary_table(rows: list[dict], metrics=METRICS) -> str:
    """A plain-text table of :func:`summary` (``mean ± sd`` over seeds)."""
    stats = summary(rows, metrics)
    cols = [m for m in (*metrics, "train_s", "sample_s") if any(m in s for s in stats)]
    head = ["task", "method", "budget", "n_obs", "seeds"] + cols
    lines = []
    for s in stats:
        cells_ = [s["task"], s["method"], str(s["budget"]), str(s["n_obs"]),
                  str(s["seeds"]) + (f" ({s['errors']} err)" if s["errors"] else "")]
        cells_ += [f"{s[m][0]:.3f} ± {s[m][1]:.3f}" if m in s else "-" for m in cols]
        lines.append(cells_)
    widths = [max(len(h), *(len(line[k]) for line in lines)) if lines else len(h) for k, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])


def plot(rows: list[dict], out_dir, metrics=METRICS) -> list[Path]:
    """One PNG per task: each metric against the budget (log axis), one line per method (and n_obs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = summary(rows, metrics)
    paths = []
    for task in sorted({s["task"] for s in stats}):
        st = [s for s in stats if s["task"] == task]
        shown = [m for m in metrics if any(m in s for s in st)]
        if not shown:
            continue
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.3), squeeze=False)
        for ax, m in zip(axes[0], shown):
            for method, n_obs in sorted({(s["method"], s["n_obs"]) for s in st}):
                pts = sorted((s["budget"], *s[m]) for s in st if s["method"] == method and s["n_obs"] == n_obs
                             and m in s)
                if pts:
                    b, mu, sd = zip(*pts)
                    label = method + (f" (n_obs={n_obs})" if n_obs > 1 else "")
                    ax.errorbar(b, mu, yerr=sd, marker="o", capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_xlabel("simulations")
            ax.set_ylabel(m)
            if m == "c2st":
                ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(task)
        fig.tight_layout()
        path = out_dir / f"{task}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
