r"""Tall-data posterior sampling with a single-observation score: GAUSS, JAC and F-NPSE.

Linhart et al. (2024), "Diffusion posterior sampling for simulation-based inference in tall
data settings".  Given a noise-prediction network :math:`\epsilon(\theta_t, x, t)` trained on
single observations and :math:`n` observations :math:`x_{1:n}` of one parameter, the tall
posterior :math:`p(\theta | x_{1:n}) \propto \lambda(\theta)^{1-n} \prod_j p(\theta | x_j)`
(eq. 1) is sampled by a reverse diffusion whose score combines the individual ones.

**GAUSS and JAC** (Section 3, Lemma 3.2 with :math:`F = 0`, Algorithms 1 and 2).  With the
Gaussian approximations :math:`\mathcal{N}(\mu_{t,j}, \Sigma_{t,j})` of the backward kernels
:math:`p_{0|t}(\theta_0 | \theta, x_j)` and :math:`\mathcal{N}(\mu_{t,\lambda}, \Sigma_{t,\lambda})` of the
prior's,

.. math::
    \Lambda = \sum_j \Sigma_{t,j}^{-1} + (1 - n)\Sigma_{t,\lambda}^{-1}, \qquad
    s(\theta, x_{1:n}) = \Lambda^{-1}\Big[\sum_j \Sigma_{t,j}^{-1} s_j + (1-n)\Sigma_{t,\lambda}^{-1} s_\lambda\Big],

with :math:`s_j = -\epsilon(\theta, x_j, t)/\sqrt{v_t}` and :math:`s_\lambda` the analytic diffused
prior score (:mod:`telescope.samplers.prior_scores`).  The same identity holds in noise units
(multiply by :math:`-\sqrt{v_t}`), which is how it is computed here.

* ``"gauss"``: :math:`\Sigma_{t,j}^{-1} = \hat\Sigma_j^{-1} + (\alpha_t/v_t) I`, the backward
  precision of a Gaussian posterior with covariance :math:`\hat\Sigma_j`.  :math:`\hat\Sigma_j` is the
  empirical covariance of a short DDIM pilot run for every observation — all observations in
  ONE batched run (trimmed of stray draws, :func:`trimmed_covariance`).  :math:`\Lambda = C + (\alpha_t/v_t) I` with the constant
  :math:`C = \sum_j\hat\Sigma_j^{-1} + (1-n)\Sigma_\lambda^{-1}`, so one ``d x d`` solve per step.
* ``"jac"``: :math:`\Sigma_{t,j} = (v_t/\alpha_t)(I + v_t \nabla_\theta s_j)` (Tweedie's second
  moment, Boys et al., 2023), from the symmetrised Jacobian of the network at every sample,
  observation and step (``d`` backward passes).

The prior kernel uses :math:`\Sigma_{t,\lambda}^{-1} = \Sigma_\lambda^{-1} + (\alpha_t/v_t) I`
(exact for a Gaussian prior, moment-matched for a uniform one).

**Positive definiteness and fallbacks** (Appendix B: the approximation is valid only for
:math:`\Lambda \succ 0`).

* GAUSS checks :math:`C` once (then :math:`\Lambda_t = C + (\alpha_t/v_t)I \succ 0` at every
  step).  If :math:`C` is not positive definite (pilot covariances wider than the prior, e.g.
  an uninformative direction estimated with noise), every :math:`\hat\Sigma_j^{-1}` is projected
  so that its likelihood part :math:`\hat\Sigma_j^{-1} - \Sigma_\lambda^{-1}` is positive
  semi-definite (eigenvalues clipped at 0 in prior-whitened coordinates).  Then
  :math:`\Lambda_t \succeq \Sigma_\lambda^{-1} + (\alpha_t/v_t) I` for every ``t`` and ``n``.  A
  ``RuntimeWarning`` says so.
* JAC checks every backward covariance (:math:`I + v_t\nabla s_j \succ 0`, Cholesky) and every
  :math:`\Lambda(\theta)`.  Where one fails, that sample's step uses the factorised score
  :math:`\sum_j s_j + (1-n)s_\lambda` (GAUSS with every posterior set to the prior).  Failures
  concentrate near :math:`t = 1`, where :math:`\Sigma_{t,j} = (v_t/\alpha_t)(\dots)` amplifies
  any error of the Jacobian and where, by Appendix C, the correction the fallback drops is
  negligible.  Counts are in ``info`` and a ``RuntimeWarning`` is issued.

**F-NPSE** (Geffner et al., 2023; eq. 6): annealed unadjusted Langevin dynamics on the bridge
densities :math:`\varrho_t \propto \lambda^{(1-n)(1-t)} \prod_j p_t(\cdot | x_j)`,

.. math::
    \nabla \log\varrho_t = (1-n)(1-t)\nabla\log\lambda(\theta) + \sum_j s(\theta, x_j, t),

with ``langevin_steps`` (L = 5) steps per time and step size
:math:`\delta_k = \tau(1-\gamma_k)/\sqrt{\gamma_k}`, :math:`\gamma_k = \bar\alpha(t_k)/\bar\alpha(t_{k+1})`
(``tau = 0.5``), the per-step DDPM rate used by Geffner et al.  ``prior_term="diffused"`` replaces
the first term by :math:`(1-n)\nabla\log p^\lambda_t`.  F-NPSE costs ``langevin_steps`` times
more network evaluations than GAUSS for the same number of steps.

**Options for non-Gaussian priors** (all off by default, so ``"gauss"``, ``"jac"`` and
``"fnpse"`` are unchanged): ``prior_kernel="exact"`` replaces a uniform prior's moment-matched
kernel by the flat term, exact for a box (:func:`~telescope.samplers.prior_scores.exact_kernel_prior`);
``corrector_steps`` adds Langevin corrector steps on the composed score after every step
(predictor-corrector, Song et al., 2021); ``refine_steps`` runs preconditioned Langevin steps on
the composed score at a small time after the reverse path (:meth:`TallSampler.refine`);
``stop_t`` ends the path at ``stop_t`` with one draw of the tall posterior's Gaussian backward
kernel, truncated to the box.  :func:`auto_settings` is what ``method="auto"`` picks, and
:func:`split_check` is a reference-free check of tall samples (:meth:`telescope.NPSE.tall_check`).
A box can also be removed altogether by training in logit space (:mod:`telescope.samplers.unconstrained`).

Every reverse step is a DDIM step (:func:`telescope.diffusion.ddim_step`) on the schedule of
:mod:`telescope.diffusion`; :func:`paper_eta` gives the paper's ``eta`` for a step count.  With
``clip=(lo, hi)`` the denoised estimate of every step is clamped per coordinate
(:func:`clip_eps`; F-NPSE clamps its states), the "clipped" variants of Section 4.2 — a learned
network extrapolates badly for trajectories starting in the tails of the noise.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from scipy.stats import chi2
from torch import Tensor

from ..diffusion import VPSchedule, ddim_step
from ..utils import progress
from .prior_scores import DiffusedPrior, exact_kernel_prior

__all__ = ["METHODS", "PRIOR_KERNELS", "auto_settings", "prior_family", "split_check", "SetEps", "paper_eta", "rowwise", "clip_eps", "ddim_sample", "pilot_covariances",
           "trimmed_covariance", "TallSampler", "sample_tall"]

#: The tall-data methods.
METHODS = ("gauss", "jac", "fnpse")

#: Treatments of the prior's backward kernel in GAUSS/JAC (see :class:`TallSampler`).
PRIOR_KERNELS = ("gaussian", "exact")

SetEps = Callable[[Tensor, float], Tensor]
"""``eps_set(z, t) -> (N, m, d)``: the noise prediction for ``z (N, m, d)`` (or ``(N, 1, d)``,
broadcast) against ``m`` fixed observations at time ``t``; observation ``j`` conditions ``z[:, j]``."""


def paper_eta(steps: int) -> float:
    """The DDIM ``eta`` of Linhart et al. (Section 4) for a number of steps: 0.2, 0.5, 0.8, 1.

    Example:
        >>> [paper_eta(s) for s in (50, 150, 400, 1000)]
        [0.2, 0.5, 0.8, 1.0]
    """
    return 0.2 if steps <= 50 else 0.5 if steps <= 150 else 0.8 if steps <= 400 else 1.0


def rowwise(eps: Callable[[Tensor, Tensor, Tensor], Tensor], x_set: Tensor) -> SetEps:
    """A :data:`SetEps` from a row-wise ``eps(z (R, d), t (R,), x (R, *event))`` and ``x_set (m, *event)``."""
    m = x_set.shape[0]

    def eps_set(z: Tensor, t: float) -> Tensor:
        n, d = z.shape[0], z.shape[-1]
        zz = z.expand(n, m, d).reshape(n * m, d)
        xx = x_set.unsqueeze(0).expand(n, *x_set.shape).reshape(n * m, *x_set.shape[1:])
        tt = torch.full((n * m,), float(t), dtype=z.dtype, device=z.device)
        return eps(zz, tt, xx).reshape(n, m, d)

    return eps_set


def _grid(schedule: VPSchedule, steps: int, spacing: str = "uniform") -> tuple[list[float], list[float]]:
    grid = schedule.timesteps(steps, spacing=spacing)
    return grid.tolist(), schedule.alpha_bar(grid).tolist()


def clip_eps(z: Tensor, eps: Tensor, alpha_bar: float, clip: tuple[Tensor, Tensor]) -> Tensor:
    r"""The noise prediction whose denoised estimate is clamped to ``clip = (lo, hi)``.

    The denoised estimate is :math:`\hat z_0 = (z - \sqrt{v}\epsilon)/\sqrt{\alpha}`.

    A DDIM step with the returned noise equals the step with :math:`\hat z_0` clamped to the
    data range (as ``clip_x0`` in :func:`telescope.diffusion.deterministic_part`), here with
    per-coordinate bounds ``lo, hi (d,)``.
    """
    sa, sv = math.sqrt(alpha_bar), math.sqrt(max(1.0 - alpha_bar, 1e-300))
    z0 = (z - sv * eps) / sa
    z0 = torch.maximum(torch.minimum(z0, clip[1]), clip[0])
    return (z - sa * z0) / sv


@torch.no_grad()
def ddim_sample(eps_set: SetEps, z: Tensor, *, schedule: VPSchedule, steps: int, eta: float,
                spacing: str = "uniform", clip: tuple[Tensor, Tensor] | None = None,
                generator: torch.Generator | None = None, bar=None) -> Tensor:
    """Run DDIM(``eta``) from ``z (N, m, d)`` at ``t = 1`` to ``t = 0``: ``(N, m, d)``.

    Observation ``j`` of ``eps_set`` conditions the column ``z[:, j]``: this is ordinary
    (single-observation) posterior sampling, vectorised over samples and observations.
    ``spacing`` is the time grid of :meth:`~telescope.diffusion.VPSchedule.timesteps`; ``clip``
    optional per-coordinate bounds ``(lo, hi)`` for the denoised estimate (:func:`clip_eps`).
    """
    ts, ab = _grid(schedule, steps, spacing)
    for k in range(steps):
        e = eps_set(z, ts[k])
        if clip is not None:
            e = clip_eps(z, e, ab[k], clip)
        z = ddim_step(z, e, ab[k], ab[k + 1], eta, generator=generator)
        if bar is not None:
            bar.update(1)
    return z


@torch.no_grad()
def pilot_covariances(eps_set: SetEps, n_obs: int, dim: int, *, samples: int = 256, steps: int = 50,
                      eta: float = 0.5, schedule: VPSchedule | None = None, spacing: str = "uniform",
                      clip: tuple[Tensor, Tensor] | None = None, generator: torch.Generator | None = None,
                      device=None, chunk_rows: int = 2**16, trim: float = 1e-3) -> Tensor:
    r"""Posterior covariances :math:`\hat\Sigma_j` ``(n_obs, d, d)`` (float64) from one batched DDIM run.

    ``samples`` draws per observation, ``steps`` DDIM steps; all observations run together
    (chunked over samples when ``samples * n_obs`` exceeds ``chunk_rows``).  The covariance is
    trimmed: draws whose Mahalanobis distance exceeds the ``1 - trim`` quantile of the
    chi-square law with ``d`` degrees of freedom are dropped (twice), so a few stray draws of
    an imperfect network do not inflate it (``trim=0`` keeps all).
    """
    schedule = schedule or VPSchedule()
    per = max(1, chunk_rows // max(n_obs, 1))
    out = []
    for lo in range(0, samples, per):
        k = min(per, samples - lo)
        z = torch.randn(k, n_obs, dim, generator=generator, device=device)
        out.append(ddim_sample(eps_set, z, schedule=schedule, steps=steps, eta=eta, spacing=spacing, clip=clip,
                               generator=generator))
    return trimmed_covariance(torch.cat(out).double().transpose(0, 1), trim)


def trimmed_covariance(s: Tensor, trim: float = 1e-3, rounds: int = 2) -> Tensor:
    """Covariances ``(m, d, d)`` of samples ``s (m, k, d)``, less draws beyond the chi-square ``1 - trim`` quantile."""
    m, k, d = s.shape
    keep = torch.isfinite(s).all(-1)  # (m, k)
    cut = float(chi2.ppf(1.0 - trim, d)) if trim > 0 else math.inf
    for _ in range(rounds + 1):
        w = keep.double()
        cnt = w.sum(1).clamp_min(2.0)
        s0 = torch.where(keep.unsqueeze(-1), s, torch.zeros_like(s))
        mean = (s0 * w.unsqueeze(-1)).sum(1) / cnt.unsqueeze(-1)
        c = (s0 - mean.unsqueeze(1)) * w.unsqueeze(-1)
        cov = torch.einsum("mka,mkb->mab", c, c) / (cnt - 1)[:, None, None]
        if not math.isfinite(cut):
            break
        prec = torch.linalg.pinv(_sym(cov))
        dev = s0 - mean.unsqueeze(1)
        d2 = torch.einsum("mka,mab,mkb->mk", dev, prec, dev)
        new = keep & (d2 <= cut)
        if bool((new == keep).all()):
            break
        keep = new
    return _sym(cov)


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


class TallSampler:
    r"""Samples the tall posterior of ``n_obs`` observations with GAUSS, JAC or F-NPSE, in the working space.

    Arguments:
        eps_set: :data:`SetEps` over the ``n_obs`` observations (see :func:`rowwise`).
        n_obs: number of observations.
        prior: the diffused prior score in the same working space (:mod:`.prior_scores`).
        method: ``"gauss"``, ``"jac"`` or ``"fnpse"``.
        schedule: the network's :class:`~telescope.diffusion.VPSchedule`.
        steps: reverse steps (default 50 for GAUSS, 1000 for JAC, 400 for F-NPSE; the paper's
            "equivalent time" settings).
        eta: DDIM ``eta`` for GAUSS/JAC (default :func:`paper_eta` of ``steps``).
        spacing: the time grid, ``"uniform"`` (the paper's :math:`t_i = i/T`) or ``"quadratic"``
            (finer near ``t = 0``, better for narrow posteriors; :meth:`VPSchedule.timesteps`).
        pilot_samples, pilot_steps, pilot_eta: the GAUSS pilot (per observation).
        covariances: precomputed :math:`\hat\Sigma_j` ``(n_obs, d, d)`` (skips the pilot).
        langevin_steps, tau, prior_term: F-NPSE settings (``prior_term`` ``"bridge"``, eq. 6, or ``"diffused"``).
        clip: optional per-coordinate bounds ``(lo, hi)`` ``(d,)``: GAUSS/JAC clamp the denoised
            estimate to them (:func:`clip_eps`), F-NPSE clamps its states (the "clipped" variants of
            Section 4.2); ``None`` (default) is the unclipped sampler of the paper.
        jacobian: optional ``jacobian(z (N, n, d), t) -> (eps (N, n, d), d eps / d z (N, n, d, d))`` for JAC
            (default: ``d`` backward passes through ``eps_set``).
        generator: the random stream (noise, pilot).
        chunk_rows: at most this many (sample, observation) pairs per network call.
        progress_bar: show progress.

    After :meth:`sample`, ``info`` holds the settings, network evaluations per sample
    (``nfe``), seconds, fallback counts and non-finite samples.
    """

    def __init__(self, eps_set: SetEps, n_obs: int, prior: DiffusedPrior, *, method: str = "gauss",
                 schedule: VPSchedule | None = None, steps: int | None = None, eta: float | None = None,
                 spacing: str = "uniform", pilot_samples: int = 256, pilot_steps: int = 50, pilot_eta: float = 0.5,
                 covariances: Tensor | None = None, langevin_steps: int = 5, tau: float = 0.5,
                 prior_term: str = "bridge", clip: tuple[Tensor, Tensor] | None = None,
                 jacobian: Callable[[Tensor, float], tuple[Tensor, Tensor]] | None = None,
                 generator: torch.Generator | None = None, device=None, chunk_rows: int = 2**16,
                 progress_bar: bool = False, prior_kernel: str = "gaussian", corrector_steps: int = 0,
                 corrector_snr: float = 0.1, refine_steps: int = 0, refine_step: float = 0.3,
                 refine_noise: float = 0.05, refine_t_min: float = 1e-3, refine_tail: int = 10,
                 stop_t: float = 0.0, stop_cov: str = "batch", refine_cap: float = 1.0):
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        if prior_term not in ("bridge", "diffused"):
            raise ValueError(f"prior_term must be 'bridge' (eq. 6) or 'diffused', got {prior_term!r}")
        if isinstance(n_obs, bool) or int(n_obs) < 1:
            raise ValueError(f"n_obs must be >= 1, got {n_obs!r}")
        self.eps_set, self.n_obs, self.method, self.jacobian = eps_set, int(n_obs), method, jacobian
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if prior_kernel not in PRIOR_KERNELS:
            raise ValueError(f"prior_kernel must be one of {list(PRIOR_KERNELS)}, got {prior_kernel!r}")
        if isinstance(corrector_steps, bool) or int(corrector_steps) < 0 or not float(corrector_snr) > 0:
            raise ValueError(f"need corrector_steps >= 0 and corrector_snr > 0, got {corrector_steps!r} and "
                             f"{corrector_snr!r}")
        if method == "fnpse" and (prior_kernel != "gaussian" or int(corrector_steps)):
            raise ValueError("prior_kernel and corrector_steps apply to method 'gauss' or 'jac', not 'fnpse'")
        self.prior_kernel, self.corrector_steps, self.corrector_snr = prior_kernel, int(corrector_steps), \
            float(corrector_snr)
        if isinstance(refine_steps, bool) or int(refine_steps) < 0 or not 0 < float(refine_step) <= 1 \
                or not float(refine_noise) > 0:
            raise ValueError(f"need refine_steps >= 0, 0 < refine_step <= 1 and refine_noise > 0, got {refine_steps!r}, "
                             f"{refine_step!r} and {refine_noise!r}")
        if method == "fnpse" and int(refine_steps):
            raise ValueError("refine_steps applies to method 'gauss' or 'jac', not 'fnpse'")
        self.refine_steps, self.refine_step, self.refine_noise = int(refine_steps), float(refine_step), \
            float(refine_noise)
        self.refine_t_min, self.refine_tail = float(refine_t_min), check_tail(refine_tail)
        if not 0.0 <= float(stop_t) < 1.0 or stop_cov not in ("batch", "pilot"):
            raise ValueError(f"need 0 <= stop_t < 1 and stop_cov 'batch' or 'pilot', got {stop_t!r} and {stop_cov!r}")
        if method == "fnpse" and float(stop_t) > 0:
            raise ValueError("stop_t applies to method 'gauss' or 'jac', not 'fnpse'")
        self.stop_t, self.stop_cov = float(stop_t), stop_cov
        self.refine_cap = float(refine_cap)
        self.box = _box(prior, self.device)
        self.prior = (exact_kernel_prior(prior) if prior_kernel == "exact" else prior).to(self.device)
        self.dim = prior.dim
        self.schedule = schedule or VPSchedule()
        default_steps = {"gauss": 50, "jac": 1000, "fnpse": 400}[method]
        self.steps = int(steps) if steps is not None else default_steps
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        self.eta = float(eta) if eta is not None else paper_eta(self.steps)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        if spacing not in ("uniform", "quadratic"):
            raise ValueError(f"spacing must be 'uniform' or 'quadratic', got {spacing!r}")
        self.spacing = spacing
        self.langevin_steps, self.tau, self.prior_term = int(langevin_steps), float(tau), prior_term
        if self.langevin_steps < 1 or not self.tau > 0:
            raise ValueError(f"need langevin_steps >= 1 and tau > 0, got {langevin_steps!r} and {tau!r}")
        self.clip = None if clip is None else (torch.as_tensor(clip[0], dtype=torch.float32, device=self.device),
                                               torch.as_tensor(clip[1], dtype=torch.float32, device=self.device))
        self.generator = generator
        self.chunk_rows = int(chunk_rows)
        self.progress_bar = progress_bar
        self.info: dict = {"method": method, "steps": self.steps, "n_obs": self.n_obs, "spacing": spacing}
        if method != "fnpse":
            self.info["eta"] = self.eta
            if prior_kernel != "gaussian" or self.corrector_steps or self.refine_steps:
                self.info.update(prior_kernel=prior_kernel, corrector_steps=self.corrector_steps,
                                 corrector_snr=self.corrector_snr, refine_steps=self.refine_steps)
        self.prec_prior = self.prior.precision0.to(self.device, torch.float64)  # (d, d)
        if method == "gauss":
            t0 = time.perf_counter()
            if covariances is None:
                covariances = pilot_covariances(eps_set, self.n_obs, self.dim, samples=pilot_samples,
                                                steps=pilot_steps, eta=pilot_eta, schedule=self.schedule,
                                                spacing=spacing, clip=self.clip, generator=generator,
                                                device=self.device, chunk_rows=self.chunk_rows)
                self.info.update(pilot_samples=pilot_samples, pilot_steps=pilot_steps, pilot_eta=pilot_eta)
            covariances = torch.as_tensor(covariances, dtype=torch.float64, device=self.device)
            if covariances.shape != (self.n_obs, self.dim, self.dim):
                raise ValueError(f"covariances must have shape ({self.n_obs}, {self.dim}, {self.dim}), got "
                                 f"{tuple(covariances.shape)}")
            self._prepare_gauss(covariances)
            self.info["pilot_seconds"] = time.perf_counter() - t0

    # -- GAUSS --------------------------------------------------------------------------------
    def _prepare_gauss(self, cov: Tensor) -> None:
        d, n = self.dim, self.n_obs
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        cov = _sym(cov)
        # a tiny ridge keeps degenerate pilots (e.g. a collapsed coordinate) invertible
        ridge = 1e-8 * cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
        prec = _sym(torch.linalg.inv(cov + ridge[:, None, None] * eye))
        self.covariances = cov
        c = prec.sum(0) + (1 - n) * self.prec_prior
        evals = torch.linalg.eigvalsh(_sym(c))
        self.info["gauss_fallback"] = False
        if not bool(evals.min() > 1e-10 * evals.abs().max().clamp_min(1e-300)) and \
                not bool(self.prec_prior.abs().max() > 0):
            # flat prior term (prior_kernel="exact"): C = sum_j prec_j; floor the pilot precisions instead
            w, u = torch.linalg.eigh(prec)
            w = w.clamp_min(1e-8 * w.abs().amax(-1, keepdim=True).clamp_min(1e-300))
            prec = _sym((u * w.unsqueeze(-2)) @ u.transpose(-1, -2))
            c = prec.sum(0)
            evals = torch.linalg.eigvalsh(_sym(c))
        if not bool(evals.min() > 1e-10 * evals.abs().max().clamp_min(1e-300)):
            low = torch.linalg.cholesky(self.prec_prior)  # P_lambda = L L^T
            linv = torch.linalg.inv(low)
            a = linv @ prec @ linv.T - eye  # whitened likelihood precisions
            w, u = torch.linalg.eigh(_sym(a))
            clipped = int((w < 0).any(-1).sum())
            a = (u * w.clamp_min(0.0).unsqueeze(-2)) @ u.transpose(-1, -2)
            prec = _sym(low @ (a + eye) @ low.T)
            c = prec.sum(0) + (1 - n) * self.prec_prior
            self.info["gauss_fallback"] = True
            warnings.warn(
                f"GAUSS: Lambda = sum_j Sigma_j^-1 + (1 - n) Sigma_prior^-1 is not positive definite (smallest "
                f"eigenvalue {float(evals.min()):.3g}); the pilot precisions of {clipped} of {n} observations were "
                f"projected so that each posterior is at least as concentrated as the prior (likelihood precision "
                f">= 0). More pilot samples (pilot_samples=) reduce the noise in the pilot covariances.",
                RuntimeWarning, stacklevel=3)
        self.prec_obs, self.c = prec, _sym(c)  # (n, d, d), (d, d)

    def _gauss_eps(self, z: Tensor, t: float, abar: float) -> Tensor:
        n = self.n_obs
        v = 1.0 - abar
        r = abar / v
        e = self.eps_set(z.unsqueeze(1), t).double()  # (N, n, d)
        e_prior = (-math.sqrt(v)) * self.prior.score(z, abar).double()
        num = torch.einsum("jab,Njb->Na", self.prec_obs, e) + r * e.sum(1) \
            + (1 - n) * (e_prior @ self.prec_prior + r * e_prior)
        lam = self.c + r * torch.eye(self.dim, dtype=torch.float64, device=z.device)
        chol = torch.linalg.cholesky(lam)
        return torch.cholesky_solve(num.T, chol).T.to(z.dtype)

    def composed_eps(self, z: Tensor, t: float) -> Tensor:
        r"""The tall-data noise prediction ``(N, d)`` at working-space states ``z (N, d)`` and time ``t``.

        The GAUSS or JAC combination of the per-observation predictions (Lemma 3.2 in noise
        units), i.e. :math:`-\sqrt{v_t}` times the composed score; one DDIM step with it is one
        step of :meth:`sample` (before clipping).  Costs ``n_obs`` network evaluations per row.
        Any diffusion sampler that takes a noise-prediction callable can run on it, e.g.
        :class:`telescope.mlmc.CoupledDiffusion` (:meth:`telescope.NPSE.noise_predictor`).
        """
        if self.method == "fnpse":
            raise ValueError("composed_eps needs method 'gauss' or 'jac' (F-NPSE is a Langevin sampler, not a "
                             "noise prediction)")
        abar = float(self.schedule.alpha_bar(torch.tensor(float(t), dtype=torch.float64)))
        return (self._gauss_eps if self.method == "gauss" else self._jac_eps)(z, float(t), abar)

    # -- JAC ----------------------------------------------------------------------------------
    def _jac_eps(self, z: Tensor, t: float, abar: float) -> Tensor:
        n, d = self.n_obs, self.dim
        zr = z.detach().unsqueeze(1).expand(z.shape[0], n, d).clone()
        if self.jacobian is not None:
            e, jac = self.jacobian(zr, t)
        else:
            with torch.enable_grad():
                zr.requires_grad_(True)
                e = self.eps_set(zr, t)  # (N, n, d)
                rows = [torch.autograd.grad(e[..., k].sum(), zr, retain_graph=k < d - 1)[0] for k in range(d)]
            jac = torch.stack(rows, -2)  # (N, n, d, d): d e_k / d z_l
        return self._jac_combine(z, e.detach().double(), jac.detach().double(), abar)

    def _jac_combine(self, z: Tensor, e: Tensor, jac: Tensor, abar: float) -> Tensor:
        n, d = self.n_obs, self.dim
        v = 1.0 - abar
        r = abar / v
        eye = torch.eye(d, dtype=torch.float64, device=z.device)
        m = eye - (0.5 * math.sqrt(v)) * (jac + jac.transpose(-1, -2))  # (alpha / v) * backward covariance
        chol_m, info_m = torch.linalg.cholesky_ex(m)  # must be positive definite
        m_inv = torch.cholesky_inverse(chol_m)  # (N, n, d, d); prec_j = r * m_inv
        e_prior = (-math.sqrt(v)) * self.prior.score(z, abar).double()
        prec_prior_t = self.prec_prior + r * eye
        lam = _sym(r * m_inv.sum(1) + (1 - n) * prec_prior_t)  # (N, d, d)
        num = r * (m_inv @ e.unsqueeze(-1)).squeeze(-1).sum(1) + (1 - n) * (e_prior @ prec_prior_t)
        chol, info = torch.linalg.cholesky_ex(lam)
        out = torch.cholesky_solve(num.unsqueeze(-1), chol).squeeze(-1)
        bad_cov = info_m != 0  # (N, n)
        fail = bad_cov.any(1) | (info != 0) | ~torch.isfinite(out).all(-1)
        if bool(fail.any()):
            # factorised score: GAUSS with every posterior set to the prior (Lambda = prior kernel precision);
            # near t = 1, where the Jacobian is least reliable, the correction it drops vanishes (Appendix C)
            out[fail] = e[fail].sum(1) + (1 - n) * e_prior[fail]
            self.info["jac_fallback"] = self.info.get("jac_fallback", 0) + int(fail.sum())
            self.info["jac_cov_not_pd"] = self.info.get("jac_cov_not_pd", 0) + int(bad_cov.sum())
        return out.to(z.dtype)

    # -- F-NPSE -------------------------------------------------------------------------------
    def _fnpse_chunk(self, z: Tensor, bar) -> Tensor:
        n = self.n_obs
        ts, ab = _grid(self.schedule, self.steps, self.spacing)
        for k in range(self.steps):
            t, abar = ts[k], ab[k]
            gamma = ab[k] / ab[k + 1]
            delta = self.tau * (1 - gamma) / math.sqrt(gamma)
            sv = math.sqrt(1.0 - abar)
            for _ in range(self.langevin_steps):
                score = -self.eps_set(z.unsqueeze(1), t).sum(1) / sv
                if self.prior_term == "bridge":
                    score = score + (1 - n) * (1 - t) * self.prior.score0(z)
                else:
                    score = score + (1 - n) * self.prior.score(z, abar)
                noise = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
                z = z + delta * score + math.sqrt(2 * delta) * noise
                if self.clip is not None:
                    z = torch.maximum(torch.minimum(z, self.clip[1]), self.clip[0])
            if bar is not None:
                bar.update(1)
        return z

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def _chunk(self, k: int, bar) -> Tensor:
        z = torch.randn(k, self.dim, generator=self.generator, device=self.device)
        if self.method == "fnpse":
            return self._fnpse_chunk(z, bar)
        step_eps = self._gauss_eps if self.method == "gauss" else self._jac_eps
        ts, ab = _grid(self.schedule, self.steps, self.spacing)
        if self.stop_t > 0:  # the grid on [stop_t, 1]; the last step is the Gaussian backward kernel
            ts = [self.stop_t + (1.0 - self.stop_t) * t for t in ts]
            ab = self.schedule.alpha_bar(torch.tensor(ts, dtype=torch.float64)).tolist()
            for i in range(self.steps):
                e = step_eps(z, ts[i], ab[i])
                if self.clip is not None:
                    e = clip_eps(z, e, ab[i], self.clip)
                z = ddim_step(z, e, ab[i], ab[i + 1], self.eta, generator=self.generator)
                if bar is not None:
                    bar.update(1)
            return self._kernel_step(z, ts[-1], ab[-1], step_eps)
        for i in range(self.steps):
            e = step_eps(z, ts[i], ab[i])
            if self.clip is not None:
                e = clip_eps(z, e, ab[i], self.clip)
            z = ddim_step(z, e, ab[i], ab[i + 1], self.eta, generator=self.generator)
            if self.corrector_steps and i + 1 < self.steps:
                z = self._correct(z, ts[i + 1], ab[i + 1], step_eps)
            if bar is not None:
                bar.update(1)
        return z

    def _kernel_step(self, z: Tensor, t: float, abar: float, step_eps) -> Tensor:
        r"""From time ``t`` to 0 in one draw of the Gaussian backward kernel of the tall posterior.

        :math:`\theta_0 \sim \mathcal{N}(\hat z_0, (M^{-1} + (\alpha/v) I)^{-1})` with :math:`\hat z_0` the
        Tweedie estimate of the composed noise prediction and :math:`M` the tall covariance: from the
        batch, :math:`(\mathrm{Cov}(z_t) - vI)/\alpha` (eigenvalues floored at ``0.05 v``) when it has at
        least ``20 d`` rows, else GAUSS's :math:`C^{-1}`.  Where the prior is a box, draws outside it are
        redrawn (up to 20 times): the kernel is then the Gaussian truncated to the box, which is what a
        flat prior term times the box gives.  The network is never evaluated below ``t``.
        """
        d = self.dim
        v = 1.0 - abar
        eye = torch.eye(d, dtype=torch.float64, device=z.device)
        e = step_eps(z, t, abar)
        if self.clip is not None:
            e = clip_eps(z, e, abar, self.clip)
        mean = (z - math.sqrt(v) * e) / math.sqrt(abar)
        fin = z[torch.isfinite(z).all(-1)].double()
        if fin.shape[0] >= 20 * d and self.stop_cov == "batch":
            w, u = torch.linalg.eigh(trimmed_covariance(fin.unsqueeze(0))[0])
            m = _sym((u * ((w - v) / abar).clamp_min(0.05 * v)) @ u.T)
        elif getattr(self, "c", None) is not None:
            m = torch.linalg.inv(self.c)
        else:
            m = self._preconditioner(mean)
        back = _sym(torch.linalg.inv(torch.linalg.inv(m) + (abar / v) * eye))
        lb = torch.linalg.cholesky(back).to(z.dtype)
        out = mean + torch.randn(mean.shape, generator=self.generator, device=z.device, dtype=z.dtype) @ lb.T
        if self.box is not None:
            lo, hi = self.box
            for _ in range(20):
                bad = ~((out >= lo) & (out <= hi)).all(-1) & torch.isfinite(mean).all(-1)
                if not bool(bad.any()):
                    break
                out[bad] = mean[bad] + torch.randn(int(bad.sum()), d, generator=self.generator, device=z.device,
                                                   dtype=z.dtype) @ lb.T
        return out

    def _correct(self, z: Tensor, t: float, abar: float, step_eps) -> Tensor:
        r"""``corrector_steps`` Langevin steps on the composed score at time ``t`` (predictor-corrector).

        Song et al. (2021), Algorithm 5: step :math:`\delta = 2(r\|\xi\| / \|s\|)^2` per sample with
        the signal-to-noise ratio ``r = corrector_snr``, :math:`z \leftarrow z + \delta s + \sqrt{2\delta}\xi`,
        with :math:`s = -\epsilon/\sqrt{v_t}` the composed GAUSS/JAC score.
        """
        sv = math.sqrt(max(1.0 - abar, 1e-12))
        for _ in range(self.corrector_steps):
            e = step_eps(z, t, abar)
            if self.clip is not None:
                e = clip_eps(z, e, abar, self.clip)
            score = -e / sv
            noise = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
            ratio = noise.norm(dim=-1, keepdim=True) / score.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = 2.0 * (self.corrector_snr * ratio) ** 2
            z = z + delta * score + (2.0 * delta).sqrt() * noise
        return z

    # -- Langevin refinement at a small time -------------------------------------------------------
    def _preconditioner(self, z: Tensor) -> Tensor:
        """Covariance ``(d, d)`` (float64) of the tall posterior: of the samples ``z`` if there are
        enough (trimmed), else GAUSS's :math:`C^{-1}`, else the identity."""
        d = self.dim
        fin = z[torch.isfinite(z).all(-1)].double()
        if fin.shape[0] >= 20 * d:
            cov = trimmed_covariance(fin.unsqueeze(0))[0]
        elif getattr(self, "c", None) is not None:
            cov = torch.linalg.inv(self.c)
        else:
            cov = torch.eye(d, dtype=torch.float64, device=z.device)
        w, u = torch.linalg.eigh(_sym(cov))
        w = w.clamp_min(1e-6 * float(w.max().clamp_min(1e-300)))
        return _sym((u * w) @ u.T)

    @torch.no_grad()
    def refine(self, z0: Tensor) -> Tensor:
        r"""Preconditioned Langevin steps on the composed score at a small time, then a Gaussian backward step.

        With :math:`M` the tall covariance (:meth:`_preconditioner`), the time :math:`t_c` is where
        :math:`v_{t_c} = ` ``refine_noise`` :math:`\times \lambda_{min}(M)` (at least ``refine_t_min``):
        the diffused tall posterior there is the tall posterior plus a little noise, and the
        per-observation backward kernels are nearly Gaussian, so GAUSS's composed score is nearly
        exact.  The samples ``z0 (N, d)`` are noised to :math:`t_c` and moved by ``refine_steps``
        steps :math:`z \leftarrow z + \delta M_t s(z) + \sqrt{2\delta - \delta^2} L_t\xi`
        (:math:`M_t = \alpha M + vI = L_tL_t^T`, :math:`\delta` = ``refine_step``; the noise scale
        makes a Gaussian target with covariance :math:`M_t` exactly invariant), reflected into the
        (scaled) prior box where the prior is uniform; then one draw from the Gaussian backward
        kernel :math:`\mathcal{N}(\hat z_0, (M^{-1} + (\alpha/v)I)^{-1})` returns them to :math:`t = 0`.
        """
        if self.method == "fnpse" or not self.refine_steps or z0.shape[0] == 0:
            return z0
        d = self.dim
        m = self._preconditioner(z0)
        v_target = self.refine_noise * float(torch.linalg.eigvalsh(m).min())
        tc = self._time_for_noise(v_target)
        abar = float(self.schedule.alpha_bar(torch.tensor(tc, dtype=torch.float64)))
        v = 1.0 - abar
        eye = torch.eye(d, dtype=torch.float64, device=z0.device)
        lt = torch.linalg.cholesky(abar * m + v * eye).to(z0.dtype)
        mt = (abar * m + v * eye).to(z0.dtype)
        step_eps = self._gauss_eps if self.method == "gauss" else self._jac_eps
        delta = self.refine_step
        ok = torch.isfinite(z0).all(-1)
        z = z0.clone()
        zz = math.sqrt(abar) * z0[ok] + math.sqrt(v) * torch.randn(z0[ok].shape, generator=self.generator,
                                                                      device=z0.device, dtype=z0.dtype)
        lo, hi = (None, None) if self.box is None else (math.sqrt(abar) * self.box[0], math.sqrt(abar) * self.box[1])
        for k in range(self.refine_steps):
            fin = zz[torch.isfinite(zz).all(-1)]
            if k and k % 10 == 0 and fin.shape[0] >= 20 * d:
                # adapt: the chain's own covariance at t_c (the diffused tall posterior's, alpha M + v I)
                w, u = torch.linalg.eigh(trimmed_covariance(fin.double().unsqueeze(0))[0])
                mt64 = _sym((u * w.clamp_min(v)) @ u.T)
                chol, bad = torch.linalg.cholesky_ex(mt64)
                if int(bad) == 0 and bool(torch.isfinite(chol).all()):
                    mt, lt = mt64.to(z0.dtype), chol.to(z0.dtype)
            e = step_eps(zz, tc, abar)
            if self.clip is not None:
                e = clip_eps(zz, e, abar, self.clip)
            score = -e / math.sqrt(v)
            noise = torch.randn(zz.shape, generator=self.generator, device=z0.device, dtype=z0.dtype)
            drift = delta * score @ mt
            # a trust region: the drift is at most refine_cap in the metric of M_t (a wrong composed score
            # near the box edges, where n network boundary layers must cancel, would throw samples far)
            wnorm = torch.linalg.solve_triangular(lt.double(), drift.double().T, upper=False).norm(dim=0)
            drift = drift * (self.refine_cap / wnorm.clamp_min(1e-12)).clamp(max=1.0).to(drift.dtype).unsqueeze(-1)
            zz = zz + drift + math.sqrt(2 * delta - delta * delta) * noise @ lt.T
            if lo is not None:
                zz = _reflect(zz, lo, hi)
        # back to t = 0: DDPM steps (eta = 1) with the composed noise prediction on [0, t_c]
        grid = torch.linspace(tc, 0.0, self.refine_tail + 1, dtype=torch.float64)
        ab = self.schedule.alpha_bar(grid).tolist()
        for k in range(self.refine_tail):
            e = step_eps(zz, float(grid[k]), ab[k])
            if self.clip is not None:
                e = clip_eps(zz, e, ab[k], self.clip)
            zz = ddim_step(zz, e, ab[k], ab[k + 1], 1.0, generator=self.generator)
        z[ok] = zz
        self.info.update(refine_t=tc, refine_v=v)
        return z

    def _time_for_noise(self, v_target: float) -> float:
        """The time ``t >= refine_t_min`` whose noise variance :math:`1 - \bar\alpha(t)` is ``v_target``."""
        lo, hi = self.refine_t_min, 1.0
        def v_of(t: float) -> float:
            return 1.0 - float(self.schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)))
        if v_of(lo) >= v_target:
            return lo
        if v_of(hi) <= v_target:
            return hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if v_of(mid) < v_target else (lo, mid)
        return 0.5 * (lo + hi)

    def sample(self, n: int) -> Tensor:
        """``n`` samples ``(n, d)`` of the tall posterior in the working space (rows may be non-finite
        if a method diverged: counted in ``info["non_finite"]``, with a warning)."""
        t0 = time.perf_counter()
        per = max(1, self.chunk_rows // self.n_obs)
        chunks = [min(per, n - lo) for lo in range(0, n, per)]
        with progress(total=self.steps * len(chunks), desc=f"tall {self.method}", enabled=self.progress_bar,
                      unit="step") as bar:
            out = torch.cat([self._chunk(k, bar) for k in chunks]) if chunks else \
                torch.empty(0, self.dim, device=self.device)
        if self.refine_steps and out.shape[0]:
            out = torch.cat([self.refine(out[lo:lo + per]) for lo in range(0, out.shape[0], per)])
        bad = int((~torch.isfinite(out).all(-1)).sum())
        per_step = self.n_obs * (self.langevin_steps if self.method == "fnpse" else 1 + self.corrector_steps)
        extra = self.n_obs * (self.refine_steps + self.refine_tail) if self.refine_steps else 0
        self.info.update(nfe=self.steps * per_step + extra, non_finite=self.info.get("non_finite", 0) + bad,
                         seconds=self.info.get("seconds", 0.0) + time.perf_counter() - t0)
        if self.method == "jac" and self.info.get("jac_fallback"):
            warnings.warn(f"JAC: for {self.info['jac_fallback']} (sample, step) pairs a backward covariance "
                          f"(I + v grad s, {self.info['jac_cov_not_pd']} of them) or Lambda was not positive definite; "
                          f"the factorised score sum_j s_j + (1 - n) s_prior was used there. The Jacobian of the score "
                          f"network is unreliable — method='gauss' is more robust", RuntimeWarning, stacklevel=2)
        if bad:
            warnings.warn(f"tall sampling with method={self.method!r} diverged for {bad} of {n} samples "
                          f"(non-finite values); use method='gauss' or more steps", RuntimeWarning, stacklevel=2)
        return out


def prior_family(prior: DiffusedPrior) -> str:
    """``"uniform"`` if any part of the diffused prior is a box, ``"gaussian"`` if every part is Gaussian
    in the working space (Gaussian and LogNormal priors), else ``"learned"``."""
    from .prior_scores import DiffusedGaussian, DiffusedProduct, DiffusedUniform

    parts = prior.parts if isinstance(prior, DiffusedProduct) else [prior]
    if any(isinstance(p, DiffusedUniform) for p in parts):
        return "uniform"
    if all(isinstance(p, DiffusedGaussian) for p in parts):
        return "gaussian"
    return "learned"


def auto_settings(prior: DiffusedPrior, n_obs: int) -> dict:
    r"""The tall sampler ``method="auto"`` uses, by the prior's family (:func:`prior_family`) and ``n_obs``.

    * ``n_obs = 1``: plain single-observation DDIM (there is nothing to compose).
    * ``"gaussian"`` family (Gaussian priors, and LogNormal ones, Gaussian after NPSE's log
      transform): GAUSS with the paper's settings.  Its prior backward kernel is exact there, so
      the remaining errors are the per-observation covariances and the network's.
    * ``"uniform"`` family (a box in some coordinates): GAUSS with the moment-matched prior kernel
      and a 4x larger pilot (``pilot_samples=1024``).  Why: a box truncates the single-observation
      posteriors, and the covariance of a truncated, skewed posterior needs more pilot draws; the
      pilot error enters :math:`\Lambda` once per observation.  Why not the alternatives this module offers: with EXACT
      single-observation scores, a Langevin refinement at a small time (``refine_steps``) removes
      GAUSS's composition error almost entirely, but with a trained network it equilibrates to the
      composed score, in which the network's errors add up over the ``n`` observations (and the ``n``
      learned boundary layers must cancel against the analytic one), so it made trained-network
      samples worse; the flat prior kernel (``prior_kernel="exact"``), a finer quadratic grid and
      predictor-corrector steps were not better than GAUSS either.  JAC and F-NPSE cost far more.
    * ``"learned"`` prior score: GAUSS.

    The measurements behind these choices are in ``benchmarks/README_tall.md``.

    Returns keyword arguments for :class:`TallSampler` (``method`` included).
    """
    if n_obs <= 1:
        return {"method": "gauss", "steps": None, "spacing": "uniform"}
    family = prior_family(prior)
    if family == "uniform":
        return {"method": "gauss", "spacing": "uniform", "prior_kernel": "gaussian", "refine_steps": 0,
                "pilot_samples": 1024}
    return {"method": "gauss", "spacing": "uniform", "prior_kernel": "gaussian", "refine_steps": 0}


def split_check(full: Tensor, half_a: Tensor, half_b: Tensor, prior: DiffusedPrior | None = None, *,
                sd_tol: float = 1.15, mean_tol: float = 0.3) -> dict:
    r"""Reference-free consistency check of tall-posterior samples (working space), by splitting the data.

    With Gaussian likelihoods and a Gaussian (or flat) prior term, the posterior of all
    observations follows from those of two disjoint halves :math:`A, B`:
    :math:`P = P_A + P_B - P_0` and :math:`P\mu = P_A\mu_A + P_B\mu_B - P_0\mu_0`, with :math:`P_0, \mu_0` the
    prior's (:func:`~telescope.samplers.prior_scores.exact_kernel_prior`: zero for a box).  By the
    Bernstein-von Mises theorem this holds approximately for any regular model once the halves
    are informative.  A sampler whose error grows with ``n`` breaks it: the samples of ``n`` and of
    ``n / 2`` observations do not fit together.

    Arguments:
        full, half_a, half_b: ``(k, d)`` samples of the tall posteriors of all, and of each half of,
            the observations.
        prior: the diffused prior in the same space (``None``: flat).
        sd_tol: flag when a standard deviation of ``full`` (along an eigendirection) differs from
            the predicted one by more than this factor.
        mean_tol: flag when the mean of ``full`` is further than this many of its standard
            deviations (Mahalanobis) from the predicted mean.

    Returns:
        ``{"sd_ratio_min", "sd_ratio_max", "mean_shift", "ok"}`` (``sd_ratio``: observed over predicted).
    """
    def stats(s: Tensor):
        s = s[torch.isfinite(s).all(-1)].double()
        cov = trimmed_covariance(s.unsqueeze(0))[0]
        return s.mean(0), torch.linalg.inv(cov)

    d = full.shape[-1]
    mf, pf = stats(full)
    ma, pa = stats(half_a)
    mb, pb = stats(half_b)
    if prior is not None:
        flat = exact_kernel_prior(prior)
        p0 = flat.precision0.double().to(mf.device)
        b0 = flat.score0(torch.zeros(1, d, dtype=torch.float64, device=mf.device))[0].double()  # P0 mu0
    else:
        p0 = torch.zeros(d, d, dtype=torch.float64, device=mf.device)
        b0 = torch.zeros(d, dtype=torch.float64, device=mf.device)
    pp = _sym(pa + pb - p0)
    w, u = torch.linalg.eigh(pp)
    pp = _sym((u * w.clamp_min(1e-12 * float(w.abs().max()))) @ u.T)
    mp = torch.linalg.solve(pp, pa @ ma + pb @ mb - b0)
    # observed over predicted standard deviations: eigenvalues of P_f^{-1/2} P_pred P_f^{-1/2} are (sd_f / sd_pred)^2
    lf = torch.linalg.cholesky(_sym(pf))
    li = torch.linalg.inv(lf)
    r = torch.linalg.eigvalsh(_sym(li @ pp @ li.T)).clamp_min(1e-300).sqrt()
    diff = mf - mp
    shift = float(torch.sqrt(diff @ pf @ diff))
    out = {"sd_ratio_min": float(r.min()), "sd_ratio_max": float(r.max()), "mean_shift": shift}
    out["ok"] = bool(out["sd_ratio_min"] >= 1 / sd_tol and out["sd_ratio_max"] <= sd_tol and shift <= mean_tol)
    return out


def check_tail(k) -> int:
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"refine_tail must be an integer >= 1, got {k!r}")
    return int(k)


