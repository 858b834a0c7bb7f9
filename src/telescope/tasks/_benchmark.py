"""Shared machinery of the SBI-benchmark tasks with MCMC references (issue 8).

* :func:`rk4` — a fixed-step classical Runge–Kutta integrator, vectorised over a batch of
  parameters (used by ``sir`` and ``lotka_volterra``; no per-sample Python loop).
* :func:`ess` — the rank-normalised bulk effective sample size of Vehtari et al. (2021)
  (:mod:`telescope.samplers.convergence`, the one implementation in telescope).
* :func:`checked_mcmc` — SIR-initialised, whitened slice sampling
  (:func:`telescope.samplers.mcmc.slice_sample`) whose chains are checked before the samples are
  returned: rank-normalised split-R-hat below ``rhat_max`` (default 1.01) and a bulk effective sample size of at
  least ``min_ess`` in every dimension.  A failed check raises ``RuntimeError`` (``strict=True``,
  so that nothing unchecked is cached) or warns (``strict=False``).
* :class:`MCMCReferenceTask` — a :class:`~telescope.tasks.base.Task` whose reference is
  :func:`checked_mcmc` on ``log prior + log likelihood`` (float64), computed lazily on the first
  request per observation and cached; :meth:`~MCMCReferenceTask.regenerate` recomputes a cached
  reference, and tall-data references (``n_obs`` iid observations from one ``theta``) use the
  same machinery.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..samplers import convergence
from ..samplers.mcmc import rhat, sir, whitened_slice
from ..simulation.simulators import batch_seed
from ._mcmc_reference import random_walk_metropolis
from .base import Task, cache_dir

__all__ = ["rk4", "ess", "checked_mcmc", "TallData", "MCMCReferenceTask", "ODEReferenceTask", "regenerate"]

LogProb = Callable[[Tensor], Tensor]


# -- ODE integration --------------------------------------------------------------------------
def rk4(f: Callable[[Tensor], Tensor], y0: Tensor, t_out: Tensor, dt: float) -> Tensor:
    """Integrate ``y' = f(y)`` (autonomous) with classical RK4 at a fixed step.

    Arguments:
        f: ``(B, k) -> (B, k)`` right-hand side, evaluated on the whole batch at once.
        y0: ``(B, k)`` initial state at ``t = 0``.
        t_out: ``(T,)`` increasing output times ``>= 0``.
        dt: the step; each interval between outputs is split into
            ``ceil(length / dt)`` equal steps (so outputs fall exactly on the grid).

    Returns:
        ``(B, T, k)`` the states at ``t_out``.
    """
    y, t, out = y0, 0.0, []
    for t_next in t_out.tolist():
        steps = max(0, math.ceil((t_next - t) / dt - 1e-9))
        if steps:
            h = (t_next - t) / steps
            for _ in range(steps):
                k1 = f(y)
                k2 = f(y + 0.5 * h * k1)
                k3 = f(y + 0.5 * h * k2)
                k4 = f(y + h * k3)
                y = y + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y)
        t = t_next
    return torch.stack(out, 1)


# -- convergence diagnostics --------------------------------------------------------------------
def ess(chains: Tensor) -> Tensor:
    """Bulk effective sample size per dimension of samples ``(n, c, d)`` (draws first): the rank-normalised
    split-chain ESS of Vehtari et al. (2021), :func:`telescope.samplers.convergence.ess_bulk`."""
    return convergence.ess_bulk(chains.transpose(0, 1))


@torch.no_grad()
def checked_mcmc(log_prob: LogProb, proposals: Tensor, n: int, *, seed: int, chains: int = 200,
                 warmup: int = 200, thin: int = 2, proposal_log_prob: Tensor | None = None,
                 rhat_max: float = 1.01, min_ess: float | None = None, strict: bool = True,
                 kernel: str = "slice", name: str = "task", retries: int = 2) -> tuple[Tensor, dict]:
    """``n`` samples ``(n, d)`` of ``exp(log_prob)`` by whitened MCMC, with convergence checks.

    Chains start from sampling-importance-resampling of ``proposals``.  With ``kernel="slice"``,
    after half the warm-up the chains' mean ``mu`` and Cholesky factor ``L`` are estimated and
    slice sampling continues in ``z = L^{-1} (theta - mu)`` (a constant Jacobian), which removes
    linear correlations.  With ``kernel="rwm"`` (one density evaluation per iteration for all
    chains, for expensive likelihoods such as an ODE solve) random-walk Metropolis uses the
    proposal ``N(0, s^2 L L^T)``, ``L`` re-estimated and ``s`` adapted during warm-up
    (:func:`telescope.tasks._mcmc_reference.random_walk_metropolis`).

    Arguments:
        log_prob: ``(m, d) -> (m,)`` unnormalised log posterior, ``-inf`` outside the support.
        proposals: ``(p, d)`` points resampled by SIR into ``chains`` initial states.
        n: samples returned (pooled over chains, shuffled).
        chains, warmup, thin: sampler settings; at most ``n // 20`` chains are run (so that each
            keeps at least 20 draws for the checks), each keeping ``ceil(n / chains)`` samples.
        proposal_log_prob: ``(p,)`` log density of ``proposals`` (omit for uniform proposals).
        rhat_max: largest split-R-hat accepted.
        min_ess: smallest bulk ESS accepted in any dimension (default ``n / 10``).
        strict: raise ``RuntimeError`` on a failed check (else warn).
        kernel: ``"slice"`` or ``"rwm"``.
        retries: on a failed check, run again (new seed) with twice the warm-up and thinning, up to this
            many times, before raising or warning.

    Returns:
        samples ``(n, d)`` (float64) and diagnostics ``{"rhat", "ess", "chains", "per_chain"}``.
    """
    if kernel not in ("slice", "rwm"):
        raise ValueError(f"kernel must be 'slice' or 'rwm', got {kernel!r}")
    g = torch.Generator().manual_seed(int(seed))
    proposals = proposals.double()
    # at least 20 draws per chain: split-R-hat and ESS of shorter chains are too noisy to check
    chains = max(2, min(int(chains), n // 20))
    per_chain = -(-n // chains)
    init = sir(log_prob, proposals, chains, proposal_log_prob=proposal_log_prob, generator=g)
    if kernel == "rwm":
        s = random_walk_metropolis(log_prob, init, per_chain, warmup=warmup, thin=thin, generator=g)
    else:
        s = whitened_slice(log_prob, init, per_chain, warmup, thin, g)
    r, e = rhat(s).double(), ess(s)
    min_ess = n / 10 if min_ess is None else float(min_ess)
    diag = {"rhat": r, "ess": e, "chains": chains, "per_chain": per_chain}
    problems = []
    if not torch.isfinite(r).all() or r.max() >= rhat_max:
        problems.append(f"split-R-hat {[round(v, 4) for v in r.tolist()]} (need < {rhat_max})")
    if not torch.isfinite(e).all() or e.min() < min_ess:
        problems.append(f"bulk ESS {[round(v) for v in e.tolist()]} (need >= {min_ess:.0f})")
    if problems and retries > 0:
        warnings.warn(f"{name} reference MCMC: {'; '.join(problems)}; running again with warmup {2 * warmup} and "
                      f"thin {2 * thin}", RuntimeWarning, stacklevel=2)
        return checked_mcmc(log_prob, proposals, n, seed=seed + 7919, chains=chains, warmup=2 * warmup, thin=2 * thin,
                            proposal_log_prob=proposal_log_prob, rhat_max=rhat_max, min_ess=min_ess, strict=strict,
                            kernel=kernel, name=name, retries=retries - 1)
    if problems:
        msg = (f"{name} reference MCMC failed its convergence checks: " + "; ".join(problems)
               + "; increase warmup, thin or chains")
        if strict:
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    flat = s.reshape(-1, s.shape[-1])
    return flat[torch.randperm(flat.shape[0], generator=g)[:n]], diag


@torch.no_grad()
def adapt_proposals(log_prob: LogProb, v: Tensor, log_q: Tensor, *, generator: torch.Generator,
                    rounds: int = 4, inflate: float = 2.0, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Move importance proposals ``v (p, d)`` (log density ``log_q (p,)``) onto a narrow target.

    Population Monte Carlo with one Gaussian: each round fits the weighted mean and covariance of
    the current proposals (covariance times ``inflate``, plus a quarter of the previous one so that a
    round with a tiny effective sample size cannot collapse it) and draws ``p`` fresh proposals from
    it.  Chains initialised by SIR from the result start spread over the posterior instead of on the
    few prior draws that happen to land in it, which is what whitened samplers need to adapt.

    Returns:
        the final proposals ``(p, d)`` and their log density ``(p,)``.
    """
    p, d = v.shape
    cov_prev = torch.cov(v.T).reshape(d, d)
    for _ in range(rounds):
        lw = torch.cat([log_prob(c) for c in v.split(chunk)]) - log_q
        lw = torch.where(torch.isnan(lw), torch.full_like(lw, -float("inf")), lw)
        if not torch.isfinite(lw).any():
            break
        w = torch.softmax(lw, 0)
        mu = (w[:, None] * v).sum(0)
        dv = v - mu
        cov = inflate * (w[:, None, None] * dv[:, :, None] * dv[:, None, :]).sum(0) + 0.25 * cov_prev
        cov = 0.5 * (cov + cov.T) + 1e-12 * torch.eye(d, dtype=v.dtype)
        gauss = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
        v = mu + torch.randn(p, d, generator=generator, dtype=v.dtype) @ torch.linalg.cholesky(cov).T
        log_q = gauss.log_prob(v)
        cov_prev = cov
    return v, log_q


