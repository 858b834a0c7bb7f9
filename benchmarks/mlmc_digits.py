"""Experiment (a) of Haji-Ali et al. (2025) at toy scale: MLMC for diffusion posteriors on 8x8 digits.

Trains one small conditional noise-prediction MLP on scikit-learn's bundled 8x8 digits
(1600 training images, pixels scaled to [-1, 1]; telescope's training loop, ~12000 Adam steps
with an EMA of the weights) and runs, on a held-out digit, three posterior problems with the
three start-state cases of Section 2.2:

* denoising, sigma_y = 0.8: unconditional network, DDPM started at the noisy image rescaled to
  the matching noise level (M = 0, Section 3.2);
* inpainting of the centre 4x4 block: network conditioned on the observed pixels (held fixed),
  deterministic DDIM / probability-flow ODE from noise on the block (binary M, Section 3.3);
* super-resolution 4x4 -> 8x8: network conditioned on the low-resolution image, DDPM from
  N(0, I) (M = I, Section 3.1).

For each: Giles' convergence test (1000 coupled samples on levels 0..9, level l = 2^l steps)
and the complexity test for eps in {0.008, 0.004, 0.002, 0.001} (rms error per pixel of the
posterior second moment E[x^2 | y]), with the eq.-(19) starting level.  Costs are network
evaluations; the standard-MC cost is V[P_L] C_L / (eps^2 / 2) on the finest level L that MLMC
used.  Prints JSON (alpha, beta, gamma, savings per eps, N_l) and writes the Figure-3 panels.

Reduced sizes (vs the paper's 128x128 / CIFAR / ImageNet models, 10^3-10^4 samples per level,
eps ~ 1e-3): 8x8 images, a 3x256 MLP, 1000 samples per level.  About 7 minutes on one idle
CPU core (13 minutes measured on a heavily shared 2-core machine, training 290 s of it); pass
--model to reuse a trained network.

    python benchmarks/mlmc_digits.py [--out runs/mlmc_digits] [--model runs/mlmc_digits/model.pt]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from telescope.diffusion import VPSchedule
from telescope.mlmc.coupled import CoupledDiffusion
from telescope.mlmc.driver import mlmc_test
from telescope.mlmc.report import save_result, summary
from telescope.training import train

__all__ = ["DigitsEps", "digits_loss", "train_digits_model", "digits_problem", "load_digits_tensor",
           "load_or_train_digits", "plot_digits_samples", "run_digits", "TASKS"]


# -- the problem: the 8x8 digits bundled with scikit-learn, scaled to [-1, 1], a small conditional
# noise-prediction MLP, and the three imaging problems of Section 3 at toy scale (see digits_problem)
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


def load_or_train_digits(model: str | None = None, *, schedule: VPSchedule, steps: int = 12000, seed: int = 0,
                         n_train: int = 1600, progress: bool = False,
                         log: Callable[[str], None] = print) -> tuple[DigitsEps, dict]:
    """Load a saved digits model (state dict + JSON-able config) from ``model``, or train and save it.

    The first ``n_train`` digits train the model; later ones are held out as test images.
    """
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
    schedule = VPSchedule()
    net, cfg = load_or_train_digits(model, schedule=schedule, steps=train_steps, seed=seed, progress=progress,
                                    log=log)
    x_true = load_digits_tensor()[image]
    out: dict = {"model": cfg, "image": image}
    if out_dir is not None:
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
            res["files"] = save_result(res, out_dir, f"digits_{task}", f"8x8 digits, {task} ({info['sampler']})", log)
        out[task] = res
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/mlmc_digits", help="output folder for JSON and PNG files")
    p.add_argument("--model", default=None, help="model file to load (or to save after training)")
    p.add_argument("--train-steps", type=int, default=12000)
    p.add_argument("--n", type=int, default=1000, help="samples per level in the convergence test")
    p.add_argument("-L", type=int, default=9, help="finest level of the convergence test")
    p.add_argument("--eps", type=float, nargs="+", default=[0.008, 0.004, 0.002, 0.001])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = run_digits(args.out, tasks=args.tasks, model=args.model, train_steps=args.train_steps, n=args.n, L=args.L,
                     eps=tuple(args.eps), seed=args.seed, log=log)
    out = {"benchmark": "mlmc_digits", "seconds": time.time() - t0, "model": res["model"], "tasks": {}}
    for t in args.tasks:
        s = summary(res[t])
        out["tasks"][t] = {**s, "problem": {k: v for k, v in res[t]["problem"].items() if k not in ("y", "mask")},
                           "savings_at_smallest_eps": s["savings"][-1], "files": res[t].get("files")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
