"""Tall-data posteriors with non-Gaussian priors, against EXACT tall posteriors (issue 22).

Problems (3 parameters, x = 3 numbers, one score network per prior/simulator, 2*10^4 simulations):

* ``box_gauss``: theta ~ U[-1, 1]^3, x = theta + sigma * N(0, I), sigma = (0.1, 0.4, 1.5).  The tall
  posterior is a product of truncated normals N(mean(x), sigma^2 / n) on the box (sampled exactly).
* ``box_binding``: the same network and model, theta* = (0.97, -0.99, 0.9): the box binds at the
  true parameter (the n = 32 posterior is cut by the box in every coordinate).
* ``box_student``: theta ~ U[-1, 1]^3, x = theta + sigma * t_3, sigma = (0.2, 0.5, 1.0).  Coordinates are
  independent: the exact tall posterior is sampled per coordinate by inverse CDF on a fine grid.
* ``lognormal``: log theta ~ N(mu, s^2), x = log theta + sigma * N(0, I), conjugate in log space.

For every problem, n in (1, 8, 32) and sampler, it prints one JSON row: C2ST against exact samples
(telescope.metrics.c2st, 1000 against 1000) and the sampling time.  Error sources are separated by
``oracle`` rows: the same samplers run on the EXACT single-observation diffused scores (closed form
for Gaussian noise), so the n = 1 network row measures the network, oracle rows measure the
sampler (prior kernel, covariances, steps), and the step/covariance variants isolate those.

    OMP_NUM_THREADS=1 python benchmarks/tall_any_prior.py              # trains once into runs/tall_any_prior/
    OMP_NUM_THREADS=1 python benchmarks/tall_any_prior.py --train-only
    OMP_NUM_THREADS=1 python benchmarks/tall_any_prior.py --problems box_gauss --methods gauss auto --n 32
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import telescope as ts
from telescope.estimators.npse import NPSE
from telescope.metrics import c2st
from telescope.samplers.unconstrained import LogitBox

RUNS = Path(__file__).resolve().parent.parent / "runs" / "tall_any_prior"
N_TRAIN = 20_000
NS = (1, 8, 32)


# -- problems -----------------------------------------------------------------------------------
class Problem:
    name: str
    net: str  # cache key of the network (problems may share one)
    prior: torch.distributions.Distribution
    theta_star: torch.Tensor

    def simulate(self, theta: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def observations(self, n_max: int = 32, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.simulate(self.theta_star.expand(n_max, -1), g)

    def exact(self, x: torch.Tensor, k: int, seed: int = 2) -> torch.Tensor:
        raise NotImplementedError

    def exact_eps(self, x_set: torch.Tensor, net):
        """Exact single-observation noise prediction in the network's working space, or None."""
        return None


def _trunc_normal(mean, sd, lo, hi, k, rng):
    a, b = (lo - mean) / sd, (hi - mean) / sd
    return stats.truncnorm.rvs(a, b, loc=mean, scale=sd, size=k, random_state=rng)


class BoxGauss(Problem):
    def __init__(self, name="box_gauss", theta_star=(0.3, -0.5, 0.6)):
        self.name, self.net = name, "box_gauss"
        self.low, self.high = torch.full((3,), -1.0), torch.full((3,), 1.0)
        self.sigma = torch.tensor([0.1, 0.4, 1.5])
        self.prior = ts.BoxUniform(self.low, self.high)
        self.theta_star = torch.tensor(theta_star)

    def simulate(self, theta, g):
        return theta + self.sigma * torch.randn(theta.shape, generator=g)

    def exact(self, x, k, seed=2):
        rng = np.random.default_rng(seed)
        n = x.shape[0]
        m, sd = x.double().mean(0).numpy(), (self.sigma.double() / math.sqrt(n)).numpy()
        cols = [_trunc_normal(m[i], sd[i], float(self.low[i]), float(self.high[i]), k, rng) for i in range(3)]
        return torch.tensor(np.stack(cols, 1), dtype=torch.float32)

    def exact_eps(self, x_set, net):
        """Diffused truncated normal N(x, sigma^2) on the box, per coordinate, in working units."""
        loc, scale = net.theta_loc.double(), net.theta_scale.double()
        mu = (x_set.double() - loc) / scale  # (m, d) likelihood means in z units
        s2 = (self.sigma.double() / scale) ** 2
        lo, hi = (self.low.double() - loc) / scale, (self.high.double() - loc) / scale
        return _trunc_gauss_eps(mu, s2, lo, hi)


