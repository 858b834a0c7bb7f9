r"""Test problems for MLMC over diffusion samplers: an exact Gaussian model and 8x8 digits.

**Exact Gaussian.** For data :math:`x_0 \sim \mathcal{N}(\mu, s^2 I)` the VP marginals are
:math:`q_t = \mathcal{N}(\sqrt{\bar\alpha_t}\mu, (\bar\alpha_t s^2 + 1 - \bar\alpha_t) I)`, so the
exact noise prediction is

.. math:: \epsilon(x, t) = \sqrt{1-\bar\alpha_t}\,\frac{x - \sqrt{\bar\alpha_t}\mu}
                                                    {\bar\alpha_t s^2 + 1 - \bar\alpha_t}.

Every DDIM step is then affine in the state, so the coupled fine/coarse end states of a level
are jointly Gaussian and :meth:`GaussianData.exact_levels` computes their means and
covariances by the same recursion the sampler runs: the exact :math:`E P_\ell`,
:math:`\|E\Delta P_\ell\|` and :math:`V_\ell` for :math:`P = x^2`.  The samplers are first-order
schemes (exponential integrators of the reverse SDE / probability-flow ODE with additive
noise), so the bias decays like the step, :math:`\alpha = 1`, and the strong error too, so
:math:`V_\ell \propto h^2`, :math:`\beta = 2`; with :math:`\gamma = 1`, MLMC reaches RMSE
:math:`\varepsilon` at cost :math:`O(\varepsilon^{-2})` (eq. (18), :math:`\beta > \gamma`).
One exception, visible in the exact recursion: the stochastic samplers' last step to
:math:`t = 0` adds no noise, so the noise of the fine path's last-but-one step has no coarse
counterpart; its variance is proportional to the length of the last step, :math:`O(h^2)` on
the quadratic grid (``spacing="quadratic"``, :math:`\beta = 2`) but :math:`O(h)` on a uniform
grid, where :math:`\beta` falls to 1 on fine levels — the :math:`\beta \approx 1` the paper
reports for its stochastic samplers.  The deterministic ODE keeps :math:`\beta = 2` on both.
Before the asymptotic regime (levels up to ~8) the fitted rates are lower (e.g. DDPM
:math:`\alpha \approx 0.7, \beta \approx 1.6` on levels 4-8) and match the exact ones.

:func:`run_gaussian` runs the convergence and complexity tests on this model and compares them with
the exact values (``telescope mlmc-test``, the default experiment).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..diffusion import VPSchedule, ddim_coefficients, sampler_eta
from .coupled import CoupledDiffusion
from .driver import fit_rate, mlmc_test
from .report import save_result

__all__ = ["GaussianData", "gaussian_problem", "run_gaussian"]


class GaussianData:
    r"""Data :math:`\mathcal{N}(\mu, s^2 I)` with its exact noise prediction under a VP schedule.

    Arguments:
        mu: mean vector ``(d,)``.
        s: standard deviation (scalar).
        schedule: the VP schedule (default ``VPSchedule()``).

    Example:
        >>> g = GaussianData([1.0, -0.5], 0.5)
        >>> g.second_moment().tolist()
        [1.25, 0.5]
    """

    def __init__(self, mu, s: float = 0.5, schedule: VPSchedule | None = None):
        self.mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
        if not s > 0:
            raise ValueError(f"s must be > 0, got {s}")
        self.s = float(s)
        self.schedule = schedule or VPSchedule()

    @property
    def d(self) -> int:
        return self.mu.numel()

    def eps(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The exact noise prediction ``(n, d)`` at states ``x (n, d)`` and times ``t (n,)``."""
        a = self.schedule.alpha_bar(t.double())[:, None]
        mu = self.mu.to(device=x.device)
        out = (1 - a).sqrt() * (x.double() - a.sqrt() * mu) / (a * self.s**2 + 1 - a)
        return out.to(x.dtype)

    def second_moment(self) -> Tensor:
        """The exact :math:`E x^2 = \\mu^2 + s^2` (componentwise)."""
        return self.mu**2 + self.s**2

    def exact_levels(self, levels, *, sampler: str = "ddpm", eta: float | None = None, T0: int = 1, M: int = 2,
                     init: str = "noise", x_obs=None, mask=None, t_start: float = 1.0, t_end: float = 0.0,
                     spacing: str = "uniform") -> dict:
        r"""Exact per-level moments of the coupled sampler :class:`CoupledDiffusion` for ``f = x^2``.

        Returns a dict of lists over ``levels`` (norms are ``rms`` over components):
        ``mean_fine`` (vector :math:`E P_\ell`), ``var_fine`` (rms-trace of :math:`V[P_\ell]`),
        ``mean`` (:math:`\|E\Delta P_\ell\|`), ``var`` (:math:`V_\ell`).
        """
        e = sampler_eta(sampler, eta)
        d = self.d
        mu = self.mu.numpy()
        x_obs = np.zeros(d) if x_obs is None else np.asarray(x_obs, dtype=float).reshape(d)
        m = {"noise": np.ones(d), "observation": np.zeros(d)}.get(init)
        if m is None:
            m = np.asarray(mask, dtype=float).reshape(d)
        keep = (m > 0) if init == "mask" else np.ones(d, dtype=bool)
        out = {"levels": list(levels), "mean_fine": [], "var_fine": [], "mean": [], "var": []}
        for lv in levels:
            mean0 = (1 - m) * x_obs
            var0 = m.copy()
            # state (x_f, x_c, z): means (d, 3), covariances (d, 3, 3)
            mean = np.stack([mean0, mean0, np.zeros(d)], 1)
            cov = np.zeros((d, 3, 3))
            cov[:, :2, :2] = var0[:, None, None]
            nf = T0 * M**lv
            tf = self.schedule.timesteps(nf, t_start, t_end, spacing).tolist()
            abf = self.schedule.alpha_bar(torch.tensor(tf, dtype=torch.float64)).tolist()
            coarse = lv > 0
            var_z = 0.0
            for k in range(nf):
                A, B, c = self._affine(abf[k], abf[k + 1], e, mu)
                kk = ddim_coefficients(abf[k], abf[k + 1], e)[3]
                A, B, c = np.where(keep, A, 1.0), np.where(keep, B, 0.0), np.where(keep, c, 0.0)
                T = np.zeros((d, 3, 3))
                T[:, 0, 0], T[:, 1, 1], T[:, 2, 2] = A, 1.0, kk
                g = np.stack([c, np.zeros(d), c], 1)
                mean = np.einsum("dij,dj->di", T, mean)
                mean[:, 0] += B
                cov = T @ cov @ T.transpose(0, 2, 1) + g[:, :, None] * g[:, None, :]
                var_z = kk * kk * var_z + float(c.max() ** 2 if keep.any() else 0.0)
                if coarse and (k + 1) % M == 0:
                    j0 = k + 1 - M
                    Ac, Bc, cc = self._affine(abf[j0], abf[k + 1], e, mu)
                    r = cc / math.sqrt(var_z) if var_z > 0 else 0.0
                    Ac, Bc, r = np.where(keep, Ac, 1.0), np.where(keep, Bc, 0.0), np.where(keep, r, 0.0)
                    T = np.zeros((d, 3, 3))
                    T[:, 0, 0], T[:, 1, 1], T[:, 1, 2] = 1.0, Ac, r
                    mean = np.einsum("dij,dj->di", T, mean)
                    mean[:, 1] += Bc
                    cov = T @ cov @ T.transpose(0, 2, 1)
                    var_z = 0.0
            mf, mc = mean[:, 0], mean[:, 1]
            vf, vc, cfc = cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1]
            Pf = mf**2 + vf
            out["mean_fine"].append(Pf.tolist())
            out["var_fine"].append(float(np.mean(2 * vf**2 + 4 * mf**2 * vf)))
            if coarse:
                Pc = mc**2 + vc
                V = 2 * vf**2 + 4 * mf**2 * vf + 2 * vc**2 + 4 * mc**2 * vc - 2 * (2 * cfc**2 + 4 * mf * mc * cfc)
                out["mean"].append(float(np.sqrt(np.mean((Pf - Pc) ** 2))))
                out["var"].append(float(np.mean(np.maximum(V, 0.0))))
            else:
                out["mean"].append(float(np.sqrt(np.mean(Pf**2))))
                out["var"].append(out["var_fine"][-1])
        return out

    def _affine(self, ab_t: float, ab_s: float, eta: float, mu: np.ndarray):
        """``x_s = A x_t + B + c xi`` for one DDIM step with the exact noise prediction."""
        a, b, c, _ = ddim_coefficients(ab_t, ab_s, eta)
        sig = math.sqrt(1 - ab_t)
        v = ab_t * self.s**2 + 1 - ab_t
        A = np.full_like(mu, a + b * sig / v)
        B = -b * sig * math.sqrt(ab_t) * mu / v
        return A, B, np.full_like(mu, c)


