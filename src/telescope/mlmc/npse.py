r"""MLMC over the number of sampler steps for telescope's own NPSE posteriors (experiment (b)).

Haji-Ali, Pereyra, Shaw, Zygalakis (2025) estimate posterior expectations
:math:`E[f(\theta) | x]` from a diffusion sampler by the telescoping sum over samplers with
:math:`T_0 M^\ell` reverse steps (eq. (14), Algorithm 1), the fine and coarse paths of a level
driven by the same Gaussian increments (Algorithm 2, :class:`telescope.mlmc.CoupledDiffusion`).
Here the diffusion model is a trained :class:`telescope.NPSE` (Linhart et al., 2024):

* one observation: the network :math:`\epsilon_\psi(z_t, x_o, t)`;
* an i.i.d. set :math:`x_{1:n}`: the GAUSS composition of the per-observation predictions
  (Lemma 3.2 and Algorithm 1 of Linhart et al., 2024; :meth:`telescope.NPSE.noise_predictor`), one composed
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

References:
    Haji-Ali, Pereyra, Shaw & Zygalakis (2025), "Bayesian computation with generative diffusion models by
    Multilevel Monte Carlo", arXiv:2409.15511.
    Linhart, Cardoso, Gramfort, Le Corff & Rodrigues (2024), "Diffusion posterior sampling for simulation-based
    inference in tall data settings", arXiv:2404.07593.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .coupled import CoupledDiffusion

__all__ = ["gaussian_linear_moments", "npse_problem"]


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