def _trunc_gauss_eps(mu, s2, lo, hi, schedule=None):
    """``eps_set(z (N, m, d), t)`` of the diffused N(mu_j, s2) truncated to [lo, hi] (all float64)."""
    from telescope.diffusion import VPSchedule
    from telescope.samplers.prior_scores import uniform_score_std

    schedule = schedule or VPSchedule()

    def eps_set(z, t):
        a = float(schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64)))
        v = 1.0 - a
        zd = z.double()
        prec = 1.0 / s2 + a / v
        sp2 = 1.0 / prec
        mp = sp2 * (mu / s2 + math.sqrt(a) * zd / v)  # (N, m, d)
        sp = sp2.sqrt()
        u, l = (mp - lo) / sp, (mp - hi) / sp  # noqa: E741
        score = -(zd - math.sqrt(a) * mu) / (a * s2 + v) + uniform_score_std(u, l) / sp * (sp2 * math.sqrt(a) / v)
        return (-math.sqrt(v) * score).float()

    return eps_set


class BoxStudent(Problem):
    df = 3.0

    def __init__(self):
        self.name, self.net = "box_student", "box_student"
        self.low, self.high = torch.full((3,), -1.0), torch.full((3,), 1.0)
        self.sigma = torch.tensor([0.2, 0.5, 1.0])
        self.prior = ts.BoxUniform(self.low, self.high)
        self.theta_star = torch.tensor([0.2, -0.4, 0.7])

    def simulate(self, theta, g):
        # Student-t by normal / sqrt(chi2 / df), from the generator
        z = torch.randn(theta.shape, generator=g)
        k = int(self.df)  # chi-square with an integer df as a sum of squared normals (seeded by g)
        chi = (torch.randn(*theta.shape, k, generator=g) ** 2).sum(-1)
        return theta + self.sigma * z / torch.sqrt(chi / self.df)

    def exact(self, x, k, seed=2):
        rng = np.random.default_rng(seed)
        grid = np.linspace(-1.0, 1.0, 20001)
        cols = []
        for i in range(3):
            r = (x[:, i].double().numpy()[:, None] - grid[None, :]) / float(self.sigma[i])
            logp = stats.t.logpdf(r, self.df).sum(0)
            p = np.exp(logp - logp.max())
            cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
            cdf /= cdf[-1]
            cols.append(np.interp(rng.uniform(size=k), cdf, grid))
        return torch.tensor(np.stack(cols, 1), dtype=torch.float32)


class LogNormalProblem(Problem):
    def __init__(self):
        self.name, self.net = "lognormal", "lognormal"
        self.mu, self.s = torch.tensor([0.0, 0.5, -0.5]), torch.tensor([0.5, 0.5, 0.8])
        self.sigma = torch.tensor([0.2, 0.6, 1.5])
        self.prior = ts.LogNormal(self.mu, self.s)
        self.theta_star = torch.exp(self.mu + torch.tensor([0.4, -0.3, 0.5]) * self.s)

    def simulate(self, theta, g):
        return torch.log(theta) + self.sigma * torch.randn(theta.shape, generator=g)

    def exact(self, x, k, seed=2):
        g = torch.Generator().manual_seed(seed)
        n = x.shape[0]
        prec = 1 / self.s.double() ** 2 + n / self.sigma.double() ** 2
        mean = (self.mu.double() / self.s.double() ** 2 + x.double().sum(0) / self.sigma.double() ** 2) / prec
        return torch.exp(mean + prec.rsqrt() * torch.randn(k, 3, generator=g, dtype=torch.float64)).float()

    def exact_eps(self, x_set, net):
        loc, scale = net.theta_loc.double(), net.theta_scale.double()
        p0 = 1 / self.s.double() ** 2
        prec = p0 + 1 / self.sigma.double() ** 2
        mean = (self.mu.double() * p0 + x_set.double() / self.sigma.double() ** 2) / prec  # (m, d) log space
        mu, s2 = (mean - loc) / scale, (1 / prec) / scale ** 2
        return _trunc_gauss_eps(mu, s2, torch.full((3,), -1e6, dtype=torch.float64),
                                torch.full((3,), 1e6, dtype=torch.float64))


PROBLEMS = {"box_gauss": BoxGauss, "box_binding": lambda: BoxGauss("box_binding", (0.97, -0.99, 0.9)),
            "box_student": BoxStudent, "lognormal": LogNormalProblem}


