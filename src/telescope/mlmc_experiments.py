r"""Test problems for MLMC over diffusion samplers: an exact Gaussian model and 8x8 digits.

**Exact Gaussian.** For data :math:`x_0 \sim \mathcal{N}(\mu, s^2 I)` the VP marginals are
:math:`q_t = \mathcal{N}(\sqrt{\bar\alpha_t}\mu, (\bar\alpha_t s^2 + 1 - \bar\alpha_t) I)`, so the
exact noise prediction is

.. math:: \epsilon(x, t) = \sqrt{1-\bar\alpha_t}\,\frac{x - \sqrt{\bar\alpha_t}\mu}
                                                    {\bar\alpha_t s^2 + 1 - \bar\alpha_t}.

Every DDIM step is then affine in the state, so the coupled fine/coarse end states of a level
are jointly Gaussian and :meth:`GaussianData.exact_levels` computes their means and
covariances by the same recursion the sampler runs: the exact :math:`E P_\ell`,
:math:`\|E\Delta P_\ell\|` and :math:`V_\ell` for :math:`P = x^2`.  The samplers are first-order
schemes (exponential integrators of the reverse SDE / probability-flow ODE with additive
noise), so the bias decays like the step, :math:`\alpha = 1`, and the strong error too, so
:math:`V_\ell \propto h^2`, :math:`\beta = 2`; with :math:`\gamma = 1`, MLMC reaches RMSE
:math:`\varepsilon` at cost :math:`O(\varepsilon^{-2})` (eq. (18), :math:`\beta > \gamma`).
One exception, visible in the exact recursion: the stochastic samplers' last step to
:math:`t = 0` adds no noise, so the noise of the fine path's last-but-one step has no coarse
counterpart; its variance is proportional to the length of the last step, :math:`O(h^2)` on
the quadratic grid (``spacing="quadratic"``, :math:`\beta = 2`) but :math:`O(h)` on a uniform
grid, where :math:`\beta` falls to 1 on fine levels — the :math:`\beta \approx 1` the paper
reports for its stochastic samplers.  The deterministic ODE keeps :math:`\beta = 2` on both.
Before the asymptotic regime (levels up to ~8) the fitted rates are lower (e.g. DDPM
:math:`\alpha \approx 0.7, \beta \approx 1.6` on levels 4-8) and match the exact ones.

**Digits** (:func:`digits_problem`): the 8x8 digits bundled with scikit-learn, scaled to
:math:`[-1, 1]`, a small conditional noise-prediction MLP, and the three imaging problems of
Section 3 at toy scale — see that function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .diffusion import VPSchedule, ddim_coefficients, sampler_eta
from .mlmc.coupled import CoupledDiffusion

__all__ = ["GaussianData", "gaussian_problem", "DigitsEps", "digits_loss", "train_digits_model", "digits_problem",
           "load_digits_tensor", "load_or_train_digits", "plot_digits_samples", "run_gaussian", "run_digits",
           "summary", "TASKS"]


class GaussianData:
    r"""Data :math:`\mathcal{N}(\mu, s^2 I)` with its exact noise prediction under a VP schedule.

    Arguments:
        mu: mean vector ``(d,)``.
        s: standard deviation (scalar).
        schedule: the VP schedule (default ``VPSchedule()``).

    Example:
        >>> g = GaussianData([1.0, -0.5], 0.5)
        >>> g.second_moment().tolist()
        [1.25, 0.5]
    """

    def __init__(self, mu, s: float = 0.5, schedule: VPSchedule | None = None):
        self.mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
        if not s > 0:
            raise ValueError(f"s must be > 0, got {s}")
        self.s = float(s)
        self.schedule = schedule or VPSchedule()

    @property
    def d(self) -> int:
        return self.mu.numel()

    def eps(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The exact noise prediction ``(n, d)`` at states ``x (n, d)`` and times ``t (n,)``."""
        a = self.schedule.alpha_bar(t.double())[:, None]
        mu = self.mu.to(device=x.device)
        out = (1 - a).sqrt() * (x.double() - a.sqrt() * mu) / (a * self.s**2 + 1 - a)
        return out.to(x.dtype)

    def second_moment(self) -> Tensor:
        """The exact :math:`E x^2 = \\mu^2 + s^2` (componentwise)."""
        return self.mu**2 + self.s**2

    def exact_levels(self, levels, *, sampler: str = "ddpm", eta: float | None = None, T0: int = 1, M: int = 2,
                     init: str = "noise", x_obs=None, mask=None, t_start: float = 1.0, t_end: float = 0.0,
                     spacing: str = "uniform") -> dict:
        r"""Exact per-level moments of the coupled sampler :class:`CoupledDiffusion` for ``f = x^2``.

        Returns a dict of lists over ``levels`` (norms are ``rms`` over components):
        ``mean_fine`` (vector :math:`E P_\ell`), ``var_fine`` (rms-trace of :math:`V[P_\ell]`),
        ``mean`` (:math:`\|E\Delta P_\ell\|`), ``var`` (:math:`V_\ell`).
        """
        e = sampler_eta(sampler, eta)
        d = self.d
        mu = self.mu.numpy()
        x_obs = np.zeros(d) if x_obs is None else np.asarray(x_obs, dtype=float).reshape(d)
        m = {"noise": np.ones(d), "observation": np.zeros(d)}.get(init)
        if m is None:
            m = np.asarray(mask, dtype=float).reshape(d)
        keep = (m > 0) if init == "mask" else np.ones(d, dtype=bool)
        out = {"levels": list(levels), "mean_fine": [], "var_fine": [], "mean": [], "var": []}
        for lv in levels:
            mean0 = (1 - m) * x_obs
            var0 = m.copy()
            # state (x_f, x_c, z): means (d, 3), covariances (d, 3, 3)
            mean = np.stack([mean0, mean0, np.zeros(d)], 1)
            cov = np.zeros((d, 3, 3))
            cov[:, :2, :2] = var0[:, None, None]
            nf = T0 * M**lv
            tf = self.schedule.timesteps(nf, t_start, t_end, spacing).tolist()
            abf = self.schedule.alpha_bar(torch.tensor(tf, dtype=torch.float64)).tolist()
            coarse = lv > 0
            var_z = 0.0
            for k in range(nf):
                A, B, c = self._affine(abf[k], abf[k + 1], e, mu)
                kk = ddim_coefficients(abf[k], abf[k + 1], e)[3]
                A, B, c = np.where(keep, A, 1.0), np.where(keep, B, 0.0), np.where(keep, c, 0.0)
                T = np.zeros((d, 3, 3))
                T[:, 0, 0], T[:, 1, 1], T[:, 2, 2] = A, 1.0, kk
                g = np.stack([c, np.zeros(d), c], 1)
                mean = np.einsum("dij,dj->di", T, mean)
                mean[:, 0] += B
                cov = T @ cov @ T.transpose(0, 2, 1) + g[:, :, None] * g[:, None, :]
                var_z = kk * kk * var_z + float(c.max() ** 2 if keep.any() else 0.0)
                if coarse and (k + 1) % M == 0:
                    j0 = k + 1 - M
                    Ac, Bc, cc = self._affine(abf[j0], abf[k + 1], e, mu)
                    r = cc / math.sqrt(var_z) if var_z > 0 else 0.0
                    Ac, Bc, r = np.where(keep, Ac, 1.0), np.where(keep, Bc, 0.0), np.where(keep, r, 0.0)
                    T = np.zeros((d, 3, 3))
                    T[:, 0, 0], T[:, 1, 1], T[:, 1, 2] = 1.0, Ac, r
                    mean = np.einsum("dij,dj->di", T, mean)
                    mean[:, 1] += Bc
                    cov = T @ cov @ T.transpose(0, 2, 1)
                    var_z = 0.0
            mf, mc = mean[:, 0], mean[:, 1]
            vf, vc, cfc = cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1]
            Pf = mf**2 + vf
            out["mean_fine"].append(Pf.tolist())
            out["var_fine"].append(float(np.mean(2 * vf**2 + 4 * mf**2 * vf)))
            if coarse:
                Pc = mc**2 + vc
                V = 2 * vf**2 + 4 * mf**2 * vf + 2 * vc**2 + 4 * mc**2 * vc - 2 * (2 * cfc**2 + 4 * mf * mc * cfc)
                out["mean"].append(float(np.sqrt(np.mean((Pf - Pc) ** 2))))
                out["var"].append(float(np.mean(np.maximum(V, 0.0))))
            else:
                out["mean"].append(float(np.sqrt(np.mean(Pf**2))))
                out["var"].append(out["var_fine"][-1])
        return out

    def _affine(self, ab_t: float, ab_s: float, eta: float, mu: np.ndarray):
        """``x_s = A x_t + B + c xi`` for one DDIM step with the exact noise prediction."""
        a, b, c, _ = ddim_coefficients(ab_t, ab_s, eta)
        sig = math.sqrt(1 - ab_t)
        v = ab_t * self.s**2 + 1 - ab_t
        A = np.full_like(mu, a + b * sig / v)
        B = -b * sig * math.sqrt(ab_t) * mu / v
        return A, B, np.full_like(mu, c)


