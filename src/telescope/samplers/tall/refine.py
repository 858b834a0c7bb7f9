r"""Options of the GAUSS/JAC reverse path for non-Gaussian priors: refinement, predictor-corrector, kernel stop.

The composition of Linhart et al. (2024, arXiv 2404.07593, Lemma 3.2) is exact only when every
backward kernel is Gaussian; a box prior truncates them.  These steps (all off by default) act
on the composed score near ``t = 0``, where by the paper's Appendix C the correction term
:math:`\nabla\ell_\lambda` matters most.  :class:`Refinements` is a mixin of
:class:`~telescope.samplers.tall.TallSampler`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...diffusion import ddim_step
from .auto import _reflect
from .core import _sym, clip_eps, trimmed_covariance

__all__ = ["Refinements", "untruncated_mean", "truncated_mean"]


def truncated_mean(mu: Tensor, sd: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    r"""Mean of :math:`\mathcal{N}(\mu, sd^2)` truncated to ``[lo, hi]``, per coordinate (infinite bounds allowed).

    :math:`\mu - sd\,(\varphi(\beta) - \varphi(\alpha))/(\Phi(\beta) - \Phi(\alpha))`, :math:`\alpha, \beta = (lo - \mu)/sd,
    (hi - \mu)/sd`, stable in the tails (:func:`~telescope.samplers.prior_scores.uniform_score_std`).

    Example:
        >>> m = truncated_mean(torch.zeros(1), torch.ones(1), torch.zeros(1), torch.tensor([math.inf]))
        >>> round(float(m), 4)   # half-normal: sqrt(2 / pi)
        0.7979
    """
    from ..prior_scores import uniform_score_std

    big = torch.finfo(mu.dtype).max ** 0.25
    beta = ((hi - mu) / sd).clamp(-big, big)
    alpha = ((lo - mu) / sd).clamp(-big, big)
    return mu - sd * uniform_score_std(beta, alpha)


def untruncated_mean(target: Tensor, sd: Tensor, lo: Tensor, hi: Tensor, iters: int = 60) -> Tensor:
    r"""The :math:`\mu` whose :func:`truncated_mean` is ``target`` (bisection; the truncated mean increases with :math:`\mu`).

    Coordinates with both bounds infinite are returned as they are; targets are first clamped
    ``0.02 sd`` inside the interval (or to its middle when it is narrower than that).

    Example:
        >>> mu = untruncated_mean(torch.tensor([0.9]), torch.ones(1), -torch.ones(1), torch.ones(1))
        >>> round(float(truncated_mean(mu, torch.ones(1), -torch.ones(1), torch.ones(1))), 4)
        0.9
    """
    sd = sd.expand_as(target)
    lo, hi = lo.expand_as(target), hi.expand_as(target)
    free = torch.isinf(lo) & torch.isinf(hi)
    inner_lo = torch.where(torch.isfinite(lo), lo + 0.02 * sd, target)
    inner_hi = torch.where(torch.isfinite(hi), hi - 0.02 * sd, target)
    mid = torch.where(torch.isfinite(lo) & torch.isfinite(hi), 0.5 * (lo + hi), target)
    tgt = torch.where(inner_lo <= inner_hi, torch.minimum(torch.maximum(target, inner_lo), inner_hi), mid)
    a = torch.where(torch.isfinite(lo), lo, tgt) - 60 * sd
    b = torch.where(torch.isfinite(hi), hi, tgt) + 60 * sd
    for _ in range(iters):
        c = 0.5 * (a + b)
        below = truncated_mean(c, sd, lo, hi) < tgt
        a, b = torch.where(below, c, a), torch.where(below, b, c)
    return torch.where(free | ~torch.isfinite(target), target, 0.5 * (a + b))


class Refinements:
    """Predictor-corrector steps, the Langevin refinement at a small time and the Gaussian kernel stop."""

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
        if self.box is not None and getattr(self, "stop_kernel", "gaussian") == "truncated":
            return self._truncated_draw(mean, back)
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

    def _truncated_draw(self, mean: Tensor, back: Tensor, tries: int = 20) -> Tensor:
        r"""One draw of the box-truncated Gaussian backward kernel whose truncated mean is ``mean (N, d)``.

        For a box prior the tall posterior is :math:`\mathbb{1}_{box}(\theta)\prod_j L_j(\theta)`; once
        the product of likelihoods is Gaussian (Bernstein-von Mises), the backward kernel from
        :math:`z_t` is :math:`\mathbb{1}_{box}\,\mathcal{N}(\mu(z_t), K)` with :math:`K` = ``back``
        (Linhart et al. 2024, eq. 8, with a Gaussian product and the box as the only non-Gaussian
        factor: the uniform prior's :math:`\lambda^{1-n}` is flat inside the box).  The Tweedie
        estimate ``mean`` is the mean of the TRUNCATED kernel; :math:`\mu` is recovered per coordinate
        (:func:`untruncated_mean`, marginal standard deviations), then draws outside the box are
        redrawn (``tries`` times) and the coordinates still outside are drawn from their marginal
        truncated normals.
        """
        lo, hi = self.box
        sd = back.diagonal().sqrt().to(mean)
        mu = untruncated_mean(mean.double(), sd.double(), lo.double(), hi.double()).to(mean.dtype)
        lb = torch.linalg.cholesky(back).to(mean.dtype)
        gen, dev = self.generator, mean.device
        out = mu + torch.randn(mu.shape, generator=gen, device=dev, dtype=mu.dtype) @ lb.T
        fin = torch.isfinite(mu).all(-1)
        for _ in range(tries):
            bad = ~((out >= lo) & (out <= hi)).all(-1) & fin
            if not bool(bad.any()):
                return out
            out[bad] = mu[bad] + torch.randn(int(bad.sum()), mu.shape[-1], generator=gen, device=dev,
                                             dtype=mu.dtype) @ lb.T
        outside = ((out < lo) | (out > hi)) & fin.unsqueeze(-1)
        if bool(outside.any()):
            a = torch.special.ndtr(((lo - mu) / sd).double())
            b = torch.special.ndtr(((hi - mu) / sd).double())
            u = a + (b - a) * torch.rand(mu.shape, generator=gen, device=dev, dtype=torch.float64)
            one = (mu + sd * torch.special.ndtri(u.clamp(1e-300, 1 - 1e-16)).to(mu.dtype))
            one = torch.maximum(torch.minimum(one, hi), lo)
            out = torch.where(outside, one, out)
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
