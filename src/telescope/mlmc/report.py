"""What an MLMC test result reports: its headline numbers, and the result written as JSON with its figure.

Example:
    >>> r = {"convergence": {"alpha": 1.0, "beta": 2.0, "gamma": 1.0, "start_level": 0, "fit_levels": [1, 2]},
    ...      "complexity": {"eps": [0.1], "savings": [3.0], "mlmc_cost": [10.0], "std_cost": [30.0], "N": [[5, 2]],
    ...                     "levels": [[0, 1]], "rmse": [0.09]}}
    >>> summary(r)["savings"], summary(r)["rmse_est"]
    ([3.0], [0.09])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

__all__ = ["summary", "save_result"]


def summary(result: dict) -> dict:
    """The headline numbers of an :func:`telescope.mlmc.mlmc_test` result."""
    conv, comp = result["convergence"], result["complexity"]
    return {
        "alpha": conv["alpha"], "beta": conv["beta"], "gamma": conv["gamma"],
        "start_level": conv["start_level"], "fit_levels": conv["fit_levels"],
        "eps": comp["eps"], "savings": comp["savings"], "mlmc_cost": comp["mlmc_cost"],
        "std_cost": comp["std_cost"], "N": comp["N"], "levels": comp["levels"], "rmse_est": comp["rmse"],
    }


def save_result(result: dict, out_dir, name: str, title: str, log: Callable[[str], None] = print) -> dict:
    """Write ``<name>.json`` (the result) and ``<name>.png`` (its Figure-3 panels) to ``out_dir``; returns both paths."""
    from ..plots.mlmc import plot_mlmc

    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{name}.png")
    plot_mlmc(result, path=png, title=title)
    js = os.path.join(out_dir, f"{name}.json")
    with open(js, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {js} and {png}")
    return {"json": js, "png": png}
