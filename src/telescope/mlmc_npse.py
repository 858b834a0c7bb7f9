r"""MLMC over the number of sampler steps for telescope's own NPSE posteriors (experiment (b)).

Haji-Ali, Pereyra, Shaw, Zygalakis (2025) estimate posterior expectations
:math:`E[f(\theta) | x]` from a diffusion sampler by the telescoping sum over samplers with
:math:`T_0 M^\ell` reverse steps (eq. (14), Algorithm 1), the fine and coarse paths of a level
driven by the same Gaussian increments (Algorithm 2, :class:`telescope.mlmc.CoupledDiffusion`).
Here the diffusion model is a trained :class:`telescope.NPSE` (Linhart et al. 2024, paper 3):

* one observation: the network :math:`\epsilon_\psi(z_t, x_o, t)`;
* an i.i.d. set :math:`x_{1:n}`: the GAUSS composition of the per-observation predictions
  (paper 3, Lemma 3.2 and Algorithm 1; :meth:`telescope.NPSE.noise_predictor`), one composed
  prediction costing :math:`n` network evaluations.

Paths run in the network's standardised space :math:`z`; the quantity is
:math:`f(z) = (\theta, \theta^2)` with :math:`\theta` mapped back to parameter units, so one MLMC
run estimates the posterior mean and second moment (and the variance
:math:`E\theta^2 - (E\theta)^2`), with ``eps`` the root-mean-square error per component of the
``2 d`` moments.  Costs are network evaluations (NFEs), so the savings are NFEs of standard MC
over NFEs of MLMC at equal RMSE; the fixed cost of the GAUSS pilot (paid once per observation
set, by both estimators) is reported separately.

The test problem is the Gaussian-linear task (``theta ~ N(0, s0^2 I)``, ``x | theta ~ N(theta,
s^2 I)``), whose single and tall posteriors are Gaussian with known moments
(:func:`gaussian_linear_moments`), so the MLMC estimates can be compared with the truth; what
remains at small ``eps`` is the error of the trained network (and of GAUSS) itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .mlmc.coupled import CoupledDiffusion
from .mlmc_experiments import _save, summary

__all__ = ["gaussian_linear_moments", "npse_problem", "train_npse_gaussian_linear", "run_npse"]


def gaussian_linear_moments(prior_var: float, noise_var: float, x_set: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and variance ``(d,)`` (float64) of the Gaussian-linear posterior given ``x_set (n, d)``.

    With :math:`\theta \sim \mathcal{N}(0, s_0^2 I)` and :math:`x_j | \theta \sim \mathcal{N}(\theta, s^2 I)`,
    the tall posterior is :math:`\mathcal{N}(\frac{\sum_j x_j / s^2}{1/s_0^2 + n/s^2}, \frac{1}{1/s_0^2 + n/s^2} I)`.

    Example:
        >>> m, v = gaussian_linear_moments(1.0, 0.5, torch.tensor([[1.0], [2.0]]))
        >>> m.tolist(), v.tolist()
        ([1.2], [0.2])
    """
    x_set = torch.as_tensor(x_set, dtype=torch.float64)
    x_set = x_set.reshape(1, -1) if x_set.dim() == 1 else x_set
    prec = 1.0 / prior_var + x_set.shape[0] / noise_var
    mean = x_set.sum(0) / noise_var / prec
    return mean, torch.full_like(mean, 1.0 / prec)


def npse_problem(est, x, *, sampler: str = "ddpm", eta: float | None = None, M: int = 2, T0: int = 1,
                 spacing: str = "quadratic", clip: bool = True, method: str = "gauss", pilot_samples: int = 1024,
                 pilot_steps: int = 50, seed: int = 0) -> tuple[Callable, dict]:
    r"""The MLMC level sampler for :math:`E[(\theta, \theta^2) | x]` under a trained NPSE.

    Arguments:
        est: a fitted :class:`telescope.NPSE`.
        x: one observation, or a set ``(n_obs, *x_shape)`` (tall posterior, ``method`` GAUSS or JAC).
        sampler, eta, M, T0, spacing: the coupled reverse sampler (:class:`CoupledDiffusion`);
            level ``l`` has ``T0 * M**l`` steps.
        clip: clamp denoised estimates to the widened training range (:meth:`NPSE.noise_predictor`).
        method, pilot_samples, pilot_steps: tall-data composition and its pilot.
        seed: seeds the pilot and the sampler's noise.

    Returns:
        ``(level sampler, info)``: ``sampler(level, n, coarse=True) -> (P_fine (n, 2d), P_coarse, NFEs)``
        with NFEs counting network evaluations (``n_obs`` per composed prediction), and ``info``
        the settings, ``nfe_per_row`` and the pilot cost.
    """
    eps = est.noise_predictor(x, method=method, clip=clip, pilot_samples=pilot_samples, pilot_steps=pilot_steps,
                              seed=seed)
    net = est.net
    d = est.dim_theta

    def quantity(z: Tensor) -> Tensor:
        theta = net.from_working(z)
        return torch.cat([theta, theta * theta], -1)

    lv = CoupledDiffusion(eps, shape=(d,), schedule=est.schedule, sampler=sampler, eta=eta, M=M, T0=T0,
                          spacing=spacing, quantity=quantity, seed=seed, device=est.device)
    k = int(eps.nfe_per_row)

    def level_sampler(level: int, n: int, coarse: bool = True):
        pf, pc, nfe = lv(level, n, coarse=coarse)
        return pf, pc, nfe * k

    level_sampler.coupled = lv  # the CoupledDiffusion underneath (paths in the working space)
    info = {"n_obs": k, "nfe_per_row": k, "sampler": {1.0: "ddpm", 0.0: "ode"}.get(lv.eta, f"ddim(eta={lv.eta})"),
            "eta": lv.eta, "M": M, "T0": T0, "spacing": spacing, "clip": clip,
            "quantity": "(theta, theta^2) per coordinate, theta in parameter units"}
    if k > 1:
        info.update(method=method, pilot_samples=pilot_samples, pilot_steps=pilot_steps,
                    pilot_nfe=pilot_samples * pilot_steps * k,
                    gauss_fallback=eps.info.get("gauss_fallback"))
    return level_sampler, info