# -- tasks with MCMC references ---------------------------------------------------------------
class TallData:
    """Tall data for a task with ``_reference_set(x_set (n_obs, dim_x), n, seed) -> (n, dim_theta)``: sets of
    ``n_obs`` iid observations of one parameter and their reference posteriors, cached on disk
    (paper 3 Section 4.2)."""

    def tall_observation(self, i: int = 1, n_obs: int = 1) -> Tensor:
        """``n_obs`` iid observations ``(n_obs, dim_x)`` from ``true_parameters(i)``; row 0 is ``observation(i)``."""
        i = self._check_index(i)
        if isinstance(n_obs, bool) or not isinstance(n_obs, int) or n_obs < 1:
            raise ValueError(f"n_obs must be an integer >= 1, got {n_obs!r}")
        theta = self.true_parameters(i)
        rows = [self.observation(i)]
        if n_obs > 1:
            rows.append(self.simulator(theta.expand(n_obs - 1, -1),
                                       seed=batch_seed(self.observation_seed + 3, i)).reshape(n_obs - 1, -1))
        return torch.cat([r.reshape(-1, self.dim_x) for r in rows])

    def tall_reference_samples(self, i: int = 1, n_obs: int = 1, n: int = 10_000, *, cache: bool = True) -> Tensor:
        """Reference samples ``(n, dim_theta)`` of ``p(theta | tall_observation(i, n_obs))`` (cached)."""
        if n_obs == 1:
            return self.reference_samples(i, n, cache=cache)
        x_set = self.tall_observation(i, n_obs)
        path = cache_dir() / "references" / self.cache_key() / f"obs{i}_nobs{n_obs}_n{n}.pt"
        if cache and path.exists():
            return torch.load(path, weights_only=True)
        s = self._reference_set(x_set, n, seed=batch_seed(self.observation_seed + 4, i) + n_obs).float()
        if cache:
            _save(s, path)
        return s