def _box(prior: DiffusedPrior, device) -> tuple[Tensor, Tensor] | None:
    """Per-coordinate bounds ``(lo, hi)`` of the uniform parts of a diffused prior (``+-inf`` elsewhere), or None."""
    from .prior_scores import DiffusedProduct, DiffusedUniform

    parts = prior.parts if isinstance(prior, DiffusedProduct) else [prior]
    lo, hi = [], []
    for p in parts:
        if isinstance(p, DiffusedUniform):
            lo.append(p.low.float()), hi.append(p.high.float())
        else:
            lo.append(torch.full((p.dim,), -math.inf)), hi.append(torch.full((p.dim,), math.inf))
    lo_t, hi_t = torch.cat(lo).to(device), torch.cat(hi).to(device)
    return None if bool(torch.isinf(lo_t).all() and torch.isinf(hi_t).all()) else (lo_t, hi_t)


def _reflect(z: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Reflect ``z (N, d)`` into ``[lo, hi]`` per coordinate (infinite bounds leave it alone)."""
    width = hi - lo
    finite = torch.isfinite(width)
    w = torch.where(finite, width, torch.ones_like(width))
    y = torch.remainder(z - lo, 2 * w)
    y = torch.where(y > w, 2 * w - y, y) + lo
    return torch.where(finite, y, z)


def sample_tall(eps_set: SetEps, n_obs: int, n: int, prior: DiffusedPrior, *, method: str = "gauss",
                **kwargs) -> Tensor:
    """``n`` tall-posterior samples ``(n, d)`` in the working space; keyword arguments go to :class:`TallSampler`.

    Example:
        >>> from telescope.samplers.prior_scores import DiffusedGaussian
        >>> from telescope.diffusion import VPSchedule
        >>> sch, x = VPSchedule(), torch.tensor([[1.0], [1.2], [1.0]])
        >>> def eps(z, t, xx):   # prior N(0, 1), likelihood N(theta, 1): posterior N(x / 2, 1 / 2)
        ...     a = sch.alpha_bar(t)[:, None]
        ...     return (1 - a).sqrt() * (z - a.sqrt() * xx / 2) / (a / 2 + 1 - a)
        >>> s = sample_tall(rowwise(eps, x), 3, 4000, DiffusedGaussian(torch.zeros(1), torch.ones(1)),
        ...                 steps=200, spacing="quadratic", generator=torch.Generator().manual_seed(0))
        >>> abs(float(s.mean()) - 0.8) < 0.03, abs(float(s.var()) - 0.25) < 0.02   # tall posterior N(0.8, 1/4)
        (True, True)
    """
    return TallSampler(eps_set, n_obs, prior, method=method, **kwargs).sample(n)