def train_npse_gaussian_linear(*, dim: int = 2, prior_var: float = 1.0, noise_var: float = 0.5, n_sims: int = 5000,
                               max_epochs: int = 300, small: bool = True, model: str | None = None, seed: int = 0,
                               progress: bool = False, log: Callable[[str], None] = print):
    """Simulate the Gaussian-linear task and fit an NPSE (or load it from ``model`` when that file exists).

    Returns:
        ``(est, task, config)``.
    """
    import os

    import telescope as ts

    from .estimators.npse import NPSE

    task = ts.tasks.get("gaussian_linear", dim=dim, prior_var=prior_var, noise_var=noise_var)
    sizes = dict(hidden=(128, 128), embed=32, embed_hidden=(64, 64), frequencies=16) if small else {}
    cfg = {"task": "gaussian_linear", "dim": dim, "prior_var": prior_var, "noise_var": noise_var, "n_sims": n_sims,
           "max_epochs": max_epochs, "net": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
           "seed": seed}
    if model is not None and os.path.exists(model):
        est = ts.load(model, task.prior)
        log(f"loaded NPSE from {model}")
        return est, task, {**cfg, "loaded": model}
    theta, x = ts.simulate(task.simulator, task.prior, n_sims, seed=seed, progress_bar=False)
    t0 = time.time()
    est = NPSE(task.prior, seed=seed, **sizes).fit(theta, x, max_epochs=max_epochs, progress_bar=progress)
    cfg.update(train_seconds=time.time() - t0, epochs=est.history.get("epochs"))
    log(f"trained NPSE on {n_sims} simulations: {cfg['epochs']} epochs in {cfg['train_seconds']:.0f}s")
    if model is not None:
        est.save(model)
        log(f"saved NPSE to {model}")
    return est, task, cfg


def _compare(est_vectors: list, mean: Tensor, var: Tensor) -> dict:
    """Estimates of ``(E theta, E theta^2)`` against the analytic posterior moments."""
    d = mean.numel()
    truth = np.concatenate([mean.numpy(), (mean**2 + var).numpy()])
    out: dict = {"truth_mean": mean.tolist(), "truth_var": var.tolist(), "estimate_mean": [], "estimate_var": [],
                 "rms_error_moments": [], "abs_error_mean_in_sd": [], "var_ratio": []}
    for e in est_vectors:
        e = np.asarray(e, dtype=float)
        m, s2 = e[:d], e[d:]
        v = s2 - m**2
        out["estimate_mean"].append(m.tolist())
        out["estimate_var"].append(v.tolist())
        out["rms_error_moments"].append(float(np.sqrt(np.mean((e - truth) ** 2))))
        out["abs_error_mean_in_sd"].append((np.abs(m - mean.numpy()) / np.sqrt(var.numpy())).tolist())
        out["var_ratio"].append((v / var.numpy()).tolist())
    return out


def _std_cost_beyond_convergence(res: dict, M: int, theta: float = 0.5) -> None:
    r"""Standard-MC cost for tolerances whose finest MLMC level lies beyond the convergence test.

    :func:`telescope.mlmc.complexity_test` takes :math:`V[P_L]` from the convergence test when
    ``L`` lies within it, else from the driver's own fine samples on level ``L`` (often only
    ``n_min`` of them, a noisy estimate).  :math:`V[P_\ell]` converges to the posterior variance of
    ``f`` as steps grow, so beyond the convergence test the value of its finest level is used
    (with the exact cost :math:`C_L = C_{L_c} M^{L - L_c}`); the driver's own figures are kept as
    ``std_cost_driver`` / ``savings_driver``.
    """
    conv, comp = res["convergence"], res["complexity"]
    Lc = conv["levels"][-1]
    vf, cf = conv["var_fine"][-1], conv["cost_fine"][-1]
    comp["std_cost_driver"] = list(comp["std_cost"])
    comp["savings_driver"] = list(comp["savings"])
    for i, (e, levels) in enumerate(zip(comp["eps"], comp["levels"])):
        if levels[-1] > Lc:
            comp["std_cost"][i] = vf * cf * float(M) ** (levels[-1] - Lc) / ((1 - theta) * e**2)
            comp["savings"][i] = comp["std_cost"][i] / comp["mlmc_cost"][i]
    comp["std_cost_rule"] = (f"V[P_L] C_L / (eps^2 / 2); V[P_L] from the convergence test, its finest level "
                             f"{Lc} for L > {Lc}")


