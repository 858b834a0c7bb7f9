r"""Coupled coarse/fine reverse-diffusion paths: the MLMC levels of Haji-Ali et al. (2025).

Level :math:`\ell` runs the reverse process with :math:`T_0 M^\ell` steps on the nested time
grid of :meth:`telescope.diffusion.VPSchedule.timesteps`, so the coarse grid (level
:math:`\ell-1`) is every :math:`M`-th point of the fine one.  Fine and coarse paths start from
the same state and are driven by the same Gaussian increments (Algorithm 2): the fine path
takes :math:`M` steps ``t -> t - Δ`` with noise :math:`\eta_f = c_i \xi_i`, and the coarse
noise over the same interval is the propagated sum of those increments,

.. math:: z \leftarrow k_i z + \eta_f^{(i)}, \qquad i = 1..M,

where :math:`k_i` is the factor by which fine step :math:`i` carries a perturbation of
:math:`x_t - \sqrt{\bar\alpha_t} x_0` at fixed :math:`x_0` (line 6 of Algorithm 2; for DDPM
:math:`k = \sqrt{\gamma_t/\gamma_{t-\Delta}}\,\Gamma_{t-\Delta}/\Gamma_t`).  For DDPM
(``eta = 1``) the sum has exactly the variance of the coarse step, eq. (12).  For DDIM with
``0 < eta < 1`` the fine kernels do not compose to the coarse one, so :math:`z` is rescaled
to the coarse step's standard deviation: the coarse path is then an exact DDIM(``eta``)
sampler with :math:`T_0 M^{\ell-1}` steps (the telescoping sum stays unbiased) whose noise is
maximally correlated with the fine path's.  With ``eta = 0`` (deterministic DDIM, the
probability-flow ODE) the only randomness is the shared start state.

The start state follows the three cases of Section 2.2,
:math:`x_T \sim \mathcal{N}((I-\mathbb{M})x_{obs}, \mathbb{M})`: ``init="noise"``
(:math:`\mathbb{M} = I`), ``"observation"`` (:math:`\mathbb{M} = 0`, e.g. a rescaled noisy
image, started at the matching time ``t_start``) and ``"mask"`` (binary :math:`\mathbb{M}`;
observed components are held fixed along the path, the same mask defining the transitions).

Cost is counted in network evaluations (NFEs): a pair on level :math:`\ell \ge 1` costs
:math:`T_0(M^\ell + M^{\ell-1})` per sample.  The fine and coarse states are evaluated in
one batched network call whenever they sit at the same time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..diffusion import EpsFn, VPSchedule, _check_clip, ddim_coefficients, initial_state, predict_x0, sampler_eta
from ..utils import as_device

__all__ = ["CoupledDiffusion", "square"]


def square(x: Tensor) -> Tensor:
    """The pixel-wise second moment quantity ``f(x) = x**2`` (the paper's choice)."""
    return x * x


class CoupledDiffusion:
    r"""A level sampler for :func:`telescope.mlmc.mlmc` from any noise-prediction network.

    Arguments:
        eps: noise-prediction callable ``eps(x_t, t, y)`` (``t`` a tensor ``(n,)``).
        shape: event shape of one sample (taken from ``x_obs`` when given).
        schedule: the VP schedule the network was trained with (default ``VPSchedule()``).
        y: ONE observation to condition ``eps`` on (passed expanded to the batch), or None.
        sampler: ``"ddpm"`` (``eta = 1``), ``"ddim"`` (with ``eta``) or ``"ode"`` (``eta = 0``).
        eta: DDIM ``eta`` for ``sampler="ddim"``.
        init: ``"noise"``, ``"observation"`` or ``"mask"`` (Section 2.2; module docs).
        x_obs: observation-derived start state ``(*event)`` for ``"observation"``/``"mask"``.
        mask: 0/1 tensor of the event shape for ``init="mask"`` (1 = unknown).
        T0: steps on level 0; level ``l`` has ``T0 * M**l`` steps.
        M: refinement factor (>= 2).
        t_start, t_end, spacing: the time grid (:meth:`VPSchedule.timesteps`).
        quantity: ``f`` mapping states ``(n, *event)`` to quantities ``(n, *q)``
            (default :func:`square`).
        seed: seed of the sampler's own generator (or pass ``generator``).
        device, dtype: where and in which precision paths are run.
        clip_x0: clamp the denoised estimate to the data range at every step (``None``, ``c``
            for ``[-c, c]`` or ``(lo, hi)``; :func:`telescope.diffusion.deterministic_part`);
            the same map on both paths, so the coupling is unchanged.
        batch_size: most paths simulated at once.

    Calling ``sampler(level, n)`` returns ``(f(x_fine), f(x_coarse), nfe)``; with
    ``coarse=False`` (or at level 0) only the fine path is run and ``f(x_coarse)`` is None.

    Example:
        >>> from telescope.mlmc import mlmc
        >>> eps = lambda x, t, y: torch.zeros_like(x)        # data N(0, I): exact
        >>> lv = CoupledDiffusion(eps, shape=(2,), seed=0)
        >>> pf, pc, nfe = lv(3, 5)
        >>> pf.shape, pc.shape, nfe
        (torch.Size([5, 2]), torch.Size([5, 2]), 60)
    """

    def __init__(self, eps: EpsFn, *, shape: tuple[int, ...] | None = None, schedule: VPSchedule | None = None,
                 y: Tensor | None = None, sampler: str = "ddpm", eta: float | None = None, init: str = "noise",
                 x_obs: Tensor | None = None, mask: Tensor | None = None, T0: int = 1, M: int = 2,
                 t_start: float = 1.0, t_end: float = 0.0, spacing: str = "uniform",
                 quantity: Callable[[Tensor], Tensor] | None = None, seed: int | None = 0,
                 generator: torch.Generator | None = None, device=None, dtype: torch.dtype = torch.float32,
                 clip_x0=None, batch_size: int | None = 8192):
        if not callable(eps):
            raise TypeError(f"eps must be callable as eps(x_t, t, y), got {type(eps).__name__}")
        if isinstance(M, bool) or int(M) != M or M < 2:
            raise ValueError(f"M must be an integer >= 2, got {M!r}")
        if isinstance(T0, bool) or int(T0) != T0 or T0 < 1:
            raise ValueError(f"T0 must be an integer >= 1, got {T0!r}")
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.eps, self.M, self.T0 = eps, int(M), int(T0)
        self.schedule = schedule or VPSchedule()
        self.eta = sampler_eta(sampler, eta)
        self.device, self.dtype = as_device(device), dtype
        self.init = init
        self.x_obs = None if x_obs is None else torch.as_tensor(x_obs, dtype=dtype, device=self.device)
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=dtype, device=self.device)
        if shape is None and self.x_obs is None:
            raise ValueError("CoupledDiffusion needs shape (the event shape) or x_obs")
        self.shape = tuple(self.x_obs.shape) if self.x_obs is not None else tuple(shape)
        initial_state(1, self.shape, init=init, x_obs=self.x_obs, mask=self.mask, device=self.device,
                      dtype=dtype)  # validates init / x_obs / mask
        self.keep = self.mask.bool() if (init == "mask") else None
        self.y = None if y is None else torch.as_tensor(y, dtype=dtype, device=self.device)
        self.schedule.timesteps(1, t_start, t_end, spacing)  # validates the grid arguments
        self.t_start, self.t_end, self.spacing = float(t_start), float(t_end), spacing
        self.quantity = quantity or square
        if generator is None:
            generator = torch.Generator(device=self.device)
            if seed is not None:
                generator.manual_seed(int(seed))
            else:
                generator.seed()
        self.generator = generator
        self.clip = _check_clip(clip_x0)
        self.batch_size = batch_size
        self._grids: dict[int, tuple] = {}

    # -- bookkeeping ------------------------------------------------------------------
    def steps(self, level: int) -> int:
        """Number of steps (network evaluations per path) on ``level``."""
        return self.T0 * self.M**level

    def cost(self, level: int) -> float:
        """NFEs of one fine path on ``level`` (the cost model for :func:`telescope.mlmc.mlmc`)."""
        return float(self.steps(level))

    def _grid(self, level: int):
        if level not in self._grids:
            t = self.schedule.timesteps(self.steps(level), self.t_start, self.t_end, self.spacing)
            ab = self.schedule.alpha_bar(t).tolist()
            coef = [(*ddim_coefficients(ab[k], ab[k + 1], self.eta), ab[k], ab[k + 1]) for k in range(len(ab) - 1)]
            self._grids[level] = (t.tolist(), coef)
        return self._grids[level]

    def _eps(self, x: Tensor, t: float) -> Tensor:
        n = x.shape[0]
        tt = torch.full((n,), t, dtype=self.dtype, device=self.device)
        y = None if self.y is None else self.y.expand(n, *self.y.shape)
        return self.eps(x, tt, y)

    def _drift(self, x: Tensor, e: Tensor, coef: tuple) -> Tensor:
        a, b, _, k, ab_t, ab_s = coef
        if self.clip is None:
            return a * x + b * e
        x0 = predict_x0(x, e, ab_t).clamp(*self.clip)
        return k * x + (math.sqrt(ab_s) - k * math.sqrt(ab_t)) * x0

    def _noise(self, n: int) -> Tensor:
        return torch.randn((n, *self.shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def _fix(self, x: Tensor, x_start: Tensor) -> Tensor:
        return x if self.keep is None else torch.where(self.keep, x, x_start)

    # -- paths ------------------------------------------------------------------------
    @torch.no_grad()
    def paths(self, level: int, n: int, coarse: bool = True) -> tuple[Tensor, Tensor | None]:
        """``n`` coupled end states ``(x_fine, x_coarse)`` on ``level``, each ``(n, *event)``.

        ``x_coarse`` is None at level 0 or with ``coarse=False``.
        """
        if isinstance(level, bool) or int(level) != level or level < 0:
            raise ValueError(f"level must be an integer >= 0, got {level!r}")
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        level, n = int(level), int(n)
        coarse = coarse and level > 0
        outs_f, outs_c = [], []
        step = n if self.batch_size is None else self.batch_size
        for start in range(0, n, step):
            m = min(step, n - start)
            xf, xc = self._pair(level, m) if coarse else (self._single(level, m), None)
            outs_f.append(xf)
            if xc is not None:
                outs_c.append(xc)
        return torch.cat(outs_f), (torch.cat(outs_c) if coarse else None)

    def _start(self, n: int) -> Tensor:
        return initial_state(n, self.shape, init=self.init, x_obs=self.x_obs, mask=self.mask,
                             generator=self.generator, device=self.device, dtype=self.dtype)

    def _single(self, level: int, n: int) -> Tensor:
        grid, coef = self._grid(level)
        x0 = self._start(n)
        x = x0
        for k, cf in enumerate(coef):
            c = cf[2]
            x_new = self._drift(x, self._eps(x, grid[k]), cf)
            if c > 0:
                x_new = x_new + c * self._noise(n)
            x = self._fix(x_new, x0)
        return x

    def _pair(self, level: int, n: int) -> tuple[Tensor, Tensor]:
        grid_f, coef_f = self._grid(level)
        grid_c, coef_c = self._grid(level - 1)
        M = self.M
        x0 = self._start(n)
        xf, xc = x0, x0
        for j, cf_c in enumerate(coef_c):
            cc = cf_c[2]
            # one network call for both paths at the shared time grid_c[j] == grid_f[j * M]
            e = self._eps(torch.cat([xf, xc]), grid_c[j])
            ef, ec = e[:n], e[n:]
            z = torch.zeros_like(xf) if cc > 0 else None
            var_z = 0.0
            for i in range(M):
                k = j * M + i
                _, _, c, kk = coef_f[k][:4]
                if i > 0:
                    ef = self._eps(xf, grid_f[k])
                x_new = self._drift(xf, ef, coef_f[k])
                if c > 0:
                    eta_f = c * self._noise(n)
                    x_new = x_new + eta_f
                    if z is not None:
                        z = kk * z + eta_f
                        var_z = kk * kk * var_z + c * c
                elif z is not None:
                    z = kk * z
                    var_z = kk * kk * var_z
                xf = self._fix(x_new, x0)
            xc_new = self._drift(xc, ec, cf_c)
            if cc > 0 and var_z > 0:
                xc_new = xc_new + (cc / math.sqrt(var_z)) * z
            elif cc > 0:  # no fine noise to share (cannot happen for eta > 0); keep the law right
                xc_new = xc_new + cc * self._noise(n)
            xc = self._fix(xc_new, x0)
        return xf, xc

    # -- the level-sampler protocol ---------------------------------------------------
    def __call__(self, level: int, n: int, coarse: bool = True):
        """``(f(x_fine), f(x_coarse) or None, NFEs of the n samples)`` on ``level``."""
        xf, xc = self.paths(level, n, coarse)
        nfe = n * self.steps(level) + (n * self.steps(level - 1) if xc is not None else 0)
        return self.quantity(xf), (None if xc is None else self.quantity(xc)), nfe

    def __repr__(self) -> str:
        return (f"CoupledDiffusion(eta={self.eta}, init={self.init!r}, T0={self.T0}, M={self.M}, "
                f"shape={self.shape}, t_start={self.t_start}, t_end={self.t_end})")
