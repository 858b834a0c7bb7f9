r"""The variance-preserving (VP) noise schedule and reverse-diffusion samplers.

One schedule serves every diffusion model in telescope (score-based posteriors, tall-data
sampling, MLMC over step counts), so a network trained with it can be sampled by any sampler
here.  Time is continuous, :math:`t \in [0, 1]`, and the forward (noising) process is

.. math:: x_t = \sqrt{\bar\alpha(t)}\, x_0 + \sqrt{1 - \bar\alpha(t)}\, \epsilon,
          \qquad \epsilon \sim \mathcal{N}(0, I),

with :math:`\bar\alpha(0) = 1` and :math:`\bar\alpha(1) \approx 0`.  This is eq. (6) of
Haji-Ali et al. (2025) with :math:`\gamma_t = \bar\alpha(t)`, :math:`\Gamma_t = 1 - \gamma_t`,
and the :math:`\alpha_t, v_t` of Section 2.1 of Sharrock-style tall-data NPSE
(:math:`\alpha_t = \bar\alpha(t)`, :math:`v_t = 1 - \bar\alpha(t)`).  Two schedules:

* ``"linear"``: :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})` and
  :math:`\bar\alpha(t) = \exp(-\beta_{min} t - \tfrac12 (\beta_{max}-\beta_{min}) t^2)`
  (the VP-SDE of Song et al., 2021);
* ``"cosine"``: :math:`\bar\alpha(t) = \cos^2(\tfrac{\pi}{2}\tfrac{t+s}{1+s}) /
  \cos^2(\tfrac{\pi}{2}\tfrac{s}{1+s})`, floored at ``alpha_bar_min``.

Networks predict the noise, :math:`\hat\epsilon = \epsilon_\psi(x_t, t, y)`, called with
``x_t`` of shape ``(n, *event)``, ``t`` a tensor of shape ``(n,)`` and ``y`` the conditioning
(``None`` or a tensor of shape ``(n, *y_event)``).  The score is
:math:`\nabla \log q_t(x) = -\hat\epsilon / \sqrt{1-\bar\alpha(t)}` (:func:`eps_to_score`).

Reverse steps (DDIM, Song et al., 2021a; eq. (13) of Haji-Ali et al. for ``eta = 1``) go from
``t`` to ``s < t``: with :math:`\hat x_0 = (x_t - \sigma_t \hat\epsilon)/\sqrt{\bar\alpha_t}`,

.. math:: x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - c^2}\,\hat\epsilon + c\,\xi,
          \qquad c^2 = \eta^2\,\frac{1-\bar\alpha_s}{1-\bar\alpha_t}
                        \Big(1 - \frac{\bar\alpha_t}{\bar\alpha_s}\Big).

``eta = 1`` is the DDPM ancestral step (the reverse kernel of eqs. (8), (12), (13));
``eta = 0`` is deterministic DDIM, the first-order exponential integrator of the
probability-flow ODE; values in between interpolate.  A step to ``s = 0`` returns
:math:`\hat x_0` and adds no noise.

References:
    Ho, Jain, Abbeel (2020). Denoising diffusion probabilistic models.
    Song, Meng, Ermon (2021a). Denoising diffusion implicit models.
    Song et al. (2021b). Score-based generative modeling through SDEs.
    Haji-Ali, Pereyra, Shaw, Zygalakis (2025). Bayesian computation with generative
    diffusion models by multilevel Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "VPSchedule",
    "EpsFn",
    "SAMPLERS",
    "sampler_eta",
    "ddim_coefficients",
    "ddim_step",
    "deterministic_part",
    "ddpm_step",
    "ode_step",
    "predict_x0",
    "eps_to_score",
    "score_to_eps",
    "q_sample",
    "noise_prediction_loss",
    "initial_state",
    "reverse_sample",
]

EpsFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""A noise-prediction network ``eps(x_t, t, y) -> (n, *event)`` with ``t`` of shape ``(n,)``."""

#: Named samplers and their DDIM ``eta``: ``ddpm`` is ancestral sampling, ``ode`` deterministic.
SAMPLERS = {"ddpm": 1.0, "ddim": 0.0, "ode": 0.0}