class MCMCReferenceTask(TallData, Task):
    """A task whose reference posterior is :func:`checked_mcmc` against its exact likelihood.

    Subclasses implement ``_ll64(theta (m, d) float64, x (dim_x,) float64) -> (m,)`` and may
    override :meth:`_to_sampler` / :meth:`_from_sampler` (an unconstrained parametrisation for the
    sampler, with its log-Jacobian) and :meth:`_proposals`.

    The reference for observation ``i`` is computed on the first request and cached (see
    :meth:`~telescope.tasks.base.Task.reference_samples`); :attr:`diagnostics` holds the R-hat
    and ESS of the last run.
    """

    reference_kind = "mcmc"

    def _init_mcmc(self, chains: int, warmup: int, thin: int, n_proposals: int, strict: bool,
                   rhat_max: float = 1.01, kernel: str = "slice") -> None:
        if kernel not in ("slice", "rwm"):
            raise ValueError(f"kernel must be 'slice' or 'rwm', got {kernel!r}")
        self.kernel = kernel
        self.chains, self.warmup, self.thin = int(chains), int(warmup), int(thin)
        self.n_proposals, self.strict, self.rhat_max = int(n_proposals), bool(strict), float(rhat_max)
        self.adapt_rounds = 4
        self.diagnostics: dict = {}

    # likelihood -------------------------------------------------------------------------------
    def _ll64(self, theta: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)`` for ``theta (m, dim_theta)`` and one ``x (dim_x,)``: ``(m,)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(-1, self.dim_theta)
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape != (self.dim_x,):
            raise ValueError(f"x must have shape ({self.dim_x},) for task {self.name!r}, got {tuple(x.shape)}")
        return self._ll64(theta, x).float()

    def tall_log_likelihood(self, theta: Tensor, x_set: Tensor) -> Tensor:
        """``sum_j log p(x_j | theta)`` for ``theta (m, dim_theta)`` and iid ``x_set (n_obs, dim_x)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(-1, self.dim_theta)
        x_set = torch.as_tensor(x_set, dtype=torch.float64).reshape(-1, self.dim_x)
        return self._tall_ll64(theta, x_set).float()

    def _tall_ll64(self, theta: Tensor, x_set: Tensor) -> Tensor:
        return sum(self._ll64(theta, xj) for xj in x_set)

    def _log_post64(self, theta: Tensor, x_set: Tensor) -> Tensor:
        lp = self.prior.log_prob(theta.to(self.prior.mean.dtype)).double()
        out = torch.full_like(lp, -float("inf"))
        ok = torch.isfinite(lp)
        if ok.any():
            out[ok] = lp[ok] + self._tall_ll64(theta[ok], x_set)
        return torch.where(torch.isnan(out), torch.full_like(out, -float("inf")), out)

    # sampler parametrisation (identity by default) -------------------------------------------
    def _to_sampler(self, theta: Tensor) -> Tensor:
        return theta

    def _from_sampler(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``theta`` and ``log |d theta / d v|`` for sampler coordinates ``v``."""
        return v, torch.zeros(v.shape[0], dtype=v.dtype)

    def _proposals(self, g: torch.Generator) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g).item()))
            return self.prior.sample((self.n_proposals,)).double()

    def _reference_set(self, x_set: Tensor, n: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        x_set = x_set.double().reshape(-1, self.dim_x)
        props = self._proposals(g)

        def log_target(v: Tensor) -> Tensor:
            theta, log_jac = self._from_sampler(v)
            return self._log_post64(theta, x_set) + log_jac

        v_props = self._to_sampler(props)
        # proposals are prior draws: their density in v-coordinates is prior(theta) |d theta / d v|
        _, log_jac = self._from_sampler(v_props)
        q = self.prior.log_prob(props.to(self.prior.mean.dtype)).double() + log_jac
        v_props, q = adapt_proposals(log_target, v_props, q, generator=g, rounds=self.adapt_rounds)
        v, diag = checked_mcmc(log_target, v_props, n, seed=seed + 1, chains=self.chains, warmup=self.warmup,
                               thin=self.thin, proposal_log_prob=q, rhat_max=self.rhat_max,
                               strict=self.strict, kernel=self.kernel, name=self.name)
        self.diagnostics = diag
        return self._from_sampler(v)[0]

    def _reference(self, x: Tensor, n: int, seed: int) -> Tensor:
        return self._reference_set(x.reshape(1, -1), n, seed)

    def regenerate(self, i: int = 1, n: int = 10_000) -> Tensor:
        """Recompute the reference of observation ``i`` and overwrite its cache."""
        return regenerate(self, i, n)


def _save(samples: Tensor, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(samples, tmp)
    os.replace(tmp, path)


def regenerate(task: Task, i: int = 1, n: int = 10_000) -> Tensor:
    """Recompute ``task.reference_samples(i, n)`` from scratch and overwrite its cache entry."""
    if task.reference_kind is None:
        raise ValueError(f"task {task.name!r} has no reference posterior to regenerate")
    i = task._check_index(i)
    samples = task.reference_samples(i, n, cache=False)
    _save(samples, cache_dir() / "references" / task.cache_key() / f"obs{i}_n{n}.pt")
    return samples


class ODEReferenceTask(MCMCReferenceTask):
    """An :class:`MCMCReferenceTask` with positive parameters whose likelihood depends on ``theta`` only
    through one ODE solution: ``_solve(theta (m, d)) -> solution`` and ``_ll_given(solution, x) -> (m,)``.

    The tall likelihood solves the ODE once for all observations, and the reference sampler moves
    ``log theta`` (the parameters are positive; log-normal priors become Gaussian there).
    """

    def _solve(self, theta: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ll_given(self, solution: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ll64(self, theta: Tensor, x: Tensor) -> Tensor:
        return self._ll_given(self._solve(theta), x)

    def _tall_ll64(self, theta: Tensor, x_set: Tensor) -> Tensor:
        solution = self._solve(theta)  # one ODE solve for all the observations
        return sum(self._ll_given(solution, xj) for xj in x_set)

    def _to_sampler(self, theta: Tensor) -> Tensor:
        return torch.log(theta)

    def _from_sampler(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.exp(v), v.sum(-1)