# -- training (cached) --------------------------------------------------------------------------
def network(problem: Problem, n_train: int = N_TRAIN, max_epochs: int = 400, retrain: bool = False,
            logit: bool = False) -> NPSE:
    """The problem's NPSE (cached in runs/); ``logit=True``: trained on u = logit of the box coordinates."""
    path = RUNS / f"{problem.net}_{n_train}{'_logit' if logit else ''}"
    box = LogitBox(problem.prior) if logit else None
    prior = box.prior if logit else problem.prior
    if (path / "config.json").exists() and not retrain:
        return NPSE.load(path, prior)
    g = torch.Generator().manual_seed(0)
    theta = _prior_sample(problem.prior, n_train, g)
    x = problem.simulate(theta, g)
    t0 = time.perf_counter()
    est = NPSE(prior, seed=0).fit(box.to_u(theta) if logit else theta, x, max_epochs=max_epochs, progress_bar=False)
    print(json.dumps({"trained": problem.net, "logit": logit, "n_train": n_train, "seconds": round(time.perf_counter() - t0, 1)}),
          file=sys.stderr, flush=True)
    est.save(path)
    return est


def _prior_sample(prior, k, g):
    torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
    return prior.sample((k,))


# -- samplers -----------------------------------------------------------------------------------
#: name -> keyword arguments of NPSE.sample / TallSampler.  CPU settings: JAC 100 steps (paper 1000),
#: F-NPSE 50 steps x 5 Langevin steps (paper 400).
SAMPLERS = {
    "gauss": {"method": "gauss"},
    "auto": {"method": "auto"},
    "jac": {"method": "jac", "steps": 100},
    "fnpse": {"method": "fnpse", "steps": 50},
    # ablations (error sources)
    "gauss_pilot2k": {"method": "gauss", "pilot_samples": 2048},                      # covariance estimate
    "gauss_q200": {"method": "gauss", "spacing": "quadratic", "steps": 200},          # discretisation
    "gauss_flat": {"method": "gauss", "prior_kernel": "exact"},                       # prior kernel
    "gauss_flat_q200": {"method": "gauss", "prior_kernel": "exact", "spacing": "quadratic", "steps": 200},
    "gauss_pc": {"method": "gauss", "spacing": "quadratic", "corrector_steps": 1},    # predictor-corrector
    "gauss_refine": {"method": "gauss", "refine_steps": 30},                          # refinement, uniform grid
    "gauss_stop": {"method": "gauss", "stop_t": 0.05, "stop_cov": "pilot"},           # Gaussian kernel from t = 0.05
    "gauss_stop_tr": {"method": "gauss", "stop_t": 0.05, "stop_cov": "pilot", "stop_kernel": "truncated"},
    "gauss_stop_tr02": {"method": "gauss", "stop_t": 0.02, "stop_cov": "pilot", "stop_kernel": "truncated"},
    "gauss_stop_tr10": {"method": "gauss", "stop_t": 0.1, "stop_cov": "pilot", "stop_kernel": "truncated"},
}
DEFAULT_SAMPLERS = ("gauss", "auto", "jac", "fnpse", "gauss_pilot2k", "gauss_q200", "gauss_flat", "gauss_refine")
ORACLE = ("single", "gauss", "auto", "gauss_q200", "gauss_flat", "gauss_refine", "gauss_pilot2k", "gauss_stop",
          "gauss_stop_tr")


def _in_support(prior, s):
    from telescope.priors import in_support

    return in_support(prior, s)


def oracle_sample(problem, est, x, k, kw, seed):
    """The same sampler on the EXACT single-observation scores (no network error), or None."""
    from telescope.samplers.tall import TallSampler, auto_settings

    net = est._trained()
    eps = problem.exact_eps(x, net)
    if eps is None:
        return None
    kw = dict(kw)
    prior = est.prior_score()
    if kw.get("method") == "auto":
        auto = auto_settings(prior, x.shape[0])
        auto.update({k2: v for k2, v in kw.items() if k2 != "method"})
        kw = auto
    g = torch.Generator().manual_seed(seed)
    if x.shape[0] == 1:  # single-observation DDIM as NPSE.sample does it (100 steps, eta 0.8, clipped)
        from telescope.samplers.tall import ddim_sample
        out = []
        while sum(o.shape[0] for o in out) < k:
            z = ddim_sample(eps, torch.randn(2 * k, 1, 3, generator=g), schedule=est.schedule, steps=100, eta=0.8,
                            clip=net.clip_range(), generator=g)[:, 0]
            th = net.from_working(z.float())
            out.append(th[_in_support(problem.prior, th)])
        return torch.cat(out)[:k]
    ts_ = TallSampler(eps, x.shape[0], prior, schedule=est.schedule, clip=net.clip_range(), generator=g,
                      eta=None if kw.get("method") == "fnpse" else 0.8, **{k2: v for k2, v in kw.items() if v is not None})
    out = []
    while sum(o.shape[0] for o in out) < k:
        th = net.from_working(ts_.sample(int(1.2 * k)).float())
        out.append(th[_in_support(problem.prior, th)])
    return torch.cat(out)[:k]