def run_npse(out_dir: str | None = None, *, dim: int = 2, prior_var: float = 1.0, noise_var: float = 0.5,
             n_sims: int = 5000, max_epochs: int = 300, model: str | None = None, n_obs: int = 8,
             posteriors=("single", "tall"), sampler: str = "ddpm", eta: float | None = None, n: int = 2000,
             L: int = 10, n_tall: int = 1000, L_tall: int = 9, eps=(0.01, 0.005, 0.0025),
             eps_tall=(0.008, 0.004, 0.002), M: int = 2, start_level="auto", spacing: str = "quadratic",
             clip: bool = True, seed: int = 0, progress: bool = False,
             log: Callable[[str], None] = print) -> dict:
    r"""Experiment (b): MLMC for the posterior mean and second moment of NPSE posteriors.

    Trains (or loads) an NPSE on the Gaussian-linear task, draws a true parameter from the
    prior and ``n_obs`` observations of it, and for the single-observation posterior (the first
    observation) and the tall GAUSS posterior of all ``n_obs`` runs Giles' convergence test
    (``n`` coupled samples on levels ``0..L``) and complexity test (``eps``, resp. ``eps_tall``:
    rms error per component of :math:`(E\theta, E\theta^2)`), compares each MLMC estimate with
    the analytic posterior moments, and draws the Figure-3 panels.

    Returns:
        ``{"model": config, "theta_true", "x", "single": result, "tall": result}``; each result is
        the :func:`telescope.mlmc.mlmc_test` output plus ``problem`` (settings), ``truth``
        (analytic moments, and each estimate's error) and ``seconds``.
    """
    from .mlmc.driver import mlmc_test

    bad = [p for p in posteriors if p not in ("single", "tall")]
    if bad or not posteriors:
        raise ValueError(f"posteriors must be a non-empty subset of ('single', 'tall'), got {posteriors!r}")
    if isinstance(n_obs, bool) or int(n_obs) < 2:
        raise ValueError(f"n_obs must be an integer >= 2 (the tall posterior), got {n_obs!r}")
    est, task, cfg = train_npse_gaussian_linear(dim=dim, prior_var=prior_var, noise_var=noise_var, n_sims=n_sims,
                                                max_epochs=max_epochs, model=model, seed=seed, progress=progress,
                                                log=log)
    g = torch.Generator().manual_seed(seed + 7)
    theta_true = math.sqrt(prior_var) * torch.randn(dim, generator=g)
    x_set = theta_true + math.sqrt(noise_var) * torch.randn(int(n_obs), dim, generator=g)
    out: dict = {"model": cfg, "theta_true": theta_true.tolist(), "x": x_set.tolist()}
    for which in posteriors:
        t0 = time.time()
        xs = x_set[:1] if which == "single" else x_set
        tol, nn, LL = (eps, n, L) if which == "single" else (eps_tall, n_tall, L_tall)
        lv, info = npse_problem(est, xs, sampler=sampler, eta=eta, M=M, spacing=spacing, clip=clip, seed=seed)
        res = mlmc_test(lv, n=nn, L=LL, eps=tuple(tol), M=M, start_level=start_level, progress=progress,
                        estimates=True)
        _std_cost_beyond_convergence(res, M)
        mean, var = gaussian_linear_moments(prior_var, noise_var, xs)
        res["truth"] = _compare(res["complexity"].pop("estimates"), mean, var)
        res["problem"] = {**info, "n_obs": int(xs.shape[0]), "posterior": which}
        res["seconds"] = time.time() - t0
        s = summary(res)
        rates = " ".join(f"{k}={s[k]:.2f}" if s[k] is not None else f"{k}=nan" for k in ("alpha", "beta", "gamma"))
        log(f"{which}: {rates} l0={s['start_level']} "
            f"savings={[round(v, 1) for v in s['savings']]} rms err vs truth="
            f"{[round(v, 4) for v in res['truth']['rms_error_moments']]} ({res['seconds']:.0f}s)")
        if out_dir is not None:
            what = "one observation" if which == "single" else f"GAUSS, {n_obs} observations"
            title = f"NPSE Gaussian-linear (d={dim}), {what}, {info['sampler']}"
            res["files"] = _save(res, out_dir, f"npse_{which}", title, log)
        out[which] = res
    return out
