"""Helpers shared by the multilevel benchmarks (paper 1): evaluation metrics, an MDN likelihood, JSON output.

Not part of the library: the scripts ``ml_*.py`` import it from their own directory.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

import telescope as ts
from telescope import metrics
from telescope.estimators import NLE
from telescope.nn import MLP, fit_standardize

#: where JSON results and figures go (gitignored); override with TELESCOPE_ML_OUT
OUT = Path(os.environ.get("TELESCOPE_ML_OUT", Path(__file__).resolve().parent.parent / "runs" / "multilevel"))


class MDN(nn.Module):
    """Gaussian mixture density network ``q(y | c)`` (Bishop, 1994) with standardised ``y`` and ``c``.

    The paper's toggle-switch NLE: 2 components, an MLP with 2 hidden layers of 20 units.
    Same interface as :class:`telescope.estimators.flows.ConditionalFlow` (``log_prob``, ``sample``).
    """

    def __init__(self, y: Tensor, c: Tensor, *, components: int = 2, hidden=(20, 20)):
        super().__init__()
        self.y_std, self.c_std = fit_standardize(y), fit_standardize(c)
        self.k, self.d = components, y.shape[-1]
        self.net = MLP(c.shape[-1], components * (1 + 2 * self.d), hidden, activation=nn.Tanh)

    def _params(self, c: Tensor):
        out = self.net(self.c_std(c))
        logits, mean, log_scale = out.split([self.k, self.k * self.d, self.k * self.d], -1)
        shape = (*out.shape[:-1], self.k, self.d)
        return logits.log_softmax(-1), mean.reshape(shape), log_scale.reshape(shape).clamp(-7.0, 5.0)

    def log_prob(self, y: Tensor, c: Tensor) -> Tensor:
        logw, mean, log_scale = self._params(c)
        z = self.y_std(y).unsqueeze(-2)
        comp = (-0.5 * ((z - mean) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(logw + comp, -1) + self.y_std.log_abs_det()

    @torch.no_grad()
    def sample(self, c: Tensor, n: int) -> Tensor:
        logw, mean, log_scale = self._params(c)  # (m, k), (m, k, d)
        idx = torch.distributions.Categorical(logits=logw).sample((n,))  # (n, m)
        m = torch.arange(c.shape[0]).expand(n, -1)
        z = mean[m, idx] + log_scale[m, idx].exp() * torch.randn(n, c.shape[0], self.d)
        return self.y_std.inverse(z)


class MDNNLE(NLE):
    """NLE whose likelihood model is an :class:`MDN` (as in the paper's toggle-switch experiment)."""

    def __init__(self, prior, *, components: int = 2, hidden=(20, 20), device=None, seed: int | None = 0):
        super().__init__(prior, device=device, seed=seed, hidden=hidden)
        self.config["components"] = int(components)

    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        return MDN(x, theta, components=self.config["components"], hidden=self.config["hidden"])


def conditional_samples(est, theta: Tensor, n: int) -> Tensor:
    """``(m, n, d)`` draws from a likelihood estimator's ``q(x | theta_j)`` for each of ``m`` parameters."""
    net = est._trained()
    net.eval()
    with torch.no_grad():
        return net.sample(theta.to(est.device), n).permute(1, 0, 2).cpu()


def mmd_per_theta(est, theta: Tensor, x_ref: Tensor, n: int, *, paper: bool = False):
    """MMD^2 (unbiased, median heuristic) between ``n`` model draws and reference draws, per parameter.

    With ``paper=True`` returns ``(mmd2, mmd2_paper)``: also the squared MMD as the paper's authors compute
    it for Table 3 (:func:`mmd2_paper`, the biased V-statistic with their narrower median-heuristic kernel).
    """
    s = conditional_samples(est, theta, n)
    m = torch.tensor([metrics.mmd(s[i], x_ref[i], seed=i) for i in range(theta.shape[0])])
    if not paper:
        return m
    return m, torch.tensor([mmd2_paper(s[i], x_ref[i]) for i in range(theta.shape[0])])


def mmd2_paper(p: Tensor, q: Tensor) -> float:
    """Squared MMD as the toggle-switch evaluation of paper 1 defines it (Appendix B.4, "MMD ... median heuristic").

    The biased V-statistic ``mean k(p,p) + mean k(q,q) - 2 mean k(p,q)`` with the Gaussian kernel
    ``exp(-d^2 / (2 l^2))`` and length scale ``l = sqrt(median(d^2) / 2)`` over all pairs of the pooled
    sample (so ``k = exp(-d^2 / median(d^2))``, a kernel sqrt(2) narrower than :func:`telescope.metrics.mmd`'s
    ``sigma = median(d)``).  The paper's table labels this quantity "MMD"; it is a squared MMD.
    """
    z = torch.cat([p, q]).double()
    d2 = torch.cdist(z, z) ** 2
    l2 = d2.median() / 2
    k = torch.exp(-d2 / (2 * l2.clamp_min(1e-12)))
    n = p.shape[0]
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


class RawPosterior:
    """An NPE's flow ``q(theta | x)`` without rejection to the prior support, for :func:`metrics.coverage`.

    NPE's own ``sample_batched`` rejects draws outside the prior and, for a badly biased estimator (e.g.
    NPE trained on low-fidelity data only), draws millions of candidates per observation; HPD levels of the
    flow's own density need no rejection (memory and time stay bounded).
    """

    def __init__(self, est):
        self.net = est._trained()
        self.device = est.device

    @torch.no_grad()
    def sample_batched(self, x: Tensor, n: int) -> Tensor:
        return self.net.sample(x.to(self.device), n).cpu()

    @torch.no_grad()
    def log_prob_batched(self, theta: Tensor, x: Tensor) -> Tensor:
        x = x.to(self.device)
        return torch.stack([self.net.log_prob(t.to(self.device), x) for t in theta]).cpu()


def nlpd_and_coverage(est, theta: Tensor, x: Tensor, n_cov: int, n_samples: int) -> dict:
    """NLPD of the true parameters over all pairs and HPD coverage (of the flow density) on the first ``n_cov``."""
    lp = est.log_prob_batched(theta[None], x)[0]
    alphas, cov = metrics.coverage(RawPosterior(est), theta[:n_cov], x[:n_cov], n_samples=n_samples,
                                   batch_size=50)
    return {"nlpd": metrics.nlpd(lp), "coverage": cov.tolist(), "alphas": alphas.tolist(),
            "coverage_gap_mean": float((cov - alphas).mean()), "coverage_gap_min": float((cov - alphas).min())}


def summary(values: list[float]) -> dict:
    v = [float(a) for a in values]
    return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v}


def timed(fn: Callable, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def dump(name: str, result: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def figure_path(name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT / f"{name}.png"


def set_threads(n: int) -> None:
    torch.set_num_threads(int(n))


__all__ = ["MDN", "MDNNLE", "conditional_samples", "mmd_per_theta", "mmd2_paper", "nlpd_and_coverage", "summary", "timed",
           "dump", "figure_path", "set_threads", "ts"]