def run(problems, samplers, ns, k=1000, oracle=True, seed=0, check=True, logit=False):
    rows = []
    for pname in problems:
        problem = PROBLEMS[pname]()
        est = network(problem, logit=logit)
        back = LogitBox(problem.prior).to_theta if logit else (lambda u: u)
        oracle, check = oracle and not logit, check and not logit
        xs = problem.observations()
        for n in ns:
            x = xs[:n]
            ref = problem.exact(x, k)
            names = ["single"] if n == 1 else list(samplers)
            for name in names:
                kw = {"method": "auto"} if name == "single" else SAMPLERS[name]
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t0 = time.perf_counter()
                    try:
                        s = back(est.sample(x if n > 1 else x[0], k, seed=seed, max_time=60.0, **kw))
                    except RuntimeError as err:  # e.g. F-NPSE diverging: no samples inside the box
                        row = {"problem": pname, "n": n, "sampler": name, "error": str(err)[:120],
                               "seconds": round(time.perf_counter() - t0, 2)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                    sec = time.perf_counter() - t0
                row = {"problem": pname + ("_logit" if logit else ""), "n": n, "sampler": name, "c2st": round(c2st(s, ref, seed=seed), 3),
                       "seconds": round(sec, 2), "warnings": len(caught)}
                if oracle and name in ORACLE:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        so = oracle_sample(problem, est, x, k, kw, seed)
                    if so is not None:
                        row["c2st_oracle"] = round(c2st(so, ref, seed=seed), 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
        if check and max(ns) >= 4:
            rows += self_checks(problem, est, xs[:max(ns)], k, seed)
    return rows


def self_checks(problem, est, x, k, seed):
    """The reference-free split check on exact samples (its false-alarm baseline) and on gauss/auto."""
    from telescope.samplers.tall import split_check

    net, prior = est._trained(), est.prior_score()
    out = []
    ex = [net.to_working(problem.exact(xx, k, seed=seed + i)) for i, xx in enumerate((x, x[0::2], x[1::2]))]
    r = split_check(*ex, prior)
    out.append({"problem": problem.name, "n": x.shape[0], "check": "exact samples", **r})
    for name in ("gauss", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = est.tall_check(x, k, seed=seed, **SAMPLERS[name])
        r.pop("samples")
        out.append({"problem": problem.name, "n": x.shape[0], "check": name, **r})
    for row in out:
        print(json.dumps({kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in row.items()}), flush=True)
    return out


def timing(problems, n=32, k=1000, repeats=3, seed=0):
    """Seconds of GAUSS and auto at ``n``, alternated in one process (min over repeats): the noise-robust ratio."""
    rows = []
    for pname in problems:
        problem = PROBLEMS[pname]()
        est = network(problem)
        x = problem.observations()[:n]
        best = {"gauss": math.inf, "auto": math.inf}
        for _ in range(repeats):
            for name in best:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    est.sample(x, k, seed=seed, **SAMPLERS[name])
                    best[name] = min(best[name], time.perf_counter() - t0)
        row = {"problem": pname, "n": n, "timing": "min over repeats", "gauss_s": round(best["gauss"], 2),
               "auto_s": round(best["auto"], 2), "ratio": round(best["auto"] / best["gauss"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--n", nargs="+", type=int, default=list(NS))
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the reference-free split checks")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--logit", action="store_true", help="box problems: network trained and sampled on logit(theta)")
    ap.add_argument("--timing", action="store_true", help="only time gauss against auto at the largest n")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_only:
        for p in args.problems:
            network(PROBLEMS[p]())
        return 0
    if args.timing:
        print(json.dumps({"table": timing(args.problems, max(args.n), k=args.samples)}))
        return 0
    rows = run(args.problems, args.samplers, args.n, k=args.samples, oracle=not args.no_oracle,
               check=not args.no_check, logit=args.logit)
    print(json.dumps({"table": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
