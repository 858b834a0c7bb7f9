r"""Neural posterior score estimation (NPSE) and tall-data posterior sampling.

A noise-prediction network :math:`\epsilon_\psi(z_t, x, t)` is trained with the denoising
score-matching loss of the variance-preserving diffusion (Linhart et al., 2024, eq. 42; the
schedule of :mod:`telescope.diffusion`):

.. math::
    \mathcal{L}(\psi) = \mathbb{E}_{(\theta, x) \sim p(\theta, x),\, t \sim \mathcal{U}(t_{min}, 1),\,
    \epsilon \sim \mathcal{N}(0, I)} \big\|\epsilon_\psi(\sqrt{\bar\alpha_t} z + \sqrt{1 - \bar\alpha_t}\epsilon, x, t)
    - \epsilon\big\|^2, \qquad z = (T(\theta) - m) / s,

on standardised parameters (``m, s`` from the training data; ``T`` is ``log`` on coordinates
whose prior lives on the positive half-line when ``transform="auto"``, so samples stay
positive and LogNormal priors become Gaussian).  The score of the diffused posterior is
:math:`\nabla_z \log p_t(z | x) = -\epsilon_\psi / \sqrt{1 - \bar\alpha_t}`.

**Network** (Appendix E): ``z`` and the standardised ``x`` each pass through an MLP (3 hidden
layers of 64), ``t`` through the embedding :math:`(\cos(i\pi t), \sin(i\pi t))_{i \le F}`
(``F = 32``), and their concatenation through an MLP with layer normalisation (hidden 128,
256, 128).  The first layer of that head is split into a ``z``, an ``x`` and a ``t`` part, so
the ``x`` part is computed once per observation when sampling.

**Training** goes through :func:`telescope.training.train` with an exponential moving average of
the weights (``ema=0.999``) and early stopping on a held-out split.  The validation loss uses
fixed noise and times (a seeded generator, several draws per row), so it is a deterministic
function of the weights and early stopping compares like with like; training stops after
``patience`` epochs without improvement and restores the best (averaged) weights.

**Sampling**: DDIM with ``eta`` (eqs. 3-5), DDPM (``eta = 1``) and the deterministic
probability-flow sampler (``eta = 0``), any number of steps, vectorised over samples and
observations (:meth:`NPSE.sample_batched`).  For a *set* of observations
:meth:`NPSE.sample` draws from the tall posterior with GAUSS, JAC or F-NPSE
(:mod:`telescope.samplers.tall`), using the analytic diffused prior score
(:mod:`telescope.samplers.prior_scores`) or, for priors without one, a prior score learned by
the same network with ``x`` dropped at rate ``p_uncond`` (classifier-free, footnote 2).

References:
    Linhart, Cardoso, Gramfort, Le Corff & Rodrigues (2024), "Diffusion posterior sampling for simulation-based
    inference in tall data settings", arXiv:2404.07593 (equation and appendix numbers above are this paper's).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..diffusion import VPSchedule, noise_prediction_loss, sampler_eta
from ..nn import fit_standardize
from ..priors import in_support
from ..samplers.prior_scores import DiffusedPrior, LearnedPriorScore, PriorScoreError, diffused_prior, positive_dims
from ..samplers.tall import METHODS, PRIOR_KERNELS, TallSampler, clip_eps, ddim_sample
from ..utils import check_count, progress
from . import npse_sampling
from .base import Estimator
from .npse_net import ScoreNet, TimeEmbedding, _mlp  # noqa: F401 - importable from here as before
from .npse_sampling import DEFAULT_ETA

__all__ = ["NPSE", "ScoreNet", "TimeEmbedding", "DEFAULT_ETA"]


class NPSE(Estimator):
    """Neural posterior score estimation with tall-data sampling (GAUSS, JAC, F-NPSE).

    Arguments:
        prior: torch Distribution with event shape ``(d,)``.
        hidden, embed, embed_hidden, frequencies: network sizes (Appendix E defaults).
        schedule: the :class:`~telescope.diffusion.VPSchedule` (or its ``to_dict()``); default ``VPSchedule()``.
        transform: ``"auto"`` diffuses ``log theta`` on coordinates whose prior support is the
            positive half-line (e.g. LogNormal), ``None`` diffuses ``theta`` as it is.
        prior_score: ``"analytic"`` (Gaussian, uniform, LogNormal and products of them; raises
            :class:`~telescope.samplers.prior_scores.PriorScoreError` for other priors),
            ``"learned"`` (classifier-free: ``x`` dropped at rate ``p_uncond`` in training), or
            ``"auto"`` (analytic where possible, else learned).  Only tall sampling needs it.
        p_uncond: rate at which ``x`` is replaced by the null code when the prior score is learned.
        t_min: smallest diffusion time in the loss.
        embedding: optional ``nn.Module`` applied to standardised ``x`` before the x-MLP.
        device, seed: where to train and sample; seed of initialisation, split and shuffling.

    Example:
        >>> import telescope as ts
        >>> from telescope.estimators.npse import NPSE
        >>> task = ts.tasks.get("gaussian_linear", dim=2)
        >>> theta, x = ts.simulate(task.simulator, task.prior, 300, seed=0, progress_bar=False)
        >>> est = NPSE(task.prior, hidden=(32, 32), embed=16, embed_hidden=(16,)).fit(
        ...     theta, x, max_epochs=2, progress_bar=False)
        >>> est.sample(x[0], 5, steps=10).shape                  # one observation
        torch.Size([5, 2])
        >>> est.sample(x[:4], 5, method="gauss", steps=10, pilot_steps=5).shape   # tall posterior of 4
        torch.Size([5, 2])
    """

    train_defaults = {"batch_size": 256, "lr": 1e-3, "patience": 30, "max_epochs": 1000, "ema": 0.999,
                      "val_fraction": 0.1}

    def __init__(self, prior, *, hidden: Sequence[int] = (128, 256, 128), embed: int = 64,
                 embed_hidden: Sequence[int] = (64, 64, 64), frequencies: int = 32,
                 schedule: VPSchedule | dict | None = None, transform: str | None = "auto",
                 prior_score: str = "auto", p_uncond: float = 0.1, t_min: float = 1e-3,
                 embedding: nn.Module | None = None, device=None, seed: int | None = 0):
        if isinstance(schedule, VPSchedule):
            schedule = schedule.to_dict()
        if schedule is not None and not isinstance(schedule, dict):
            raise TypeError(f"schedule must be a telescope.diffusion.VPSchedule or its to_dict(), got "
                            f"{type(schedule).__name__}")
        if transform not in ("auto", None):
            raise ValueError(f"transform must be 'auto' or None, got {transform!r}")
        if prior_score not in ("auto", "analytic", "learned"):
            raise ValueError(f"prior_score must be 'auto', 'analytic' or 'learned', got {prior_score!r}")
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min!r}")
        if not hidden or isinstance(frequencies, bool) or int(frequencies) < 1 or int(embed) < 1:
            raise ValueError(f"need non-empty hidden, embed >= 1 and frequencies >= 1, got hidden={hidden!r}, "
                             f"embed={embed!r}, frequencies={frequencies!r}")
        super().__init__(prior, embedding=embedding, device=device, seed=seed, hidden=[int(h) for h in hidden],
                         embed=int(embed), embed_hidden=[int(h) for h in embed_hidden], frequencies=int(frequencies),
                         schedule=schedule, transform=transform, prior_score=prior_score, p_uncond=float(p_uncond),
                         t_min=float(t_min))
        self.schedule = VPSchedule(**schedule) if schedule is not None else VPSchedule()
        self.log_dims = positive_dims(self.prior) if transform == "auto" else \
            torch.zeros(self.dim_theta, dtype=torch.bool)
        if prior_score in ("auto", "analytic"):
            try:
                diffused_prior(self.prior, log_dims=self.log_dims)
                prior_score = "analytic"
            except PriorScoreError:
                if prior_score == "analytic":
                    raise
                prior_score = "learned"
        self.config["prior_score"] = prior_score  # resolved, so a saved estimator reloads the same way
        self.sample_info: dict = {}

    @property
    def learns_prior(self) -> bool:
        """Whether the prior score is learned by the network (``prior_score="learned"``)."""
        return self.config["prior_score"] == "learned"

    # -- training -------------------------------------------------------------------------------
    def _transform(self, theta: Tensor) -> Tensor:
        if not bool(self.log_dims.any()):
            return theta
        return torch.where(self.log_dims, torch.log(theta.clamp_min(1e-38)), theta)

    def _build(self, theta: Tensor, x: Tensor) -> nn.Module:
        c = self.config
        u = torch.nan_to_num(self._transform(theta), nan=0.0, posinf=0.0, neginf=0.0)
        std_theta = fit_standardize(u)
        std_x = fit_standardize(x)
        z = (u - std_theta.mean) / std_theta.std
        cov = torch.cov(z.T).reshape(self.dim_theta, self.dim_theta) if z.shape[0] > 1 else torch.eye(self.dim_theta)
        cov = torch.nan_to_num(cov) + 1e-6 * torch.eye(self.dim_theta)
        prec = torch.linalg.pinv(0.5 * (cov + cov.T))
        z_range = torch.stack([z.min(0).values, z.max(0).values])
        return ScoreNet(self.dim_theta, tuple(x.shape[1:]), theta_loc=std_theta.mean, theta_scale=std_theta.std,
                        log_dims=self.log_dims, x_loc=std_x.mean, x_scale=std_x.std, z_precision=prec, z_range=z_range,
                        embedding=self.embedding, hidden=c["hidden"], embed=c["embed"],
                        embed_hidden=c["embed_hidden"], frequencies=c["frequencies"])

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        theta, x = batch["theta"], batch["x"]
        gen = None
        if not net.training:  # validation: fixed noise and times, several draws per row
            gen = torch.Generator(device=theta.device).manual_seed(0x5EED)
            rep = max(1, min(16, 4096 // max(theta.shape[0], 1)))
            if rep > 1:
                theta = theta.repeat(rep, 1)
                x = x.repeat(rep, *([1] * (x.dim() - 1)))
        z0 = net.to_working(theta)
        hx = net.encode_x(x)
        if self.learns_prior:
            drop = torch.rand(z0.shape[0], generator=gen, device=z0.device) < self.config["p_uncond"]
            hx = torch.where(drop[:, None], net.null.expand_as(hx), hx)
        return noise_prediction_loss(lambda zt, t, y: net.eps_codes(zt, t, y), z0, self.schedule, y=hx,
                                     t_min=self.config["t_min"], generator=gen)

    # -- scores ---------------------------------------------------------------------------------
    def _eps_set(self, x: Tensor) -> Callable[[Tensor, float], Tensor]:
        """The :data:`~telescope.samplers.tall.SetEps` of the trained network over observations ``x (m, *x_shape)``."""
        net = self._trained()
        with torch.no_grad():
            hx = net.encode_x(x.to(self.device))

        def eps_set(z: Tensor, t: float) -> Tensor:
            return net.eps_codes(z, t, hx)

        return eps_set

    def prior_score(self) -> DiffusedPrior:
        """The diffused prior score in the network's working space (analytic or learned)."""
        net = self._trained()
        if not self.learns_prior:
            return diffused_prior(self.prior, loc=net.theta_loc.double().cpu(), scale=net.theta_scale.double().cpu(),
                                  log_dims=self.log_dims).to(self.device)

        def eps(z: Tensor, alpha_bar: float) -> Tensor:
            t = float(self.schedule.t_from_alpha_bar(torch.tensor(alpha_bar, dtype=torch.float64)))
            return net.eps_codes(z, t, net.null)

        return LearnedPriorScore(eps, net.z_precision.double())

    def score(self, z, x, t) -> Tensor:
        r"""The diffused posterior score :math:`\nabla_z \log p_t(z | x)` in the working space, ``(n, d)``.

        Arguments:
            z: working-space points ``(n, d)`` (``self.net.to_working(theta)`` maps parameters there).
            x: one observation or ``(n, *x_shape)``.
            t: diffusion time in ``(0, 1]`` (a number).
        """
        net = self._trained()
        z = self._check_theta(z, "z").to(self.device)
        xs = self._check_x(x).to(self.device)
        t = float(t)
        if not 0.0 < t <= 1.0:
            raise ValueError(f"t must lie in (0, 1], got {t}")
        with torch.no_grad():
            e = net.eps_codes(z, t, net.encode_x(xs))
        return -e / float(self.schedule.sigma(torch.tensor(t, dtype=torch.float64)))

    def noise_predictor(self, x, *, method: str = "gauss", clip: bool = True, pilot_samples: int = 1024,
                        pilot_steps: int = 50, seed: int | None = 0) -> Callable[..., Tensor]:
        r"""The posterior's noise prediction as a callable ``eps(z, t, y=None) -> (N, d)`` in the working space.

        For one observation this is the network :math:`\epsilon_\psi(z, x, t)` with the ``x`` code
        computed once; for a set ``x (n_obs, *x_shape)`` it is the tall-data composition of the
        per-observation predictions (:meth:`TallSampler.composed_eps
        <telescope.samplers.tall.TallSampler.composed_eps>`; GAUSS, Linhart et al. 2024, Lemma 3.2
        and Algorithm 1, with its pilot covariances estimated once here, or JAC), i.e.
        :math:`-\sqrt{1-\bar\alpha_t}` times the composed score.  States ``z`` are standardised
        parameters (``self.net.to_working`` / ``self.net.from_working`` map to and from ``theta``);
        ``y`` is ignored, so the callable plugs into any sampler that takes ``eps(x_t, t, y)``, e.g.
        :class:`telescope.mlmc.CoupledDiffusion` (MLMC over the number of sampler steps).

        Arguments:
            x: one observation or a set of i.i.d. observations of one parameter.
            method: ``"gauss"`` or ``"jac"`` for sets (ignored for one observation).
            clip: clamp the denoised estimate to the widened training range of ``z`` (as in
                :meth:`sample_batched`), applied through the noise prediction
                (:func:`~telescope.samplers.tall.clip_eps`), so every sampler built on it is clipped alike.
            pilot_samples, pilot_steps: the GAUSS pilot run (one batched DDIM over the observations).
            seed: seeds the pilot.

        Returns:
            ``eps(z (N, d), t, y=None)``; ``t`` a number or a tensor whose entries are all equal
            (one diffusion time per call, as in every DDIM step).  Its attribute ``nfe_per_row``
            is the number of network evaluations per row (``n_obs`` for a set, else 1) and
            ``info`` the tall sampler's details (pilot settings, fallbacks).
        """
        net = self._trained()
        xs = self._check_x(x, "x").to(self.device)
        m = xs.shape[0]
        bounds = net.clip_range() if clip else None
        eps_set = self._eps_set(xs)
        if m == 1:
            def base(z: Tensor, t: float) -> Tensor:
                return eps_set(z, t)
            info: dict = {"method": "single"}
        else:
            if method not in ("gauss", "jac"):
                raise ValueError(f"method must be 'gauss' or 'jac' for a set of observations, got {method!r}")
            tall = TallSampler(eps_set, m, self.prior_score(), method=method, schedule=self.schedule,
                               pilot_samples=check_count("pilot_samples", pilot_samples, 2),
                               pilot_steps=check_count("pilot_steps", pilot_steps), clip=bounds,
                               generator=self._generator(seed), device=self.device)
            base, info = tall.composed_eps, tall.info
        sched = self.schedule

        @torch.no_grad()
        def eps(z: Tensor, t, y=None) -> Tensor:
            tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
            t0 = float(tt[0])
            if tt.numel() > 1 and not bool((tt == tt[0]).all()):
                raise ValueError("the NPSE noise predictor takes one diffusion time per call; got differing times "
                                 f"{tt.unique()[:4].tolist()}")
            e = base(z, t0)
            if bounds is not None:
                e = clip_eps(z, e, float(sched.alpha_bar(torch.tensor(t0, dtype=torch.float64))), bounds)
            return e

        eps.nfe_per_row = m if m > 1 else 1
        eps.info = info
        return eps

    # -- sampling -------------------------------------------------------------------------------
    def _generator(self, seed: int | None) -> torch.Generator:
        seed = seed if seed is not None else int(torch.randint(2**62, ()).item())
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def _fill(self, draw: Callable[[int], Tensor], n: int, m: int, max_time: float, what: str,
              stacklevel: int = 3) -> Tensor:
        """Draw ``(k, m, d)`` batches of parameters until ``n`` per column lie in the prior support (a low acceptance
        rate warns, at ``stacklevel``: the caller of the sampling method)."""
        out = torch.empty(n, m, self.dim_theta)
        count = torch.zeros(m, dtype=torch.long)
        drawn = accepted = 0
        rate = 1.0
        t0 = time.perf_counter()
        while True:
            need = int((n - count).max())
            # first round: exactly n (the usual case: everything inside); then what the acceptance rate asks
            k = n if drawn == 0 else min(max(int(need / max(rate, 1e-3) * 1.1) + 8, 16), max(16, 4 * n))
            s = draw(k).cpu()
            ok = in_support(self.prior, s.reshape(-1, self.dim_theta)).reshape(k, m)
            drawn, accepted = drawn + k * m, accepted + int(ok.sum())
            rate = max(accepted / drawn, 1e-6)
            rank = torch.cumsum(ok.long(), 0) - 1 + count
            keep = ok & (rank < n)
            cols = torch.arange(m).expand(k, m)
            out[rank[keep], cols[keep]] = s[keep]
            count = torch.clamp(count + ok.sum(0), max=n)
            if bool((count >= n).all()):
                break
            if time.perf_counter() - t0 > max_time:
                raise RuntimeError(
                    f"NPSE {what} got only {int(count.min())} of {n} samples inside the prior support (finite "
                    f"and in range) within max_time={max_time}s (acceptance rate {rate:.2e}); train longer or on "
                    f"more simulations, use more steps, or raise max_time")
        self.sample_info["acceptance_rate"] = accepted / drawn
        if accepted / drawn < 0.01:
            warnings.warn(f"NPSE acceptance rate inside the prior support is low ({accepted / drawn:.2%})",
                          RuntimeWarning, stacklevel=stacklevel)
        return out

    def _check_steps(self, steps, default: int) -> int:
        return check_count("steps", steps) if steps is not None else default

    @torch.no_grad()
    def sample_batched(self, x, n: int, *, steps: int | None = None, sampler: str = "ddim", eta: float | None = None,
                       spacing: str = "uniform", clip: bool = True, seed: int | None = None,
                       max_time: float = 300.0, progress_bar: bool = False) -> Tensor:
        """``n`` samples of each of the ``m`` single-observation posteriors of ``x (m, *x_shape)``: ``(n, m, d)``.

        Arguments:
            steps: reverse steps (default 100).
            sampler: ``"ddim"`` (with ``eta``; default :data:`DEFAULT_ETA`),
                ``"ddpm"`` (``eta = 1``) or ``"ode"`` (deterministic probability flow, ``eta = 0``).
            spacing: time grid, ``"uniform"`` or ``"quadratic"`` (finer near ``t = 0``).
            clip: clamp the denoised estimate of every step to the range of the training
                parameters (widened by a quarter of its width, in the standardised space); this keeps
                trajectories that start in the tails of the noise, where the network never saw data,
                from running away.  ``False`` gives the plain sampler.
            seed: seeds the noise; samples outside the prior support are redrawn.
        """
        net = self._trained()
        n = check_count("n", n)
        xs = self._check_x(x)
        steps = self._check_steps(steps, 100)
        eta = sampler_eta(sampler, eta if eta is not None or sampler != "ddim" else DEFAULT_ETA)
        if spacing not in ("uniform", "quadratic"):
            raise ValueError(f"spacing must be 'uniform' or 'quadratic', got {spacing!r}")
        m = xs.shape[0]
        eps_set = self._eps_set(xs)
        gen = self._generator(seed)
        per = max(1, 2**16 // m)
        bounds = net.clip_range() if clip else None
        self.sample_info = {"method": "single", "steps": steps, "eta": eta, "spacing": spacing, "n_obs": m,
                            "clip": bool(clip)}

        def draw(k: int) -> Tensor:
            parts = []
            with progress(total=steps * math.ceil(k / per), desc="NPSE sampling", enabled=progress_bar,
                          unit="step") as bar:
                for lo in range(0, k, per):
                    z = torch.randn(min(per, k - lo), m, self.dim_theta, generator=gen, device=self.device)
                    z = ddim_sample(eps_set, z, schedule=self.schedule, steps=steps, eta=eta, spacing=spacing,
                                    clip=bounds, generator=gen, bar=bar)
                    parts.append(net.from_working(z))
            return torch.cat(parts)

        return self._fill(draw, n, m, max_time, "sampling")

    def sample(self, x, n: int, *, method: str | None = None, steps: int | None = None, sampler: str = "ddim",
               eta: float | None = None, spacing: str | None = None, clip: bool = True, seed: int | None = None,
               pilot_samples: int | None = None, pilot_steps: int = 50, langevin_steps: int = 5, tau: float = 0.5,
               prior_term: str = "bridge", prior_kernel: str | None = None, corrector_steps: int | None = None,
               refine_steps: int | None = None, refine_step: float = 0.3, refine_t_min: float | None = None,
               stop_t: float | None = None, stop_cov: str | None = None, stop_kernel: str | None = None,
               max_time: float = 300.0,
               progress_bar: bool = False) -> Tensor:
        r"""``n`` posterior samples ``(n, d)`` given one observation or a set of i.i.d. observations.

        Arguments:
            x: one observation (shape as one x at fit), or a set ``(n_obs, *x_shape)`` of
                observations of the same parameter; with ``n_obs > 1`` the samples follow the
                tall posterior :math:`p(\theta | x_{1:n}) \propto \lambda^{1-n}\prod_j p(\theta | x_j)`
                (with one observation every method reduces to plain posterior sampling).
            n: number of samples.
            method: ``"gauss"`` (default for sets), ``"jac"``, ``"fnpse"`` (:mod:`telescope.samplers.tall`)
                or ``"auto"``: the settings of :func:`telescope.samplers.tall.auto_settings` for the
                prior's family and ``n_obs`` (GAUSS; for box priors with a 1024-sample pilot and a Gaussian
                kernel stop at ``t = 0.05``);
                settings given explicitly here override them.
            steps: reverse steps (default 100 for one observation, 50 for GAUSS, 1000 for JAC,
                400 for F-NPSE).
            sampler, eta: DDIM ``eta`` (``"ddim"``, default :data:`DEFAULT_ETA`),
                ``"ddpm"`` (1) or ``"ode"`` (0); not used by F-NPSE.
            spacing: time grid, ``"uniform"`` (the paper) or ``"quadratic"`` (finer near ``t = 0``).
            clip: clamp denoised estimates (F-NPSE: states) to the widened training range of the
                standardised parameters (:meth:`sample_batched`); ``False`` is the paper's unclipped sampler.
            seed: seeds every random draw.
            pilot_samples, pilot_steps: the GAUSS pilot run per observation (one batched DDIM); default
                256 samples (1024 with ``method="auto"`` and a box prior) and 50 steps.
            langevin_steps, tau, prior_term: F-NPSE settings.
            prior_kernel: GAUSS/JAC's prior backward kernel, ``"gaussian"`` (default: moment-matched
                for a uniform prior) or ``"exact"`` (the flat term, exact for uniform priors,
                :func:`~telescope.samplers.prior_scores.exact_kernel_prior`).
            corrector_steps: Langevin corrector steps on the composed score after every GAUSS/JAC
                step (predictor-corrector; default 0).
            refine_steps, refine_step, refine_t_min: preconditioned Langevin steps on the composed score
                at a small time (not below ``refine_t_min``) after GAUSS/JAC
                (:meth:`~telescope.samplers.tall.TallSampler.refine`; default 0, off).
            stop_t, stop_cov, stop_kernel: stop the reverse path at ``stop_t`` and jump to ``t = 0`` with one
                draw of the Gaussian backward kernel of the tall posterior (covariance from the ``"batch"``, the
                default, or the ``"pilot"``; ``stop_kernel="truncated"``: the Gaussian truncated to a box prior,
                :meth:`~telescope.samplers.tall.TallSampler._kernel_step`); default 0, off.
            max_time: give up (RuntimeError) when ``n`` samples inside the prior support cannot be had in time.
            progress_bar: show progress.

        Returns:
            ``(n, d)`` samples; details of the run (pilot time, fallbacks, acceptance rate) are in
            ``self.sample_info``.
        """
        self._trained()  # the not-trained error first
        n = check_count("n", n)
        if method is not None and method not in METHODS + ("auto",):
            raise ValueError(f"method must be one of {list(METHODS) + ['auto']} (tall-data samplers), got {method!r}")
        if prior_kernel is not None and prior_kernel not in PRIOR_KERNELS:
            raise ValueError(f"prior_kernel must be one of {list(PRIOR_KERNELS)}, got {prior_kernel!r}")
        x = torch.as_tensor(x, dtype=torch.float32) if not isinstance(x, Tensor) else x.float()
        if x.dim() > len(self.x_shape or ()) and x.shape[0] == 0:
            event = ", ".join(map(str, self.x_shape or ()))
            raise ValueError(f"x has no observations (shape {tuple(x.shape)}); expected one observation of shape "
                             f"{self.x_shape} or a set (n_obs, {event}) with n_obs >= 1")
        xs = self._check_x(x, "x")
        if xs.shape[0] == 1:
            return self.sample_batched(xs, n, steps=steps, sampler=sampler, eta=eta, spacing=spacing or "uniform",
                                       clip=clip, seed=seed, max_time=max_time, progress_bar=progress_bar)[:, 0]
        return npse_sampling.sample_tall(
            self, xs, n, method=method, steps=steps, sampler=sampler, eta=eta, spacing=spacing, clip=clip, seed=seed,
            pilot_samples=pilot_samples, pilot_steps=pilot_steps, langevin_steps=langevin_steps, tau=tau,
            prior_term=prior_term, prior_kernel=prior_kernel, corrector_steps=corrector_steps,
            refine_steps=refine_steps, refine_step=refine_step, refine_t_min=refine_t_min, stop_t=stop_t,
            stop_cov=stop_cov, stop_kernel=stop_kernel, max_time=max_time, progress_bar=progress_bar)

    def tall_check(self, x, n: int = 1000, *, method: str = "auto", seed: int | None = 0, sd_tol: float = 1.15,
                   mean_tol: float = 0.3, warn: bool = True, **sample_kwargs) -> dict:
        r"""Check tall-posterior samples without a reference: do the halves of ``x`` fit the whole?

        Samples the tall posteriors of all observations and of the even- and odd-indexed halves
        (``method`` and ``sample_kwargs`` as in :meth:`sample`), and compares the whole with what the
        halves predict (:func:`telescope.samplers.tall.split_check`, in the working space).  A
        sampler (or network) whose error grows with ``n`` fails it.  It is a consistency check,
        not a proof: it assumes roughly Gaussian likelihoods, and where a box binds at the
        parameter the prediction itself is approximate.

        Arguments:
            x: ``(n_obs, *x_shape)`` with ``n_obs >= 4``.
            n: samples per posterior.
            warn: issue a ``RuntimeWarning`` when the check fails.

        Returns:
            ``{"sd_ratio_min", "sd_ratio_max", "mean_shift", "ok", "samples"}``; ``samples`` are the
            ``(n, d)`` samples of the whole set.
        """
        return npse_sampling.tall_check(self, x, n, method=method, seed=seed, sd_tol=sd_tol, mean_tol=mean_tol,
                                        warn=warn, **sample_kwargs)
