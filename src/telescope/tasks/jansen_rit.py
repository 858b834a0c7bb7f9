"""Jansen–Rit: a stochastic neural mass model of EEG (no reference posterior).

The model of paper 3 (diffusion-posterior-sampling-tall-data.md, Section 4.3), which follows
Rodrigues et al. (2021, HNPE) and the stochastic Jansen–Rit neural mass model of Ableidinger,
Buckwar & Hinterleitner (2017).  Three populations (pyramidal cells, excitatory and inhibitory
interneurons) with post-synaptic potentials ``x_0, x_1, x_2`` and their derivatives
``x_3, x_4, x_5``:

.. math::
    dx_i = x_{i+3}\\, dt, \\quad i = 0, 1, 2,

    dx_3 = [A a\\, S(x_1 - x_2) - 2 a x_3 - a^2 x_0]\\, dt + \\sigma_3\\, dW_3,

    dx_4 = [A a\\, (\\mu + C_2 S(C_1 x_0)) - 2 a x_4 - a^2 x_1]\\, dt + \\sigma\\, dW_4,

    dx_5 = [B b\\, C_4 S(C_3 x_0) - 2 b x_5 - b^2 x_2]\\, dt + \\sigma_5\\, dW_5,

with the sigmoid ``S(v) = v_max / (1 + exp(r (v_0 - v)))``, the standard constants ``A = 3.25``,
``B = 22``, ``a = 100``, ``b = 50``, ``v_max = 5``, ``v_0 = 6``, ``r = 0.56``, the connectivities
``C_1 = C``, ``C_2 = 0.8 C``, ``C_3 = C_4 = 0.25 C`` and small noise ``sigma_3 = sigma_5 = 10`` on the
other two populations.  The observed signal is ``x(t) = 10^{g/10} (x_1(t) - x_2(t))``.

Parameters ``theta = (C, mu, sigma, g)`` with the uniform prior of Rodrigues et al. (2021):
``C ~ U(10, 250)``, ``mu ~ U(50, 500)``, ``sigma ~ U(100, 5000)``, ``g ~ U(-20, 20)``; with
``fix_gain=True`` the gain is fixed to ``g = 0`` (the 3-parameter setting of the paper's Fig. 4).
The paper's true parameters are :data:`PAPER_THETA` ``= (125, 220, 2000, 0)``.

**Integrator.**  Strang splitting (in the spirit of Buckwar et al., 2019): each oscillator
``(x_i, x_{i+3})`` has the linear part ``dX = M X dt + Sigma dW``, ``M = [[0, 1], [-k^2, -2k]]``,
which is solved *exactly* over a step ``h`` (the critically damped flow
``e^{hM} = e^{-kh} [[1 + kh, h], [-k^2 h, 1 - kh]]`` plus a Gaussian increment with the exact
covariance ``sigma^2 int_0^h e^{sM} e_2 e_2^T e^{sM}^T ds``), and the nonlinear forcing only kicks
the velocities (it depends on positions only, so that sub-flow is exact too):
half a kick, the exact linear step, half a kick.  The stiff linear part (rates up to
``2a = 200 s^-1``) never limits the step; ``h = 1/1024 s`` by default.  All parameters of a batch
are integrated together (no per-sample loop).  The first ``burn_in`` seconds are discarded and
the signal is sampled at 128 Hz for ``duration`` seconds (default 8 s: 1024 values).

**Data.**  ``summary=True`` (default): the log10 power spectral density of ``x`` by Welch's method
(Hann windows of 64 samples, 50% overlap; 33 frequencies from 0 to 64 Hz) — the gain shifts it by
``g / 5``.  ``summary=False``: the raw series (``128 * duration`` values).  The task offers
summary statistics as an option and an embedding network for the raw series:
:meth:`JansenRit.embedding` gives a :class:`telescope.nn.SeriesEmbedding` (1-D convolutions, then
mean and standard-deviation pools over time) to pass as ``NPE(prior, embedding=...)``.

**No reference posterior** (``reference_kind = None``): the likelihood is intractable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import SeriesEmbedding
from ..priors import BoxUniform
from ..simulation.simulators import Simulator
from . import register
from .base import Task

__all__ = ["JansenRit", "PAPER_THETA", "welch_log_psd"]

PAPER_THETA = (125.0, 220.0, 2000.0, 0.0)
_A, _B, _a, _b = 3.25, 22.0, 100.0, 50.0
_VMAX, _V0, _R = 5.0, 6.0, 0.56
_SIGMA_3 = _SIGMA_5 = 10.0
_FS = 128.0
_NPERSEG = 64


def _sigm(v: Tensor) -> Tensor:
    return _VMAX / (1 + torch.exp(_R * (_V0 - v)))


def _flow(k: float, h: float) -> Tensor:
    """``e^{hM}`` ``(2, 2)`` of the critically damped oscillator with rate ``k``."""
    e = math.exp(-k * h)
    return torch.tensor([[e * (1 + k * h), e * h], [-e * k * k * h, e * (1 - k * h)]], dtype=torch.float64)


def _noise_chol(k: float, h: float, points: int = 20_001) -> Tensor:
    """Cholesky factor of ``int_0^h v(s) v(s)^T ds`` with ``v(s) = e^{-ks} (s, 1 - ks)`` (unit noise)."""
    s = torch.linspace(0.0, h, points, dtype=torch.float64)
    v = torch.stack([s, 1 - k * s], -1) * torch.exp(-k * s)[:, None]
    outer = v[:, :, None] * v[:, None, :]
    w = torch.ones(points, dtype=torch.float64)  # Simpson weights
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    q = (w[:, None, None] * outer).sum(0) * (h / (points - 1)) / 3
    return torch.linalg.cholesky(q)


def welch_log_psd(x: Tensor, fs: float = _FS, nperseg: int = _NPERSEG) -> Tensor:
    """``log10`` Welch power spectral density ``(n, nperseg // 2 + 1)`` of series ``x (n, T)``.

    Hann windows of ``nperseg`` samples with 50% overlap, mean removed per segment, one-sided
    density scaling (as ``scipy.signal.welch`` with its defaults).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    seg = x.unfold(-1, nperseg, nperseg // 2)  # (n, segments, nperseg)
    seg = seg - seg.mean(-1, keepdim=True)
    win = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(nperseg, dtype=torch.float64) / nperseg)
    spec = torch.fft.rfft(seg * win, dim=-1).abs() ** 2 / (fs * (win**2).sum())
    spec[..., 1:-1] *= 2  # one-sided (nperseg even: the Nyquist bin is not doubled)
    return torch.log10(spec.mean(-2).clamp_min(1e-30))


@register("jansen_rit")
class JansenRit(Task):
    """Stochastic Jansen–Rit neural mass model; ``theta = (C, mu, sigma, g)`` (or ``(C, mu, sigma)``).

    Arguments:
        summary: log-PSD summaries (33 numbers) instead of the raw series.
        fix_gain: fix ``g = 0`` and infer ``(C, mu, sigma)`` only.
        duration: seconds of signal kept (sampled at 128 Hz).
        burn_in: seconds simulated and discarded first (from the resting state ``x = 0``).
        dt: integration step in seconds (a divisor of 1/128 s).

    Example:
        >>> task = JansenRit(duration=1.0, burn_in=0.25)
        >>> task.simulator(task.prior.sample((2,)), seed=0).shape
        torch.Size([2, 33])
    """

    reference_kind = None

    def __init__(self, summary: bool = True, fix_gain: bool = False, duration: float = 8.0,
                 burn_in: float = 2.0, dt: float = 1 / 1024):
        if not duration > 0 or not burn_in >= 0:
            raise ValueError(f"duration must be > 0 and burn_in >= 0, got {duration!r} and {burn_in!r}")
        sub = round(1 / (_FS * dt))
        if sub < 1 or abs(sub * dt * _FS - 1) > 1e-9:
            raise ValueError(f"dt must divide the 1/128 s sampling interval, got {dt!r}")
        self.summary, self.fix_gain = bool(summary), bool(fix_gain)
        self.duration, self.burn_in, self.dt, self.substeps = float(duration), float(burn_in), float(dt), sub
        self.n_samples = int(round(duration * _FS))
        if self.summary and self.n_samples < _NPERSEG:
            raise ValueError(f"duration must give at least {_NPERSEG} samples at 128 Hz for the PSD, got {duration!r}")
        self.dim_theta = 3 if self.fix_gain else 4
        self.dim_x = _NPERSEG // 2 + 1 if self.summary else self.n_samples
        low, high = [10.0, 50.0, 100.0, -20.0], [250.0, 500.0, 5000.0, 20.0]
        self.prior = BoxUniform(low[: self.dim_theta], high[: self.dim_theta])
        self.simulator = Simulator(self._simulate, name="jansen_rit",
                                   config={"summary": self.summary, "fix_gain": self.fix_gain,
                                           "duration": self.duration, "burn_in": self.burn_in, "dt": self.dt})
        h = self.dt
        self._flow_a, self._flow_b = _flow(_a, h), _flow(_b, h)
        self._chol_a, self._chol_b = _noise_chol(_a, h), _noise_chol(_b, h)

    def signal(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The raw series ``x(t)`` ``(n, 128 * duration)`` (float64) for ``theta (n, dim_theta)``."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        n = theta.shape[0]
        C, mu, sig = theta[:, 0], theta[:, 1], theta[:, 2]
        gain = torch.zeros(n, dtype=torch.float64) if self.fix_gain else theta[:, 3]
        c1, c2, c3, c4 = C, 0.8 * C, 0.25 * C, 0.25 * C
        pos = torch.zeros(n, 3, dtype=torch.float64)  # x0, x1, x2
        vel = torch.zeros(n, 3, dtype=torch.float64)  # x3, x4, x5
        fa, fb, la, lb = self._flow_a, self._flow_b, self._chol_a, self._chol_b
        flow = torch.stack([fa, fa, fb])  # (3, 2, 2)
        chol = torch.stack([la, la, lb])
        scale = torch.stack([torch.full_like(sig, _SIGMA_3), sig, torch.full_like(sig, _SIGMA_5)], -1)  # (n, 3)
        h = self.dt
        burn = int(round(self.burn_in * _FS)) * self.substeps
        total = burn + self.n_samples * self.substeps
        out = torch.empty(n, self.n_samples, dtype=torch.float64)

        def kick(p: Tensor, tau: float) -> Tensor:
            f3 = _A * _a * _sigm(p[:, 1] - p[:, 2])
            f4 = _A * _a * (mu + c2 * _sigm(c1 * p[:, 0]))
            f5 = _B * _b * c4 * _sigm(c3 * p[:, 0])
            return tau * torch.stack([f3, f4, f5], -1)

        for step in range(total):
            vel = vel + kick(pos, 0.5 * h)
            xi = torch.randn(n, 3, 2, generator=generator, dtype=torch.float64)
            noise = torch.einsum("kij,nkj->nki", chol, xi) * scale[..., None]  # (n, 3, 2)
            new_pos = flow[:, 0, 0] * pos + flow[:, 0, 1] * vel + noise[..., 0]
            vel = flow[:, 1, 0] * pos + flow[:, 1, 1] * vel + noise[..., 1]
            pos = new_pos
            vel = vel + kick(pos, 0.5 * h)
            k = step + 1 - burn
            if k > 0 and k % self.substeps == 0:
                out[:, k // self.substeps - 1] = pos[:, 1] - pos[:, 2]
        return out * 10 ** (gain[:, None] / 10)

    def _simulate(self, theta: Tensor) -> Tensor:
        x = self.signal(theta)
        return (welch_log_psd(x) if self.summary else x).to(theta.dtype)

    def embedding(self, out: int = 16) -> nn.Module:
        """A fresh :class:`telescope.nn.SeriesEmbedding` ``(n, 128 * duration) -> (n, out)`` for the raw series.

        Pass it to an estimator, e.g. ``NPE(task.prior, embedding=task.embedding())``; it is trained
        with the estimator.  Only for ``summary=False``: raises a ValueError otherwise.
        """
        if self.summary:
            raise ValueError("the 33 log-PSD summaries (summary=True) need no embedding network; use "
                             "JansenRit(summary=False) for the raw series and its embedding")
        return SeriesEmbedding(out=out)

    def cache_key(self) -> str:
        return f"{self.name}_{'summary' if self.summary else 'raw'}{'_g0' if self.fix_gain else ''}"