def sampler_eta(sampler: str | float, eta: float | None = None) -> float:
    """The DDIM ``eta`` of a named sampler (``"ddpm"`` 1, ``"ode"`` 0, ``"ddim"`` ``eta`` or 0).

    Example:
        >>> sampler_eta("ddpm"), sampler_eta("ddim", 0.5), sampler_eta("ode")
        (1.0, 0.5, 0.0)
    """
    if isinstance(sampler, (int, float)) and not isinstance(sampler, bool):
        value = float(sampler)
    elif sampler == "ddim" and eta is not None:
        value = float(eta)
    elif sampler in SAMPLERS:
        if eta is not None and sampler != "ddim" and float(eta) != SAMPLERS[sampler]:
            raise ValueError(f"sampler={sampler!r} fixes eta={SAMPLERS[sampler]}, got eta={eta}; "
                             "use sampler='ddim' to choose eta")
        value = SAMPLERS[sampler]
    else:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)} or a number eta in [0, 1], got {sampler!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {value}")
    return value


class VPSchedule:
    r"""The variance-preserving noise schedule :math:`\bar\alpha(t)`, :math:`t \in [0, 1]`.

    Arguments:
        kind: ``"linear"`` (VP-SDE with linear :math:`\beta(t)`) or ``"cosine"``.
        beta_min: :math:`\beta(0)` of the linear schedule.
        beta_max: :math:`\beta(1)` of the linear schedule.
        s: offset of the cosine schedule.
        alpha_bar_min: floor of :math:`\bar\alpha` for the cosine schedule (whose value at
            ``t = 1`` would otherwise be 0).

    Example:
        >>> sch = VPSchedule("linear")
        >>> float(sch.alpha_bar(torch.tensor(0.0)))
        1.0
        >>> t = sch.t_from_alpha_bar(torch.tensor(0.5))
        >>> round(float(sch.alpha_bar(t)), 6)
        0.5
    """

    def __init__(self, kind: str = "linear", *, beta_min: float = 0.1, beta_max: float = 20.0,
                 s: float = 0.008, alpha_bar_min: float = 1e-4):
        if kind not in ("linear", "cosine"):
            raise ValueError(f"kind must be 'linear' or 'cosine', got {kind!r}")
        if kind == "linear" and not (0 <= beta_min <= beta_max and beta_max > 0):
            raise ValueError(f"need 0 <= beta_min <= beta_max and beta_max > 0, got beta_min={beta_min}, "
                             f"beta_max={beta_max}")
        if kind == "cosine" and not (s >= 0 and 0 < alpha_bar_min < 1):
            raise ValueError(f"need s >= 0 and 0 < alpha_bar_min < 1, got s={s}, alpha_bar_min={alpha_bar_min}")
        self.kind = kind
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.s, self.alpha_bar_min = float(s), float(alpha_bar_min)

    # -- the schedule ---------------------------------------------------------------------
    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        r""":math:`\log\bar\alpha(t)`, computed in float64 and returned in ``t``'s dtype."""
        t_in = torch.as_tensor(t)
        td = t_in.double()
        if self.kind == "linear":
            out = -(self.beta_min * td + 0.5 * (self.beta_max - self.beta_min) * td**2)
        else:
            phi = (td + self.s) / (1 + self.s) * (math.pi / 2)
            phi0 = self.s / (1 + self.s) * (math.pi / 2)
            out = 2 * torch.log(torch.cos(phi).clamp_min(0.0)) - 2 * math.log(math.cos(phi0))
            out = out.clamp(math.log(self.alpha_bar_min), 0.0)
        return out.to(t_in.dtype if t_in.is_floating_point() else torch.get_default_dtype())

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        r""":math:`\bar\alpha(t)` (the :math:`\gamma_t` of Haji-Ali et al.)."""
        return self.log_alpha_bar(t).exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        r""":math:`\sqrt{1 - \bar\alpha(t)}`, the noise standard deviation at time ``t``."""
        t_in = torch.as_tensor(t)
        out = (-torch.expm1(self.log_alpha_bar(t_in.double()))).clamp_min(0.0).sqrt()
        return out.to(t_in.dtype if t_in.is_floating_point() else torch.get_default_dtype())

    def beta(self, t: Tensor | float) -> Tensor:
        r""":math:`\beta(t) = -\frac{d}{dt}\log\bar\alpha(t)`, the drift rate of the VP-SDE."""
        t_in = torch.as_tensor(t)
        td = t_in.double()
        if self.kind == "linear":
            out = self.beta_min + (self.beta_max - self.beta_min) * td
        else:
            phi = (td + self.s) / (1 + self.s) * (math.pi / 2)
            out = math.pi / (1 + self.s) * torch.tan(phi)
            out = torch.where(self.log_alpha_bar(td) <= math.log(self.alpha_bar_min), torch.zeros_like(out), out)
        return out.to(t_in.dtype if t_in.is_floating_point() else torch.get_default_dtype())

    def t_from_alpha_bar(self, alpha_bar: Tensor | float) -> Tensor:
        r"""The time ``t`` with :math:`\bar\alpha(t) = ` ``alpha_bar`` (inverse of :meth:`alpha_bar`).

        Used, e.g., to start the reverse process at the noise level of an observation:
        denoising ``y = x + sigma_y * noise`` starts at :math:`\bar\alpha = 1/(1+\sigma_y^2)`.
        """
        a_in = torch.as_tensor(alpha_bar)
        a = a_in.double()
        if torch.any((a <= 0) | (a > 1)):
            raise ValueError(f"alpha_bar must lie in (0, 1], got {a_in}")
        if self.kind == "linear":
            d = self.beta_max - self.beta_min
            la = torch.log(a)
            if d == 0:
                t = -la / self.beta_min
            else:
                t = (-self.beta_min + torch.sqrt(self.beta_min**2 - 2 * d * la)) / d
        else:
            if torch.any(a < self.alpha_bar_min):
                raise ValueError(f"alpha_bar must be >= alpha_bar_min={self.alpha_bar_min} for the cosine schedule")
            phi0 = self.s / (1 + self.s) * (math.pi / 2)
            phi = torch.arccos((a.sqrt() * math.cos(phi0)).clamp(-1, 1))
            t = phi * 2 / math.pi * (1 + self.s) - self.s
        return t.to(a_in.dtype if a_in.is_floating_point() else torch.get_default_dtype())

    def timesteps(self, steps: int, t_start: float = 1.0, t_end: float = 0.0,
                  spacing: str = "uniform") -> Tensor:
        """The decreasing float64 grid ``(steps + 1,)`` from ``t_start`` to ``t_end``.

        ``spacing="uniform"`` places ``t_k = t_end + (t_start - t_end) k / steps``;
        ``"quadratic"`` uses ``(k / steps)**2`` (finer near ``t_end``).  The grid with
        ``steps`` points contains the grid with ``steps / M`` points whenever ``M`` divides
        ``steps``, which is what coupled MLMC levels need.

        Example:
            >>> VPSchedule().timesteps(4).tolist()
            [1.0, 0.75, 0.5, 0.25, 0.0]
        """
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if not 0.0 <= t_end < t_start <= 1.0:
            raise ValueError(f"need 0 <= t_end < t_start <= 1, got t_start={t_start}, t_end={t_end}")
        u = torch.arange(int(steps), -1, -1, dtype=torch.float64) / int(steps)
        if spacing == "quadratic":
            u = u**2
        elif spacing != "uniform":
            raise ValueError(f"spacing must be 'uniform' or 'quadratic', got {spacing!r}")
        return t_end + (t_start - t_end) * u

    def to_dict(self) -> dict:
        """A JSON-able config; ``VPSchedule(**d)`` rebuilds the schedule."""
        return {"kind": self.kind, "beta_min": self.beta_min, "beta_max": self.beta_max,
                "s": self.s, "alpha_bar_min": self.alpha_bar_min}

    def __repr__(self) -> str:
        if self.kind == "linear":
            return f"VPSchedule('linear', beta_min={self.beta_min}, beta_max={self.beta_max})"
        return f"VPSchedule('cosine', s={self.s}, alpha_bar_min={self.alpha_bar_min})"


# -- conversions ---------------------------------------------------------------------------
def _bcast(v: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample ``(n,)`` coefficient against ``x`` of shape ``(n, *event)``."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.dim() == 1 and x.dim() > 1:
        v = v.reshape(-1, *([1] * (x.dim() - 1)))
    return v


def predict_x0(x_t: Tensor, eps_hat: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r"""Tweedie's denoised estimate :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\hat\epsilon)/\sqrt{\bar\alpha_t}`."""
    a = _bcast(alpha_bar_t, x_t)
    return (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()


def eps_to_score(eps_hat: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r"""The score :math:`\nabla\log q_t = -\hat\epsilon/\sqrt{1-\bar\alpha_t}`."""
    return -eps_hat / (1 - _bcast(alpha_bar_t, eps_hat)).sqrt()


def score_to_eps(score: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    r"""The noise prediction :math:`\hat\epsilon = -\sqrt{1-\bar\alpha_t}\,\nabla\log q_t`."""
    return -score * (1 - _bcast(alpha_bar_t, score)).sqrt()


def q_sample(x0: Tensor, t: Tensor, schedule: VPSchedule, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`x_t \sim q(x_t | x_0)`; returns ``(x_t, noise)``.

    Arguments:
        x0: clean data ``(n, *event)``.
        t: times ``(n,)`` in ``[0, 1]``.
        schedule: the noise schedule.
        noise: the standard normal noise (drawn when ``None``).
    """
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    a = _bcast(schedule.alpha_bar(t.to(x0.dtype)), x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, noise


def noise_prediction_loss(eps: EpsFn, x0: Tensor, schedule: VPSchedule, y: Tensor | None = None, *,
                          t_min: float = 1e-3, mask: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
    r"""The denoising score-matching loss in noise form, :math:`E\|\epsilon_\psi(x_t,t,y)-\epsilon\|^2`.

    ``t ~ U(t_min, 1)``.  With a 0/1 ``mask`` of the event shape (the :math:`\mathbb{M}` of
    Section 2.2: 1 = unknown, 0 = observed) only the masked components are noised and
    scored; observed components stay clean in ``x_t`` (the conditional model used for
    inpainting with held-fixed observed pixels).  Returns the mean over the batch.
    """
    n = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, noise = q_sample(x0, t, schedule, generator=generator)
    if mask is not None:
        m = mask.to(x0.dtype)
        x_t = m * x_t + (1 - m) * x0
        err = (eps(x_t, t, y) - noise) ** 2 * m
        return err.reshape(n, -1).sum(-1).mean() / m.sum().clamp_min(1)
    err = (eps(x_t, t, y) - noise) ** 2
    return err.reshape(n, -1).mean(-1).mean()


# -- reverse steps -------------------------------------------------------------------------
def ddim_coefficients(alpha_bar_t: float, alpha_bar_s: float, eta: float) -> tuple[float, float, float, float]:
    r"""Scalar coefficients of one DDIM step ``t -> s``: ``x_s = a x_t + b eps_hat + c xi``.

    Also returns ``k``, the factor by which the step propagates a perturbation of
    :math:`x_t - \sqrt{\bar\alpha_t}x_0` at fixed :math:`x_0`; it weights the fine noise
    increments summed into a coarse one (Algorithm 2, line 6 of Haji-Ali et al.).
    Computed in float64.

    Returns:
        ``(a, b, c, k)``.
    """
    at, as_ = float(alpha_bar_t), float(alpha_bar_s)
    if not (0 < at <= as_ <= 1):
        raise ValueError(f"need 0 < alpha_bar_t <= alpha_bar_s <= 1 (a step towards t = 0), got "
                         f"alpha_bar_t={at}, alpha_bar_s={as_}")
    vt, vs = 1 - at, 1 - as_
    c2 = 0.0 if vt == 0 else eta**2 * vs / vt * (1 - at / as_)
    keep = max(vs - c2, 0.0)
    a = math.sqrt(as_ / at)
    b = math.sqrt(keep) - a * math.sqrt(vt)
    k = 0.0 if vt == 0 else math.sqrt(keep / vt)
    return a, b, math.sqrt(max(c2, 0.0)), k


def _check_clip(clip_x0) -> tuple[float, float] | None:
    if clip_x0 is None:
        return None
    try:
        if isinstance(clip_x0, (int, float)):
            lo, hi = -float(clip_x0), float(clip_x0)
        else:
            lo, hi = map(float, clip_x0)
    except (TypeError, ValueError):
        raise TypeError(f"clip_x0 must be None, a number c (clip to [-c, c]) or a pair (lo, hi), "
                        f"got {clip_x0!r}") from None
    if not lo < hi:
        raise ValueError(f"clip_x0 must have lo < hi, got {(lo, hi)}")
    return lo, hi


def deterministic_part(x_t: Tensor, eps_hat: Tensor, alpha_bar_t: float, alpha_bar_s: float, eta: float,
                       clip_x0=None) -> Tensor:
    r"""The noise-free part of a DDIM step, :math:`x_s - c\,\xi`.

    Without clipping this is ``a x_t + b eps_hat`` (:func:`ddim_coefficients`).  With
    ``clip_x0`` (a number ``c`` for ``[-c, c]`` or a pair ``(lo, hi)``) the denoised estimate
    :math:`\hat x_0` is clamped to the data range first (as in Ho et al.'s image code) and the
    step is written through it, :math:`k x_t + (\sqrt{\bar\alpha_s} - k\sqrt{\bar\alpha_t})\,
    \mathrm{clip}(\hat x_0)`, which equals the unclipped step when nothing is clamped.
    """
    a, b, _, k = ddim_coefficients(alpha_bar_t, alpha_bar_s, eta)
    clip = _check_clip(clip_x0)
    if clip is None:
        return a * x_t + b * eps_hat
    x0 = predict_x0(x_t, eps_hat, alpha_bar_t).clamp(*clip)
    return k * x_t + (math.sqrt(alpha_bar_s) - k * math.sqrt(alpha_bar_t)) * x0


def ddim_step(x_t: Tensor, eps_hat: Tensor, alpha_bar_t: float, alpha_bar_s: float, eta: float = 0.0,
              noise: Tensor | None = None, generator: torch.Generator | None = None, clip_x0=None) -> Tensor:
    """One DDIM step from ``t`` to ``s < t`` (given as their :math:`\\bar\\alpha`), shapes ``(n, *event)``.

    ``clip_x0`` clamps the denoised estimate to the data range (:func:`deterministic_part`).
    """
    c = ddim_coefficients(alpha_bar_t, alpha_bar_s, eta)[2]
    out = deterministic_part(x_t, eps_hat, alpha_bar_t, alpha_bar_s, eta, clip_x0)
    if c > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        out = out + c * noise
    return out


def ddpm_step(x_t: Tensor, eps_hat: Tensor, alpha_bar_t: float, alpha_bar_s: float,
              noise: Tensor | None = None, generator: torch.Generator | None = None, clip_x0=None) -> Tensor:
    """One ancestral DDPM step ``t -> s`` (eq. (13) of Haji-Ali et al.; DDIM with ``eta = 1``)."""
    return ddim_step(x_t, eps_hat, alpha_bar_t, alpha_bar_s, 1.0, noise, generator, clip_x0)


def ode_step(x_t: Tensor, eps_hat: Tensor, alpha_bar_t: float, alpha_bar_s: float, clip_x0=None) -> Tensor:
    """One deterministic step ``t -> s`` of the probability-flow ODE (DDIM with ``eta = 0``)."""
    return ddim_step(x_t, eps_hat, alpha_bar_t, alpha_bar_s, 0.0, clip_x0=clip_x0)


# -- whole reverse paths -------------------------------------------------------------------
def initial_state(n: int, shape: tuple[int, ...] | None = None, *, init: str = "noise",
                  x_obs: Tensor | None = None, mask: Tensor | None = None,
                  generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    r"""``n`` draws of :math:`x_T \sim \mathcal{N}((I - \mathbb{M})x_{obs}, \mathbb{M})` (Section 2.2).

    Arguments:
        n: number of states.
        shape: event shape (taken from ``x_obs`` when given).
        init: ``"noise"`` (:math:`\mathbb{M} = I`, standard normal start),
            ``"observation"`` (:math:`\mathbb{M} = 0`, every state equals ``x_obs``; e.g. a
            rescaled noisy image for denoising) or ``"mask"`` (a binary :math:`\mathbb{M}`:
            noise where ``mask`` is 1, ``x_obs`` where it is 0).
        x_obs: the observation-derived start ``(*event)``; needed unless ``init="noise"``.
        mask: 0/1 tensor of the event shape; needed for ``init="mask"``.

    Returns:
        ``(n, *event)``.
    """
    if init not in ("noise", "observation", "mask"):
        raise ValueError(f"init must be 'noise', 'observation' or 'mask', got {init!r}")
    if init != "noise" and x_obs is None:
        raise ValueError(f"init={init!r} needs x_obs (the observation-derived start state), got None")
    if init == "mask" and mask is None:
        raise ValueError("init='mask' needs mask (0/1 tensor of the event shape), got None")
    if x_obs is not None:
        x_obs = torch.as_tensor(x_obs, dtype=dtype, device=device)
        if shape is not None and tuple(shape) != tuple(x_obs.shape):
            raise ValueError(f"x_obs has shape {tuple(x_obs.shape)} but shape={tuple(shape)}")
        shape = tuple(x_obs.shape)
    if shape is None:
        raise ValueError("initial_state needs shape (the event shape) or x_obs")
    if init == "observation":
        return x_obs.expand(n, *shape).clone()
    z = torch.randn((n, *shape), generator=generator, device=device, dtype=dtype)
    if init == "noise":
        return z
    m = torch.as_tensor(mask, dtype=dtype, device=device)
    if m.shape != x_obs.shape:
        raise ValueError(f"mask must have the event shape {tuple(x_obs.shape)}, got {tuple(m.shape)}")
    return m * z + (1 - m) * x_obs


def _expand_y(y: Tensor | None, n: int) -> Tensor | None:
    return None if y is None else y.expand(n, *y.shape)


@torch.no_grad()
def reverse_sample(eps: EpsFn, x_T: Tensor, *, schedule: VPSchedule | None = None, steps: int = 100,
                   y: Tensor | None = None, sampler: str = "ddpm", eta: float | None = None,
                   t_start: float = 1.0, t_end: float = 0.0, spacing: str = "uniform",
                   mask: Tensor | None = None, clip_x0=None,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""Run the reverse process from ``x_T`` at ``t_start`` to ``t_end`` in ``steps`` steps.

    Arguments:
        eps: noise-prediction network ``eps(x_t, t, y)``.
        x_T: start states ``(n, *event)`` (see :func:`initial_state`).
        schedule: the VP schedule the network was trained with (default ``VPSchedule()``).
        steps: number of network evaluations.
        y: ONE observation ``(*y_event)`` to condition on, passed to ``eps`` expanded to
            ``(n, *y_event)``; or ``None``.
        sampler: ``"ddpm"`` (``eta = 1``), ``"ddim"`` (``eta`` given, default 0) or ``"ode"``.
        t_start, t_end, spacing: the time grid (:meth:`VPSchedule.timesteps`).
        mask: optional 0/1 tensor of the event shape; components where it is 0 are held at
            their value in ``x_T`` (observed pixels in inpainting, Section 2.2 case 3).
        clip_x0: clamp the denoised estimate to a data range (:func:`deterministic_part`).

    Returns:
        ``(n, *event)`` samples at ``t_end`` (:math:`\hat x_0` when ``t_end = 0``).

    Example:
        >>> mu = torch.tensor([2.0]); sch = VPSchedule()
        >>> def eps(x, t, y):   # data N(mu, 0.5^2): exact noise prediction
        ...     a = sch.alpha_bar(t)[:, None]
        ...     return (1 - a).sqrt() * (x - a.sqrt() * mu) / (0.25 * a + 1 - a)
        >>> x = reverse_sample(eps, torch.randn(4000, 1, generator=torch.Generator().manual_seed(0)),
        ...                    steps=200, generator=torch.Generator().manual_seed(1))
        >>> round(float(x.mean()), 1), round(float(x.std()), 1)
        (2.0, 0.5)
    """
    schedule = schedule or VPSchedule()
    e = sampler_eta(sampler, eta)
    grid = schedule.timesteps(steps, t_start, t_end, spacing)
    abar = schedule.alpha_bar(grid).tolist()
    x = x_T.clone()
    n = x.shape[0]
    yb = _expand_y(y, n)
    keep = None if mask is None else torch.as_tensor(mask, device=x.device).bool()
    x_fixed = x.clone() if keep is not None else None
    for k in range(steps):
        t = torch.full((n,), float(grid[k]), dtype=x.dtype, device=x.device)
        x = ddim_step(x, eps(x, t, yb), abar[k], abar[k + 1], e, generator=generator, clip_x0=clip_x0)
        if keep is not None:
            x = torch.where(keep, x, x_fixed)
    return x
