"""The tall-data sampler: GAUSS, JAC and F-NPSE reverse paths over a set of observations.

Linhart et al. (2024), arXiv 2404.07593: GAUSS and JAC (Section 3.2, Lemma 3.2 with :math:`F = 0`,
Algorithms 1 and 2) and the F-NPSE baseline (Geffner et al., 2023; eq. 6).  The maths is in the
docstring of :mod:`telescope.samplers.tall`; the options for non-Gaussian priors (refinement,
predictor-corrector, Gaussian kernel stop) are in :mod:`.refine`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ...diffusion import VPSchedule, ddim_step
from ...utils import progress
from ..prior_scores import DiffusedPrior, exact_kernel_prior
from .auto import _box, check_tail
from .core import METHODS, PRIOR_KERNELS, SetEps, _grid, _sym, clip_eps, paper_eta, pilot_covariances
from .refine import Refinements

__all__ = ["STOP_KERNELS", "TallSampler", "sample_tall"]

#: The last step of a path stopped at ``stop_t``: a Gaussian kernel, or one truncated to the prior's box.
STOP_KERNELS = ("gaussian", "truncated")


def _check_options(method, prior_term, n_obs, prior_kernel, corrector_steps, corrector_snr, refine_steps,
                   refine_step, refine_noise, refine_tail, stop_t, stop_cov) -> int:
    """Validate :class:`TallSampler`'s options (errors name the argument); returns ``refine_tail``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if prior_term not in ("bridge", "diffused"):
        raise ValueError(f"prior_term must be 'bridge' (eq. 6) or 'diffused', got {prior_term!r}")
    if isinstance(n_obs, bool) or int(n_obs) < 1:
        raise ValueError(f"n_obs must be >= 1, got {n_obs!r}")
    if prior_kernel not in PRIOR_KERNELS:
        raise ValueError(f"prior_kernel must be one of {list(PRIOR_KERNELS)}, got {prior_kernel!r}")
    if isinstance(corrector_steps, bool) or int(corrector_steps) < 0 or not float(corrector_snr) > 0:
        raise ValueError(f"need corrector_steps >= 0 and corrector_snr > 0, got {corrector_steps!r} and "
                         f"{corrector_snr!r}")
    if method == "fnpse" and (prior_kernel != "gaussian" or int(corrector_steps)):
        raise ValueError("prior_kernel and corrector_steps apply to method 'gauss' or 'jac', not 'fnpse'")
    if isinstance(refine_steps, bool) or int(refine_steps) < 0 or not 0 < float(refine_step) <= 1 \
            or not float(refine_noise) > 0:
        raise ValueError(f"need refine_steps >= 0, 0 < refine_step <= 1 and refine_noise > 0, got {refine_steps!r}, "
                         f"{refine_step!r} and {refine_noise!r}")
    if method == "fnpse" and int(refine_steps):
        raise ValueError("refine_steps applies to method 'gauss' or 'jac', not 'fnpse'")
    tail = check_tail(refine_tail)
    if not 0.0 <= float(stop_t) < 1.0 or stop_cov not in ("batch", "pilot"):
        raise ValueError(f"need 0 <= stop_t < 1 and stop_cov 'batch' or 'pilot', got {stop_t!r} and {stop_cov!r}")
    if method == "fnpse" and float(stop_t) > 0:
        raise ValueError("stop_t applies to method 'gauss' or 'jac', not 'fnpse'")
    return tail


class TallSampler(Refinements):
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
        prior_kernel, corrector_steps, corrector_snr: the prior's backward kernel (``"gaussian"``
            moment-matched, or ``"exact"``: flat for a box) and predictor-corrector steps (:meth:`_correct`).
        refine_steps, refine_step, refine_noise, refine_t_min, refine_tail, refine_cap: the Langevin
            refinement at a small time (:meth:`refine`; off by default).
        stop_t, stop_cov, stop_kernel: end the path at ``stop_t`` with one draw of the tall posterior's
            Gaussian backward kernel (:meth:`_kernel_step`), its covariance from the ``"batch"`` or the
            ``"pilot"``, the Gaussian redrawn inside a box prior (``"gaussian"``) or truncated to it with
            the untruncated mean recovered first (``"truncated"``, :meth:`_truncated_draw`); off by default.

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
                 stop_t: float = 0.0, stop_cov: str = "batch", refine_cap: float = 1.0,
                 stop_kernel: str = "gaussian"):
        tail = _check_options(method, prior_term, n_obs, prior_kernel, corrector_steps, corrector_snr,
                              refine_steps, refine_step, refine_noise, refine_tail, stop_t, stop_cov)
        self.eps_set, self.n_obs, self.method, self.jacobian = eps_set, int(n_obs), method, jacobian
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.prior_kernel, self.corrector_steps, self.corrector_snr = prior_kernel, int(corrector_steps), \
            float(corrector_snr)
        self.refine_steps, self.refine_step, self.refine_noise = int(refine_steps), float(refine_step), \
            float(refine_noise)
        self.refine_t_min, self.refine_tail = float(refine_t_min), tail
        self.stop_t, self.stop_cov = float(stop_t), stop_cov
        if stop_kernel not in STOP_KERNELS:
            raise ValueError(f"stop_kernel must be one of {list(STOP_KERNELS)}, got {stop_kernel!r}")
        self.stop_kernel = stop_kernel
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
            self._pilot(covariances, pilot_samples, pilot_steps, pilot_eta)

    def _pilot(self, covariances: Tensor | None, samples: int, steps: int, eta: float) -> None:
        r"""GAUSS's pilot covariances :math:`\hat\Sigma_j` (or the given ones), then :meth:`_prepare_gauss`."""
        t0 = time.perf_counter()
        if covariances is None:
            covariances = pilot_covariances(self.eps_set, self.n_obs, self.dim, samples=samples, steps=steps, eta=eta,
                                            schedule=self.schedule, spacing=self.spacing, clip=self.clip,
                                            generator=self.generator, device=self.device, chunk_rows=self.chunk_rows)
            self.info.update(pilot_samples=samples, pilot_steps=steps, pilot_eta=eta)
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


def sample_tall(eps_set: SetEps, n_obs: int, n: int, prior: DiffusedPrior, *, method: str = "gauss",
                **kwargs) -> Tensor:
    """``n`` tall-posterior samples ``(n, d)`` in the working space; keyword arguments go to :class:`TallSampler`.

    Example:
        >>> from telescope.samplers.prior_scores import DiffusedGaussian
        >>> from telescope.samplers.tall import rowwise
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