def gaussian_problem(d: int = 4, *, s: float = 0.5, sampler: str = "ddpm", eta: float | None = None,
                     schedule: VPSchedule | None = None, seed: int = 0, M: int = 2, T0: int = 1,
                     device=None) -> tuple[CoupledDiffusion, GaussianData]:
    """The exact-Gaussian MLMC problem: ``(level sampler, data)`` with means spread in ``[-1, 1]``.

    The quantity is ``x**2`` per component, whose exact value is ``data.second_moment()``.
    """
    schedule = schedule or VPSchedule(beta_max=20.0)
    mu = torch.linspace(-1.0, 1.0, d) if d > 1 else torch.tensor([1.0])
    data = GaussianData(mu, s, schedule)
    lv = CoupledDiffusion(data.eps, shape=(d,), schedule=schedule, sampler=sampler, eta=eta, M=M, T0=T0,
                          seed=seed, device=device)
    return lv, data


def run_gaussian(out_dir: str | None = None, *, d: int = 4, sampler: str = "ddpm", eta: float | None = None,
                 n: int = 20000, L: int = 8, eps=(0.02, 0.01, 0.005, 0.0025), M: int = 2,
                 start_level="auto", spacing: str = "quadratic", seed: int = 0, progress: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """The exact-Gaussian MLMC test: measured vs exact rates, estimate error vs truth.

    Returns a JSON-able dict with ``convergence``, ``complexity``, ``exact`` (per-level exact
    values and rates on the fitted levels) and ``error`` (RMS error of each MLMC estimate
    against the exact second moment of the data and against the sampler's exact limit).
    """
    data = GaussianData(torch.linspace(-1.0, 1.0, d) if d > 1 else torch.tensor([1.0]), 0.5, VPSchedule())
    lv = CoupledDiffusion(data.eps, shape=(d,), schedule=data.schedule, sampler=sampler, eta=eta, M=M,
                          spacing=spacing, seed=seed)
    t0 = time.time()
    res = mlmc_test(lv, n=n, L=L, eps=eps, M=M, start_level=start_level, progress=progress, estimates=True)
    conv = res["convergence"]
    ex = data.exact_levels(range(L + 1), sampler=sampler, eta=eta, M=M, spacing=spacing)
    fit = conv["fit_levels"]
    res["exact"] = {"mean": ex["mean"], "var": ex["var"], "var_fine": ex["var_fine"],
                    "alpha": fit_rate(fit, [ex["mean"][i] for i in fit], M),
                    "beta": fit_rate(fit, [ex["var"][i] for i in fit], M)}
    truth = data.second_moment().numpy()
    limit = np.asarray(data.exact_levels([14], sampler=sampler, eta=eta, M=M, spacing=spacing)["mean_fine"][0])
    est = np.asarray(res["complexity"].pop("estimates"))
    res["truth"] = truth.tolist()
    res["limit"] = limit.tolist()
    res["error"] = {"vs_truth": np.sqrt(((est - truth) ** 2).mean(1)).tolist(),
                    "vs_limit": np.sqrt(((est - limit) ** 2).mean(1)).tolist(),
                    "note": "rms over components; truth = mu^2 + s^2 of the data, limit = the sampler's exact "
                            "value with 2^14 steps (differs from the truth by the finite-time error)"}
    res["seconds"] = time.time() - t0
    res["settings"] = {"experiment": "gaussian", "d": d, "s": 0.5, "sampler": sampler, "eta": lv.eta, "n": n, "L": L,
                       "M": M, "spacing": spacing, "seed": seed, "schedule": data.schedule.to_dict()}
    if out_dir is not None:
        res["files"] = save_result(res, out_dir, f"gaussian_{sampler}", f"exact Gaussian, {sampler}", log)
    return res
