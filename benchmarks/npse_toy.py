"""Section 4.1 of Linhart et al. (2024): GAUSS, JAC and F-NPSE (LANGEVIN) on toy models with known scores.

Two simulators with prior N(0, I_m), m = 10 (paper, Section 4.1 and Appendix D):

* ``gaussian``: x | theta ~ N(theta, (1 - rho) I + rho 11^T), rho = 0.8 — the tall posterior is Gaussian;
* ``gmm``: x | theta ~ 0.5 N(theta, 2.25 S) + 0.5 N(theta, S / 9), S diagonal from 0.6 to 1.4 — the
  diffused single posteriors are two-component mixtures (Tweedie's Gaussian approximation is not
  exact), and the tall reference comes from MALA on the exact tall log density.

The "network" is the exact diffused posterior noise prediction plus ``epsilon`` times a fixed random
network with outputs in [-1, 1] (an error of ``epsilon`` on the noise predictor).  Its Jacobian is
exact too (JAC uses it instead of autograd, which only changes the speed).

Outputs (JSON on stdout and in ``--out``):

* ``table1``: Table 1 — n = 32, epsilon = 1e-2, steps 50 / 150 / 400 / 1000 with eta 0.2 / 0.5 / 0.8 / 1;
  wall time and sliced Wasserstein (mean and std over seeds) per method;
* ``figure2``: sliced Wasserstein against the number of observations n per method and epsilon
  (Fig. 2), also drawn to ``--plot`` when given.

Examples::

    python benchmarks/npse_toy.py --table --seeds 5                    # Table 1 (long on a CPU)
    python benchmarks/npse_toy.py --figure --seeds 2 --plot fig2.png    # Fig. 2
    python benchmarks/npse_toy.py --table --figure --quick             # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import torch

from telescope.diffusion import VPSchedule
from telescope.metrics import sliced_wasserstein
from telescope.samplers.prior_scores import DiffusedGaussian
from telescope.samplers.tall import TallSampler, paper_eta

METHODS = {"GAUSS": "gauss", "JAC": "jac", "LANGEVIN": "fnpse"}


class Perturbation:
    """A fixed random network r(theta, x, t) in [-1, 1]^m (Linear 2m+1 -> 5m, ReLU, Linear -> m, tanh)."""

    def __init__(self, m: int, seed: int):
        g = torch.Generator().manual_seed(10_000 + seed)
        self.w1 = (torch.rand(2 * m + 1, 5 * m, generator=g) * 2 - 1) / math.sqrt(2 * m + 1)
        self.b1 = (torch.rand(5 * m, generator=g) * 2 - 1) / math.sqrt(2 * m + 1)
        self.w2 = (torch.rand(5 * m, m, generator=g) * 2 - 1) / math.sqrt(5 * m)
        self.b2 = (torch.rand(m, generator=g) * 2 - 1) / math.sqrt(5 * m)
        self.m = m

    def __call__(self, z, x, t, jac: bool = False):
        """``z (N, k, m)``, ``x (n, m)``: ``r (N, n, m)`` and optionally ``dr/dz (N, n, m, m)``."""
        m = self.m
        h = z @ self.w1[:m] + (x @ self.w1[m:2 * m]).unsqueeze(0) + t * self.w1[2 * m] + self.b1
        a = torch.relu(h)
        r = torch.tanh(a @ self.w2 + self.b2)
        if not jac:
            return r
        # dr/dz = diag(1 - r^2) W2^T diag(h > 0) W1z^T, as one matrix product over the hidden units
        outer = torch.einsum("ko,zk->koz", self.w2, self.w1[:m]).reshape(5 * m, m * m)
        j = ((h > 0).to(z.dtype) @ outer).reshape(*h.shape[:-1], m, m)
        return r, (1 - r * r).unsqueeze(-1) * j


class GaussianToy:
    """x | theta ~ N(theta, (1 - rho) I + rho 11^T), theta ~ N(0, I)."""

    name = "gaussian"

    def __init__(self, m=10, rho=0.8):
        self.m = m
        self.lik_cov = (1 - rho) * torch.eye(m, dtype=torch.float64) + rho * torch.ones(m, m, dtype=torch.float64)
        self.lik_prec = torch.linalg.inv(self.lik_cov)
        self.post_cov = torch.linalg.inv(self.lik_prec + torch.eye(m, dtype=torch.float64))
        ev, u = torch.linalg.eigh(self.post_cov)
        self.ev, self.u = ev.float(), u.float()
        self.chol = torch.linalg.cholesky(self.lik_cov)

    def simulate(self, theta, n, g):
        return (theta + (self.chol @ torch.randn(self.m, n, generator=g, dtype=torch.float64)).T).float()

    def means(self, x):
        return (x.double() @ self.lik_prec @ self.post_cov).float()  # (n, m): posterior means

    def eps(self, z, t, abar, mu, jac=False):
        """Exact noise prediction for z (N, k, m) against posterior means mu (n, m)."""
        a, v = abar, 1 - abar
        w = (z - math.sqrt(a) * mu) @ self.u  # (N, n, m)
        scale = math.sqrt(v) / (a * self.ev + v)
        e = (w * scale) @ self.u.T
        if not jac:
            return e
        j = (self.u * scale) @ self.u.T  # constant in z
        return e, j.expand(*e.shape, self.m)

    def reference(self, x, n_samples, g):
        n = x.shape[0]
        cov = torch.linalg.inv(n * self.lik_prec + torch.eye(self.m, dtype=torch.float64))
        mean = cov @ self.lik_prec @ x.double().sum(0)
        l = torch.linalg.cholesky(cov)  # noqa: E741
        return mean + (l @ torch.randn(self.m, n_samples, generator=g, dtype=torch.float64)).T


class GMMToy:
    """x | theta ~ 0.5 N(theta, 2.25 S) + 0.5 N(theta, S / 9), S = diag(linspace(0.6, 1.4)), theta ~ N(0, I)."""

    name = "gmm"

    def __init__(self, m=10):
        self.m = m
        s = torch.linspace(0.6, 1.4, m, dtype=torch.float64)
        self.comp_var = torch.stack([2.25 * s, s / 9])  # (2, m) likelihood variances
        self.post_var = (1 / (1 / self.comp_var + 1)).float()  # (2, m)

    def simulate(self, theta, n, g):
        k = (torch.rand(n, generator=g) < 0.5).long()
        sd = self.comp_var[k].sqrt()
        return (theta + sd * torch.randn(n, self.m, generator=g, dtype=torch.float64)).float()

    def means(self, x):
        """Component means (n, 2, m) and log weights (n, 2) of each single posterior."""
        xd = x.double()
        mu = (self.post_var.double() / self.comp_var).unsqueeze(0) * xd.unsqueeze(1)
        tot = self.comp_var + 1  # marginal variance of x under each component
        logw = -0.5 * ((xd.unsqueeze(1) ** 2) / tot + torch.log(2 * math.pi * tot)).sum(-1) + math.log(0.5)
        logw = logw - torch.logsumexp(logw, -1, keepdim=True)
        return mu.float(), logw.float()

    def eps(self, z, t, abar, mw, jac=False):
        mu, logw = mw
        a, v = abar, 1 - abar
        var = a * self.post_var + v  # (2, m)
        diff = z.unsqueeze(-2) - math.sqrt(a) * mu  # (N, n, 2, m)
        logp = logw - 0.5 * (diff ** 2 / var + torch.log(var)).sum(-1)  # (N, n, 2)
        r = torch.softmax(logp, -1)
        comp = -diff / var  # component scores
        score = (r.unsqueeze(-1) * comp).sum(-2)
        e = -math.sqrt(v) * score
        if not jac:
            return e
        # Hessian of log p_t: sum_i r_i (-diag(1/var_i) + s_i s_i^T) - s s^T
        hess = -(r.unsqueeze(-1) / var).sum(-2).diag_embed() \
            + torch.einsum("...i,...ia,...ib->...ab", r, comp, comp) - score.unsqueeze(-1) * score.unsqueeze(-2)
        return e, -math.sqrt(v) * hess

    def log_tall(self, theta, x):
        """Exact tall log density (up to a constant): prior + sum of mixture likelihoods. theta (N, m), x (n, m)."""
        d = theta.unsqueeze(1).unsqueeze(1) - x.double().unsqueeze(0).unsqueeze(2)  # (N, n, 1, m)
        var = self.comp_var  # (2, m)
        comp = -0.5 * (d ** 2 / var + torch.log(2 * math.pi * var)).sum(-1) + math.log(0.5)  # (N, n, 2)
        return torch.logsumexp(comp, -1).sum(-1) - 0.5 * (theta ** 2).sum(-1)

    def reference(self, x, n_samples, g, iters=3000, warmup=1500):
        """MALA (Appendix E): chains started at mean(x) + N(0, I), step size adapted during warm-up to accept ~0.5."""
        n = x.shape[0]
        theta = (x.double().mean(0) + torch.randn(n_samples, self.m, generator=g, dtype=torch.float64))
        step = torch.full((n_samples, 1), 1e-3 / n, dtype=torch.float64)

        def logp_grad(th):
            th = th.detach().requires_grad_(True)
            lp = self.log_tall(th, x)
            (gr,) = torch.autograd.grad(lp.sum(), th)
            return lp.detach(), gr

        lp, gr = logp_grad(theta)
        acc_total = 0.0
        for it in range(iters):
            prop = theta + step * gr + (2 * step).sqrt() * torch.randn(theta.shape, generator=g, dtype=torch.float64)
            lp2, gr2 = logp_grad(prop)
            fwd = -((prop - theta - step * gr) ** 2).sum(-1) / (4 * step[:, 0])
            bwd = -((theta - prop - step * gr2) ** 2).sum(-1) / (4 * step[:, 0])
            acc = torch.log(torch.rand(n_samples, generator=g, dtype=torch.float64)) < lp2 - lp + bwd - fwd
            theta = torch.where(acc[:, None], prop, theta)
            lp, gr = torch.where(acc, lp2, lp), torch.where(acc[:, None], gr2, gr)
            if it < warmup:  # per-chain adaptation, as in the paper's MALA
                step = step * torch.where(acc[:, None], 1.01, 0.99)
            else:
                acc_total += float(acc.double().mean())
        self.mala_acceptance = acc_total / max(iters - warmup, 1)
        return theta


def run_one(task, method, x, n_samples, steps, epsilon, pert, schedule, seed, eta=None):
    """Draw ``n_samples`` of the tall posterior of ``x`` with ``method``; returns (samples, seconds, info)."""
    n_obs = x.shape[0]
    stats = task.means(x)

    def eps_set(z, t):
        abar = float(schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)))
        e = task.eps(z, t, abar, stats)
        return e + epsilon * pert(z, x, t) if epsilon else e

    def jacobian(z, t):
        abar = float(schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)))
        e, j = task.eps(z, t, abar, stats, jac=True)
        if epsilon:
            r, jr = pert(z, x, t, jac=True)
            e, j = e + epsilon * r, j + epsilon * jr
        return e, j

    prior = DiffusedGaussian(torch.zeros(task.m), torch.eye(task.m))
    gen = torch.Generator().manual_seed(1000 + seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sampler = TallSampler(eps_set, n_obs, prior, method=method, schedule=schedule, steps=steps,
                              eta=eta if eta is not None else paper_eta(steps), pilot_samples=1000,
                              pilot_steps=100, pilot_eta=0.5, jacobian=jacobian, generator=gen,
                              chunk_rows=2**18)
        s = sampler.sample(n_samples)
    return s, time.perf_counter() - t0, sampler.info


def sw(samples, ref, projections, seed):
    if not torch.isfinite(samples).all():
        return float("nan")
    out = sliced_wasserstein(samples.double(), ref, n_projections=projections, seed=seed)
    return out if math.isfinite(out) else float("nan")


def observations(task, seed, n_max=100):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(task.m, generator=g, dtype=torch.float64)
    return theta, task.simulate(theta, n_max, g), g


def _stats(v):
    t = torch.tensor(v, dtype=torch.float64)
    ok = t[torch.isfinite(t)]
    if ok.numel() < t.numel():
        return {"mean": float("nan"), "std": float("nan"), "finite": int(ok.numel()), "runs": int(t.numel())}
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0, "runs": int(t.numel())}


def table1(args, schedule):
    rows = []
    for task in [GaussianToy(args.dim)] + ([GMMToy(args.dim)] if args.gmm else []):
        for steps in args.steps:
            for name, method in METHODS.items():
                if name not in args.methods:
                    continue
                times, sws = [], []
                for seed in range(args.seeds):
                    _, x, g = observations(task, seed)
                    x = x[:args.n_obs]
                    ref = task.reference(x, args.samples, g)
                    pert = Perturbation(task.m, seed)
                    s, dt, info = run_one(task, method, x, args.samples, steps, args.epsilon, pert, schedule, seed)
                    times.append(dt)
                    sws.append(sw(s, ref, args.projections, seed))
                row = {"task": task.name, "algorithm": name, "steps": steps, "eta": paper_eta(steps),
                       "seconds": _stats(times), "sw": _stats(sws), "sw_runs": sws}
                rows.append(row)
                print(f"[table1] {task.name} {name:8s} steps={steps:4d} time={row['seconds']['mean']:.2f}s "
                      f"sW={row['sw']['mean']:.3f} +/- {row['sw']['std']:.3f}", file=sys.stderr, flush=True)
    return rows


def figure2(args, schedule):
    rows = []
    steps = {"GAUSS": args.fig_steps[0], "JAC": args.fig_steps[1], "LANGEVIN": args.fig_steps[2]}
    for task in [GaussianToy(args.dim)] + ([GMMToy(args.dim)] if args.gmm else []):
        for epsilon in args.eps_list:
            for n in args.n_list:
                for name, method in METHODS.items():
                    if name not in args.methods:
                        continue
                    sws, times, norm = [], [], []
                    for seed in range(args.seeds):
                        _, x, g = observations(task, seed)
                        x = x[:n]
                        ref = task.reference(x, args.samples, g)
                        s, dt, _ = run_one(task, method, x, args.samples, steps[name], epsilon,
                                           Perturbation(task.m, seed), schedule, seed)
                        d = sw(s, ref, args.projections, seed)
                        sws.append(d)
                        times.append(dt)
                        # normalised by the spread of the reference (the paper's "normalized sW")
                        norm.append(d / float(ref.std(0).mean()))
                    row = {"task": task.name, "epsilon": epsilon, "n": n, "algorithm": name, "steps": steps[name],
                           "sw": _stats(sws), "sw_normalised": _stats(norm), "seconds": _stats(times),
                           "sw_runs": sws}
                    rows.append(row)
                    print(f"[figure2] {task.name} eps={epsilon:g} n={n:3d} {name:8s} sW={row['sw']['mean']:.3f} "
                          f"(normalised {row['sw_normalised']['mean']:.2f}) {row['seconds']['mean']:.1f}s",
                          file=sys.stderr, flush=True)
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    epsilons = sorted({r["epsilon"] for r in rows})
    fig, axes = plt.subplots(len(tasks), len(epsilons), figsize=(3.2 * len(epsilons), 2.8 * len(tasks)),
                             squeeze=False, sharex=True)
    for i, task in enumerate(tasks):
        for j, eps in enumerate(epsilons):
            ax = axes[i][j]
            for name in METHODS:
                pts = [r for r in rows if r["task"] == task and r["epsilon"] == eps and r["algorithm"] == name]
                if not pts:
                    continue
                ns = [r["n"] for r in pts]
                mean = [r["sw_normalised"]["mean"] for r in pts]
                std = [r["sw_normalised"]["std"] for r in pts]
                ax.errorbar(ns, mean, yerr=std, marker="o", ms=3, capsize=2, label=name)
            ax.set_title(f"{task}, eps={eps:g}", fontsize=9)
            ax.set_yscale("log")
            if i == len(tasks) - 1:
                ax.set_xlabel("n observations")
            if j == 0:
                ax.set_ylabel("normalised sW")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="store_true", help="Table 1 (n = 32, epsilon = 1e-2)")
    p.add_argument("--figure", action="store_true", help="Fig. 2 (sW against n)")
    p.add_argument("--gmm", action="store_true", help="also the Gaussian-mixture simulator (Table 3 / Fig. 2 bottom)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--projections", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--n-obs", type=int, default=32)
    p.add_argument("--epsilon", type=float, default=1e-2)
    p.add_argument("--steps", type=int, nargs="+", default=[50, 150, 400, 1000])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--n-list", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 100])
    p.add_argument("--eps-list", type=float, nargs="+", default=[0.0, 1e-3, 1e-2, 1e-1])
    p.add_argument("--fig-steps", type=int, nargs=3, default=[1000, 400, 400], metavar=("GAUSS", "JAC", "LANGEVIN"),
                   help="steps per method in Fig. 2 (the paper's 'equivalent time' settings)")
    p.add_argument("--beta-min", type=float, default=0.0)
    p.add_argument("--beta-max", type=float, default=32.0, help="linear VP schedule beta(t); the paper: 32 t")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the JSON here too")
    p.add_argument("--plot", default=None, help="draw Fig. 2 to this image")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.samples, args.projections = 1, 300, 1000
        args.steps, args.n_list, args.eps_list, args.fig_steps = [50, 150], [2, 16, 64], [0.0, 1e-2], [150, 150, 150]
    if not (args.table or args.figure):
        args.table = True
    torch.set_num_threads(args.threads)
    schedule = VPSchedule("linear", beta_min=args.beta_min, beta_max=args.beta_max)
    t0 = time.perf_counter()
    out = {"benchmark": "npse_toy", "paper": "Linhart et al. 2024, Section 4.1", "schedule": schedule.to_dict(),
           "settings": {k: v for k, v in vars(args).items() if k not in ("out", "plot")}}
    if args.table:
        out["table1"] = table1(args, schedule)
    if args.figure:
        out["figure2"] = figure2(args, schedule)
        if args.plot:
            plot(out["figure2"], args.plot)
    out["seconds"] = time.perf_counter() - t0
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