def gaussian_problem(d: int = 4, *, s: float = 0.5, sampler: str = "ddpm", eta: float | None = None,
                     schedule: VPSchedule | None = None, seed: int = 0, M: int = 2, T0: int = 1,
                     device=None) -> tuple[CoupledDiffusion, GaussianData]:
    """The exact-Gaussian MLMC problem: ``(level sampler, data)`` with means spread in ``[-1, 1]``.

    The quantity is ``x**2`` per component, whose exact value is ``data.second_moment()``.
    """
    schedule = schedule or VPSchedule(beta_max=20.0)
    mu = torch.linspace(-1.0, 1.0, d) if d > 1 else torch.tensor([1.0])
    data = GaussianData(mu, s, schedule)
    lv = CoupledDiffusion(data.eps, shape=(d,), schedule=schedule, sampler=sampler, eta=eta, M=M, T0=T0,
                          seed=seed, device=device)
    return lv, data


# -- digits --------------------------------------------------------------------------------
def load_digits_tensor() -> Tensor:
    """The 1797 scikit-learn 8x8 digits as ``(1797, 64)`` float32 in ``[-1, 1]`` (no download)."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    return torch.from_numpy(x / 8.0 - 1.0)


def _pool(x: Tensor) -> Tensor:
    """2x2 average pooling of ``(n, 64)`` 8x8 images to ``(n, 16)`` 4x4 images."""
    return x.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)


def centre_mask() -> Tensor:
    """The 8x8 centre mask (1 = unknown): the central 4x4 block, ``(64,)``."""
    m = torch.zeros(8, 8)
    m[2:6, 2:6] = 1
    return m.reshape(64)


TASKS = ("denoise", "inpaint", "superres")


class DigitsEps(nn.Module):
    r"""A small conditional noise-prediction MLP for 8x8 digits, one network for three tasks.

    ``forward(x_t, t, y)`` with ``x_t (n, 64)``, ``t (n,)`` and ``y (n, 17)``: the 16 pixels
    of a 4x4 low-resolution image (zeros when unused) and a task code (0 unconditional,
    1 super-resolution, 2 inpainting with the centre mask; ``y=None`` means unconditional).
    Time enters through sinusoidal features of ``t``.
    """

    def __init__(self, hidden: int = 256, layers: int = 3, freqs: int = 16):
        super().__init__()
        self.freqs = freqs
        dims = [64 + 2 * freqs + 16 + 3] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.SiLU()]
        mods.append(nn.Linear(hidden, 64))
        self.net = nn.Sequential(*mods)
        self.register_buffer("w", torch.exp(torch.linspace(0, math.log(200.0), freqs)))

    def config(self) -> dict:
        return {"hidden": self.net[0].out_features, "layers": (len(self.net) - 1) // 2, "freqs": self.freqs}

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        if y is None:
            y = torch.zeros(n, 17, dtype=x.dtype, device=x.device)
        arg = t[:, None] * self.w
        task = torch.nn.functional.one_hot(y[:, 16].long(), 3).to(x.dtype)
        return self.net(torch.cat([x, arg.sin(), arg.cos(), y[:, :16], task], 1))


def _task_batch(x0: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Random task per row: conditioning ``y (n, 17)`` and the per-row diffusion mask ``(n, 64)``."""
    n = x0.shape[0]
    task = torch.randint(0, 3, (n,), device=x0.device)
    y = torch.zeros(n, 17, device=x0.device)
    y[:, 16] = task.float()
    sr = task == 1
    y[sr, :16] = _pool(x0[sr])
    m = torch.ones(n, 64, device=x0.device)
    m[task == 2] = mask.to(x0.device)
    return y, m


