r"""NPSE's sampling settings and its tall-data branch: the posterior of a set of observations.

For ``n_obs > 1`` observations of one parameter, :meth:`telescope.estimators.NPSE.sample` draws from the
tall posterior :math:`p(\theta | x_{1:n}) \propto \lambda^{1-n}\prod_j p(\theta | x_j)` with GAUSS, JAC
or F-NPSE (:mod:`telescope.samplers.tall`; Linhart et al., 2024); :func:`sample_tall` is that branch,
documented (options and defaults) by :meth:`~telescope.estimators.NPSE.sample`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..diffusion import sampler_eta
from ..samplers.tall import TallSampler, auto_settings, split_check
from ..utils import check_count

__all__ = ["DEFAULT_ETA"]

#: DDIM ``eta`` of :meth:`NPSE.sample` unless given.  With a learned network a nearly deterministic
#: sampler (small ``eta``) lets a few trajectories run astray, while ``eta = 1`` (DDPM) loses
#: variance at few steps; 0.8 was the best compromise on Gaussian-linear checks (the paper's
#: choice for a number of steps is :func:`telescope.samplers.tall.paper_eta`).
DEFAULT_ETA = 0.8


def sample_tall(est, xs: Tensor, n: int, *, method: str | None, steps: int | None, sampler: str, eta: float | None,
                spacing: str | None, clip: bool, seed: int | None, pilot_samples: int | None, pilot_steps: int,
                langevin_steps: int, tau: float, prior_term: str, prior_kernel: str | None,
                corrector_steps: int | None, refine_steps: int | None, refine_step: float,
                refine_t_min: float | None, stop_t: float | None, stop_cov: str | None, stop_kernel: str | None,
                max_time: float, progress_bar: bool) -> Tensor:
    """``n`` samples ``(n, d)`` of the tall posterior of ``xs (n_obs, *x_shape)`` under the trained NPSE ``est``;
    the run's details go to ``est.sample_info``."""
    net, prior = est._trained(), est.prior_score()
    chose_auto = method == "auto"
    if chose_auto:
        given = {"steps": steps, "spacing": spacing, "prior_kernel": prior_kernel, "corrector_steps": corrector_steps,
                 "refine_steps": refine_steps, "refine_t_min": refine_t_min, "stop_t": stop_t,
                 "pilot_samples": pilot_samples, "stop_cov": stop_cov, "stop_kernel": stop_kernel}
        method, settings = _auto(prior, xs.shape[0], given)
        (steps, spacing, prior_kernel, corrector_steps, refine_steps, refine_t_min, stop_t, pilot_samples,
         stop_cov, stop_kernel) = settings
    method = method or "gauss"
    spacing = spacing or "uniform"
    pilot_samples = 256 if pilot_samples is None else pilot_samples
    gen = est._generator(seed)
    steps = check_count("steps", steps) if steps is not None else None
    if method != "fnpse":
        eta = sampler_eta(sampler, eta if eta is not None or sampler != "ddim" else DEFAULT_ETA)
    ts = TallSampler(est._eps_set(xs), xs.shape[0], prior, method=method, schedule=est.schedule, steps=steps,
                     eta=eta, spacing=spacing, pilot_samples=check_count("pilot_samples", pilot_samples, 2),
                     pilot_steps=check_count("pilot_steps", pilot_steps), langevin_steps=langevin_steps, tau=tau,
                     prior_term=prior_term, clip=net.clip_range() if clip else None, generator=gen,
                     device=est.device, progress_bar=progress_bar, prior_kernel=prior_kernel or "gaussian",
                     corrector_steps=corrector_steps or 0, refine_steps=refine_steps or 0, refine_step=refine_step,
                     stop_t=stop_t or 0.0, stop_cov=stop_cov or "batch", stop_kernel=stop_kernel or "gaussian",
                     **({"refine_t_min": refine_t_min} if refine_t_min is not None else {}))
    est.sample_info = ts.info
    if chose_auto:
        est.sample_info["auto"] = True

    def draw(k: int) -> Tensor:
        return net.from_working(ts.sample(k)).unsqueeze(1)

    with torch.no_grad():
        return est._fill(draw, n, 1, max_time, f"tall sampling ({method})", stacklevel=4)[:, 0]


def tall_check(est, x, n: int, *, method: str, seed: int | None, sd_tol: float, mean_tol: float, warn: bool,
               **sample_kwargs) -> dict:
    """:meth:`NPSE.tall_check <telescope.estimators.NPSE.tall_check>` of the trained NPSE ``est``."""
    net = est._trained()
    xs = est._check_x(torch.as_tensor(x, dtype=torch.float32), "x")
    if xs.shape[0] < 4:
        raise ValueError(f"tall_check needs at least 4 observations, got x of shape {tuple(xs.shape)}")
    kw = dict(sample_kwargs, method=method)
    full = est.sample(xs, n, seed=seed, **kw)
    a = est.sample(xs[0::2], n, seed=None if seed is None else seed + 1, **kw)
    b = est.sample(xs[1::2], n, seed=None if seed is None else seed + 2, **kw)
    out = split_check(net.to_working(full), net.to_working(a), net.to_working(b),
                      None if est.learns_prior else est.prior_score(), sd_tol=sd_tol, mean_tol=mean_tol)
    if warn and not out["ok"]:
        warnings.warn(
            f"NPSE tall_check: the tall posterior of {xs.shape[0]} observations does not fit those of its two "
            f"halves (standard deviations {out['sd_ratio_min']:.2f}-{out['sd_ratio_max']:.2f} times the predicted "
            f"ones, mean {out['mean_shift']:.2f} sd from the predicted one); the tall samples are likely off. "
            f"Try more simulations, another method, or check with fewer observations", RuntimeWarning,
            stacklevel=3)
    out["samples"] = full
    return out


def _auto(prior, n_obs: int, given: dict) -> tuple[str, tuple]:
    """``method="auto"``: the method and the settings of :func:`~telescope.samplers.tall.auto_settings` for the
    prior and ``n_obs``, where ``given`` (the settings in this order) has ``None``."""
    auto = auto_settings(prior, n_obs)
    method = auto.pop("method")
    return method, tuple(given[k] if given[k] is not None else auto.get(k) for k in given)
