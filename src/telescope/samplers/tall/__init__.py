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
kernel (eq. 10 applied to the tall posterior), redrawn inside a box or, with
``stop_kernel="truncated"``, truncated to it around the recovered untruncated mean.
:func:`auto_settings` is what ``method="auto"`` picks (for box priors: GAUSS with the kernel
stop at ``t = 0.05``, which never evaluates the network where its error, summed over the ``n``
observations, is largest), and :func:`split_check` is a reference-free check of tall samples (:meth:`telescope.NPSE.tall_check`).
A box can also be removed altogether by training in logit space (:mod:`telescope.samplers.unconstrained`).

Every reverse step is a DDIM step (:func:`telescope.diffusion.ddim_step`) on the schedule of
:mod:`telescope.diffusion`; :func:`paper_eta` gives the paper's ``eta`` for a step count.  With
``clip=(lo, hi)`` the denoised estimate of every step is clamped per coordinate
(:func:`clip_eps`; F-NPSE clamps its states), the "clipped" variants of Section 4.2 — a learned
network extrapolates badly for trajectories starting in the tails of the noise.
"""

from .auto import _box, _reflect, auto_settings, check_tail, prior_family, split_check
from .core import (
    METHODS,
    PRIOR_KERNELS,
    SetEps,
    _grid,
    _sym,
    clip_eps,
    ddim_sample,
    paper_eta,
    pilot_covariances,
    rowwise,
    trimmed_covariance,
)
from .sampler import TallSampler, sample_tall

__all__ = ["METHODS", "PRIOR_KERNELS", "auto_settings", "prior_family", "split_check", "SetEps", "paper_eta",
           "rowwise", "clip_eps", "ddim_sample", "pilot_covariances", "trimmed_covariance", "TallSampler",
           "sample_tall"]

# private helpers kept importable from the old single-module path
_PRIVATE = (_box, _reflect, _grid, _sym, check_tail)