def digits_loss(schedule: VPSchedule, t_min: float = 1e-3) -> Callable:
    """The multitask denoising loss ``loss_fn(net, {"x": x0})`` for :func:`telescope.training.train`.

    Each row gets a random task: unconditional (used for denoising), super-resolution
    conditioned on the 2x2 average-pooled image, or inpainting in which the observed pixels
    stay clean and only the centre block is noised and scored.  Uses the global RNG (seeded by
    the training loop).
    """
    mask = centre_mask()

    def loss_fn(net: nn.Module, batch: dict) -> Tensor:
        x0 = batch["x"]
        y, m = _task_batch(x0, mask)
        t = t_min + (1 - t_min) * torch.rand(x0.shape[0], device=x0.device)
        noise = torch.randn_like(x0)
        a = schedule.alpha_bar(t)[:, None]
        xt = m * (a.sqrt() * x0 + (1 - a).sqrt() * noise) + (1 - m) * x0
        return (((net(xt, t, y) - noise) ** 2) * m).sum() / m.sum()

    return loss_fn


def train_digits_model(x: Tensor, *, schedule: VPSchedule, steps: int = 12000, batch: int = 256, lr: float = 2e-3,
                       hidden: int = 256, ema: float = 0.999, seed: int = 0, progress: bool = False,
                       log: Callable[[str], None] | None = None) -> DigitsEps:
    """Train :class:`DigitsEps` on all three tasks at once (:func:`digits_loss`).

    Uses telescope's one training loop (:func:`telescope.training.train`): minibatch Adam for
    about ``steps`` steps (whole epochs), no validation split, an exponential moving average
    of the weights (``ema``) as the final model.
    """
    from .training import train

    torch.manual_seed(seed)
    net = DigitsEps(hidden=hidden)
    per_epoch = math.ceil(x.shape[0] / batch)
    hist = train(net, digits_loss(schedule), {"x": x}, batch_size=batch, lr=lr, max_epochs=max(1, steps // per_epoch),
                 val_fraction=0.0, ema=ema, seed=seed, progress_bar=progress, desc="train digits eps")
    if log is not None:
        log(f"trained {hist['epochs']} epochs ({hist['epochs'] * per_epoch} steps) in {hist['seconds']:.0f}s, "
            f"final loss {hist['train_loss'][-1]:.4f}")
    net.eval()
    return net


def digits_problem(task: str, net: DigitsEps, x_true: Tensor, *, schedule: VPSchedule, sigma_y: float = 0.8,
                   seed: int = 0, M: int = 2, T0: int = 1, sampler: str | None = None,
                   spacing: str = "quadratic", clip_x0=1.0, noise_seed: int = 1234) -> tuple[CoupledDiffusion, dict]:
    r"""The MLMC level sampler for one toy imaging problem on the digit ``x_true (64,)``.

    * ``"denoise"``: :math:`y = x + \sigma_y \eta` with :math:`\sigma_y = 0.8`.  Unconditional
      network; following Section 3.2 the reverse DDPM starts at :math:`x_T = \sqrt{\gamma_T} y`
      at the time where :math:`\gamma_T = \bar\alpha(t) = 1/(1+\sigma_y^2)`, i.e. the noisy
      image *is* a state of the forward process (:math:`\mathbb{M} = 0`); the reverse SDE
      started there samples the posterior :math:`p(x_0 | y)` exactly as steps grow.
    * ``"inpaint"``: the centre 4x4 block is unknown.  A conditional model in which the
      observed pixels stay clean; :math:`x_T = (I-\mathbb{M})y + \mathbb{M}\xi` (binary
      :math:`\mathbb{M}`) and the deterministic DDIM/probability-flow sampler (``eta = 0``)
      pushes the noise on the unknown block to the posterior, observed pixels held fixed —
      the deterministic push-forward of Section 3.3 (I2SB there).  Quantity: the unknown
      pixels only.
    * ``"superres"``: :math:`y` is the 2x2 average-pooled 4x4 image (noiseless).  A
      conditional network :math:`\epsilon(x_t, t, y)` as in SR3 (Section 3.1) with
      :math:`x_T \sim \mathcal{N}(0, I)` (:math:`\mathbb{M} = I`) and DDPM.

    All three use the quadratic time grid (finer near ``t = 0``) and clamp the denoised
    estimate to the pixel range ``[-1, 1]`` at every step (``clip_x0``), which keeps the
    coarse levels usable.

    Returns:
        ``(level sampler, info)`` with the observation and the settings used.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    x_true = x_true.reshape(64).float()

    def eps(x, t, y):
        return net(x, t, y)

    info: dict = {"task": task, "spacing": spacing, "clip_x0": clip_x0}
    kw = {"spacing": spacing, "clip_x0": clip_x0}
    if task == "denoise":
        g = torch.Generator().manual_seed(noise_seed)
        y = x_true + sigma_y * torch.randn(64, generator=g)
        ab_T = 1.0 / (1.0 + sigma_y**2)
        t_T = float(schedule.t_from_alpha_bar(torch.tensor(ab_T, dtype=torch.float64)))
        lv = CoupledDiffusion(eps, schedule=schedule, sampler=sampler or "ddpm", init="observation",
                              x_obs=math.sqrt(ab_T) * y, t_start=t_T, M=M, T0=T0, seed=seed, **kw)
        info.update(y=y.tolist(), sigma_y=sigma_y, t_start=t_T, alpha_bar_start=ab_T, init="observation (M=0)")
    elif task == "inpaint":
        m = centre_mask()
        y = (1 - m) * x_true
        cond = torch.zeros(17)
        cond[16] = 2
        unknown = m.bool()
        lv = CoupledDiffusion(eps, schedule=schedule, sampler=sampler or "ode", init="mask", x_obs=y, mask=m,
                              y=cond, M=M, T0=T0, seed=seed, **kw, quantity=lambda x: x[:, unknown] ** 2)
        info.update(y=y.tolist(), mask=m.tolist(), init="mask (binary M)")
    else:
        y = _pool(x_true[None])[0]
        cond = torch.cat([y, torch.tensor([1.0])])
        lv = CoupledDiffusion(eps, schedule=schedule, sampler=sampler or "ddpm", init="noise", shape=(64,),
                              y=cond, M=M, T0=T0, seed=seed, **kw)
        info.update(y=y.tolist(), init="noise (M=I)")
    info.update(sampler={1.0: "ddpm", 0.0: "ode"}.get(lv.eta, f"ddim(eta={lv.eta})"), eta=lv.eta)
    return lv, info


# -- whole experiments (used by the CLI and the benchmark) ---------------------------------
def _save(result: dict, out_dir, name: str, title: str, log) -> dict:
    import json
    import os

    from .plots.mlmc import plot_mlmc

    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{name}.png")
    plot_mlmc(result, path=png, title=title)
    js = os.path.join(out_dir, f"{name}.json")
    with open(js, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {js} and {png}")
    return {"json": js, "png": png}


def summary(result: dict) -> dict:
    """The headline numbers of an :func:`telescope.mlmc.mlmc_test` result."""
    conv, comp = result["convergence"], result["complexity"]
    return {
        "alpha": conv["alpha"], "beta": conv["beta"], "gamma": conv["gamma"],
        "start_level": conv["start_level"], "fit_levels": conv["fit_levels"],
        "eps": comp["eps"], "savings": comp["savings"], "mlmc_cost": comp["mlmc_cost"],
        "std_cost": comp["std_cost"], "N": comp["N"], "levels": comp["levels"], "rmse_est": comp["rmse"],
    }


def run_gaussian(out_dir: str | None = None, *, d: int = 4, sampler: str = "ddpm", eta: float | None = None,
                 n: int = 20000, L: int = 8, eps=(0.02, 0.01, 0.005, 0.0025), M: int = 2,
                 start_level="auto", spacing: str = "quadratic", seed: int = 0, progress: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """The exact-Gaussian MLMC test: measured vs exact rates, estimate error vs truth.

    Returns a JSON-able dict with ``convergence``, ``complexity``, ``exact`` (per-level exact
    values and rates on the fitted levels) and ``error`` (RMS error of each MLMC estimate
    against the exact second moment of the data and against the sampler's exact limit).
    """
    from .mlmc.driver import fit_rate, mlmc_test

    data = GaussianData(torch.linspace(-1.0, 1.0, d) if d > 1 else torch.tensor([1.0]), 0.5, VPSchedule())
    lv = CoupledDiffusion(data.eps, shape=(d,), schedule=data.schedule, sampler=sampler, eta=eta, M=M,
                          spacing=spacing, seed=seed)
    t0 = time.time()
    res = mlmc_test(lv, n=n, L=L, eps=eps, M=M, start_level=start_level, progress=progress, estimates=True)
    conv = res["convergence"]
    ex = data.exact_levels(range(L + 1), sampler=sampler, eta=eta, M=M, spacing=spacing)
    fit = conv["fit_levels"]
    res["exact"] = {"mean": ex["mean"], "var": ex["var"], "var_fine": ex["var_fine"],
                    "alpha": fit_rate(fit, [ex["mean"][i] for i in fit], M),
                    "beta": fit_rate(fit, [ex["var"][i] for i in fit], M)}
    truth = data.second_moment().numpy()
    limit = np.asarray(data.exact_levels([14], sampler=sampler, eta=eta, M=M, spacing=spacing)["mean_fine"][0])
    est = np.asarray(res["complexity"].pop("estimates"))
    res["truth"] = truth.tolist()
    res["limit"] = limit.tolist()
    res["error"] = {"vs_truth": np.sqrt(((est - truth) ** 2).mean(1)).tolist(),
                    "vs_limit": np.sqrt(((est - limit) ** 2).mean(1)).tolist(),
                    "note": "rms over components; truth = mu^2 + s^2 of the data, limit = the sampler's exact "
                            "value with 2^14 steps (differs from the truth by the finite-time error)"}
    res["seconds"] = time.time() - t0
    res["settings"] = {"experiment": "gaussian", "d": d, "s": 0.5, "sampler": sampler, "eta": lv.eta, "n": n, "L": L,
                       "M": M, "spacing": spacing, "seed": seed, "schedule": data.schedule.to_dict()}
    if out_dir is not None:
        res["files"] = _save(res, out_dir, f"gaussian_{sampler}", f"exact Gaussian, {sampler}", log)
    return res


def load_or_train_digits(model: str | None = None, *, schedule: VPSchedule, steps: int = 12000, seed: int = 0,
                         n_train: int = 1600, progress: bool = False,
                         log: Callable[[str], None] = print) -> tuple[DigitsEps, dict]:
    """Load a saved digits model (state dict + JSON-able config) from ``model``, or train and save it.

    The first ``n_train`` digits train the model; later ones are held out as test images.
    """
    import os

    if model is not None and os.path.exists(model):
        blob = torch.load(model, map_location="cpu", weights_only=True)
        cfg = blob["config"]
        if cfg.get("schedule") != schedule.to_dict():
            raise ValueError(f"model {model} was trained with schedule {cfg.get('schedule')}, "
                             f"not {schedule.to_dict()}; retrain it (delete the file)")
        net = DigitsEps(**cfg["net"])
        net.load_state_dict(blob["state_dict"])
        net.eval()
        log(f"loaded digits model from {model}")
        return net, cfg
    x = load_digits_tensor()
    t0 = time.time()
    net = train_digits_model(x[:n_train], schedule=schedule, steps=steps, seed=seed, progress=progress, log=log)
    cfg = {"net": net.config(), "schedule": schedule.to_dict(), "steps": steps, "seed": seed,
           "n_train": n_train, "train_seconds": time.time() - t0}
    if model is not None:
        os.makedirs(os.path.dirname(os.path.abspath(model)), exist_ok=True)
        torch.save({"state_dict": net.state_dict(), "config": cfg}, model)
        log(f"saved digits model to {model}")
    return net, cfg


def plot_digits_samples(net: DigitsEps, x_true: Tensor, path: str, *, schedule: VPSchedule, level: int = 8,
                        n: int = 6, seed: int = 0, tasks=TASKS) -> None:
    """Truth, observation and ``n`` posterior samples (``2**level`` steps) per task, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), n + 2, figsize=(1.3 * (n + 2), 1.4 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        lv, info = digits_problem(task, net, x_true, schedule=schedule, seed=seed)
        xs, _ = lv.paths(level, n, coarse=False)
        y = torch.tensor(info["y"])
        if task == "superres":
            y = y.reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
        elif task == "inpaint":
            y = y.reshape(8, 8).clone()
            y[centre_mask().reshape(8, 8).bool()] = float("nan")
        imgs = [x_true.reshape(8, 8), y.reshape(8, 8)] + [xs[i].reshape(8, 8) for i in range(n)]
        for c, im in enumerate(imgs):
            ax = axes[r][c]
            ax.imshow(im.numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(task, fontsize=8)
    axes[0][0].set_title("truth", fontsize=8)
    axes[0][1].set_title("observation", fontsize=8)
    axes[0][2].set_title(f"posterior samples ({2**level} steps)", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_digits(out_dir: str | None = None, *, tasks=TASKS, model: str | None = None, train_steps: int = 12000,
               n: int = 1000, L: int = 9, eps=(0.008, 0.004, 0.002, 0.001), M: int = 2, start_level="auto",
               image: int = 1700, sampler: str | None = None, seed: int = 0, progress: bool = False,
               log: Callable[[str], None] = print) -> dict:
    """Experiment (a): toy Bayesian imaging on 8x8 digits, MLMC vs MC for the pixel-wise second moment.

    Trains (or loads) one conditional noise-prediction network, then for each task of
    :func:`digits_problem` runs the convergence test (``n`` samples on levels ``0..L``) and the
    complexity test for ``eps`` (rms error per pixel of :math:`E[x^2 | y]`, pixels in
    ``[-1, 1]``).  Returns ``{task: result}`` plus ``"model"`` (its config).
    """
    from .mlmc.driver import mlmc_test

    schedule = VPSchedule()
    net, cfg = load_or_train_digits(model, schedule=schedule, steps=train_steps, seed=seed, progress=progress,
                                    log=log)
    x_true = load_digits_tensor()[image]
    out: dict = {"model": cfg, "image": image}
    if out_dir is not None:
        import os

        os.makedirs(out_dir, exist_ok=True)
        out["samples_png"] = os.path.join(out_dir, "digits_samples.png")
        plot_digits_samples(net, x_true, out["samples_png"], schedule=schedule, tasks=tasks, seed=seed)
    for task in tasks:
        t0 = time.time()
        lv, info = digits_problem(task, net, x_true, schedule=schedule, seed=seed, M=M, sampler=sampler)
        res = mlmc_test(lv, n=n, L=L, eps=eps, M=M, start_level=start_level, progress=progress)
        res["problem"] = info
        res["seconds"] = time.time() - t0
        s = summary(res)
        log(f"{task}: alpha={s['alpha']:.2f} beta={s['beta']:.2f} gamma={s['gamma']:.2f} "
            f"l0={s['start_level']} savings={[round(v, 1) for v in s['savings']]} ({res['seconds']:.0f}s)")
        if out_dir is not None:
            res["files"] = _save(res, out_dir, f"digits_{task}", f"8x8 digits, {task} ({info['sampler']})", log)
        out[task] = res
    return out
