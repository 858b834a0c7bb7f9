"""Are sbibm's stored observations draws of OUR simulators, and its references our posteriors? (issue 21)

For each of the seven tasks that gained sbibm's files, prints one JSON line:

* ``loglik_percentile``: per observation 1-10, 4,000 simulations at sbibm's true parameters with our simulator;
  the fraction whose log-likelihood (ours, exact) is below that of sbibm's stored observation (should look
  uniform, never extreme);
* ``reference_vs_exact`` (two_moons, gaussian_mixture, gaussian_linear, gaussian_linear_uniform, where this library
  samples the posterior exactly): max over coordinates of |mean difference| / sd and |sd ratio - 1| between
  sbibm's reference and ours at sbibm's observation;
* slcp_distractors: whether our redrawn permutation equals sbibm's stored one and the stored observations hold
  SLCP's at the permuted places.

``python benchmarks/sbibm_conventions.py`` (about a minute on one core).  tests/test_tasks_sbibm.py checks the
same things, and SLCP's conditional law and Lotka-Volterra's importance sampling, at fixed tolerances.
"""

import json

import torch

import telescope as ts
from telescope.tasks._sbibm import data_dir

EXACT = ("two_moons", "gaussian_mixture", "gaussian_linear", "gaussian_linear_uniform")


def loglik(task, theta, xs):
    """Our exact ``log p(x | theta)`` for one ``theta`` and many ``x`` ``(m, dim_x)``."""
    if task.name == "lotka_volterra":
        return task._ll_given(task.log_means(theta[None].double()), xs.double())
    if task.name == "slcp_distractors":
        inf, d = task.split(xs.double())
        return task.slcp._ll64(theta.double().expand(xs.shape[0], -1), inf) + task.distractor_log_density(d)
    return task.log_likelihood(theta.double().expand(xs.shape[0], -1), xs.double()).double()


def main():
    for name in (*EXACT, "slcp", "slcp_distractors", "lotka_volterra"):
        task = ts.tasks.get(name)
        pct, ref_cmp = [], []
        for i in range(1, 11):
            theta, x_o = task.true_parameters(i), task.observation(i)
            xs = task.simulator(theta.expand(4000, -1).clone(), seed=100 + i)
            ll_o = loglik(task, theta, x_o[None])[0]
            pct.append(round(float((loglik(task, theta, xs) < ll_o).double().mean()), 3))
            if name in EXACT:
                ref = task.reference_samples(i, 10_000).double()
                own = task._reference(x_o, 20_000, seed=i).double()
                ref_cmp.append([round(float(((ref.mean(0) - own.mean(0)).abs() / own.std(0)).max()), 3),
                                round(float((ref.std(0) / own.std(0) - 1).abs().max()), 3)])
        out = {"task": name, "loglik_percentile": pct}
        if ref_cmp:
            out["reference_vs_exact"] = ref_cmp
        if name == "slcp_distractors":
            slcp = ts.tasks.get("slcp")
            stored = torch.load(data_dir("slcp") / "permutation_idx.torch", weights_only=True)
            out["permutation_is_sbibms"] = bool(torch.equal(task.permutation, stored))
            out["informative_is_slcp_observation"] = all(
                torch.equal(task.split(task.observation(i))[0], slcp.observation(i)) for i in range(1, 11))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
