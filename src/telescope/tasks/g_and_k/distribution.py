r"""The g-and-k quantile function, its derivative and its numerically exact density.

See :mod:`telescope.tasks.g_and_k` for the model, the simulator and the root-finding behind
:func:`gk_log_density`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["C", "gk_quantile", "gk_quantile_derivative", "gk_log_density", "standard_normal_quantile"]

C = 0.8  # the conventional value of the g-and-k constant c
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _split(theta: Tensor, z: Tensor):
    """Columns of ``theta (..., 4)`` shaped to broadcast against ``z (..., k)``."""
    a, b, g, t4 = (theta[..., j : j + 1] for j in range(4))
    k = torch.log(t4.clamp_min(torch.finfo(theta.dtype).tiny))
    return a, b, g, k


def standard_normal_quantile(u: Tensor) -> Tensor:
    """``Phi^{-1}(u) = sqrt(2) erfinv(2u - 1)`` in float64, ``u`` clamped into ``(0, 1)``."""
    u = u.double()
    eps = torch.finfo(torch.float64).tiny
    return torch.special.ndtri(u.clamp(eps, 1 - 2**-53))


def gk_quantile(theta: Tensor, z: Tensor, c: float = C) -> Tensor:
    """The g-and-k quantile function ``G_theta(z)``.

    Arguments:
        theta: ``(*, 4)`` parameters ``(A, B, g, k_4)``.
        z: ``(*, k)`` standard-normal quantiles (``theta`` broadcasts along the last axis).
        c: the skewness constant (0.8).

    Returns:
        ``(*, k)`` values ``G_theta(z)``.

    Example:
        >>> theta = torch.tensor([[3.0, 1.0, 2.0, 1.0]])  # k_4 = 1: (1 + z^2)^0 = 1
        >>> gk_quantile(theta, torch.zeros(1, 1))
        tensor([[3.]])
    """
    a, b, g, k = _split(theta, z)
    return a + b * (1 + c * torch.tanh(0.5 * g * z)) * torch.exp(k * torch.log1p(z * z)) * z


def gk_quantile_derivative(theta: Tensor, z: Tensor, c: float = C) -> Tensor:
    """``dG_theta / dz`` with the same shapes as :func:`gk_quantile`."""
    return _value_and_derivative(theta, z, c)[1]


def _value_and_derivative(theta: Tensor, z: Tensor, c: float = C) -> tuple[Tensor, Tensor]:
    a, b, g, k = _split(theta, z)
    th = torch.tanh(0.5 * g * z)
    lz = torch.log1p(z * z)
    pw = torch.exp(k * lz)  # (1 + z^2)^k
    h = pw * z
    dh = pw / (1 + z * z) * (1 + (1 + 2 * k) * z * z)
    return a + b * (1 + c * th) * h, b * (0.5 * c * g * (1 - th * th) * h + (1 + c * th) * dh)


def _grid(points: int, zmax: float) -> Tensor:
    s = torch.linspace(-math.asinh(zmax), math.asinh(zmax), points, dtype=torch.float64)
    return torch.sinh(s)


def _refine_extrema(theta: Tensor, lo: Tensor, hi: Tensor, steps: int = 24) -> Tensor:
    """Zeros of ``G'_theta`` bracketed by ``[lo, hi]`` (rows of ``theta`` paired with brackets), by bisection."""
    s_lo = torch.sign(gk_quantile_derivative(theta, lo))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        same = torch.sign(gk_quantile_derivative(theta, mid)) == s_lo
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return 0.5 * (lo + hi)


def _brackets(theta: Tensor, x: Tensor, grid: Tensor) -> tuple[Tensor, ...]:
    """All cells ``[z_lo, z_hi]`` where ``G_theta - x`` changes sign.

    Returns ``(row, col, z_lo, z_hi, g_lo, g_hi)``: the row of ``theta``, the index of ``x``, the
    cell ends and ``G_theta`` there.  Rows whose grid values increase use a binary search.  In the
    other rows each interior grid point next to a turning point of ``G_theta`` is moved onto the
    turning point (refined by bisection on ``G'``), so that the two roots close to a turning point
    fall in different cells, and every sign change is found by a dense scan.
    """
    m, n, k = theta.shape[0], x.shape[-1], grid.shape[0]
    x = x.expand(m, n)
    a, b, g, kk = _split(theta, grid)
    lz = torch.log1p(grid * grid)
    gv = a + b * (1 + C * torch.tanh(0.5 * g * grid)) * torch.exp(kk * lz) * grid  # (m, K)
    gv = torch.where(torch.isnan(gv), torch.full_like(gv, float("inf")), gv)
    diffs = gv[:, 1:] - gv[:, :-1]
    mono = (diffs > 0).all(-1)
    parts = []
    if mono.any():
        im = mono.nonzero().squeeze(-1)
        gm = gv[im].contiguous()
        pos = torch.searchsorted(gm, x[im].contiguous())  # first index with G >= x
        r, j = ((pos > 0) & (pos < k)).nonzero(as_tuple=True)
        c = pos[r, j] - 1
        parts.append((im[r], j, grid[c], grid[c + 1], gm[r, c], gm[r, c + 1]))
    if (~mono).any():
        iw = (~mono).nonzero().squeeze(-1)
        gw, tw = gv[iw], theta[iw]
        dw = diffs[~mono]
        zw = grid.expand(iw.shape[0], -1).clone()
        r, c = ((torch.sign(dw[:, 1:]) * torch.sign(dw[:, :-1])) < 0).nonzero(as_tuple=True)
        c = c + 1  # grid point at the turn
        if r.numel():
            te = tw[r]
            ze = _refine_extrema(te, grid[c - 1, None], grid[c + 1, None])
            zw[r, c] = ze[:, 0]
            zw = torch.cummax(zw, -1).values  # keep the rows sorted if two turns share a cell
            gw[r, c] = gk_quantile(te, zw[r, c, None])[:, 0]
        above = gw.unsqueeze(1) >= x[iw].unsqueeze(-1)  # (m', n, K)
        r, j, c = (above[..., 1:] != above[..., :-1]).nonzero(as_tuple=True)
        parts.append((iw[r], j, zw[r, c], zw[r, c + 1], gw[r, c], gw[r, c + 1]))
    return tuple(torch.cat(p) for p in zip(*parts))


def gk_log_density(theta: Tensor, x: Tensor, *, zmax: float = 10.0, points: int = 201,
                   newton_steps: int = 20, chunk: int = 4096) -> Tensor:
    """Log density ``log p(x_j | theta_i)`` of the g-and-k distribution for every pair.

    Arguments:
        theta: ``(m, 4)`` parameters.
        x: ``(n,)`` points shared by every row of ``theta``, or ``(m, n)`` points, one row per ``theta``.
        zmax: roots are searched for in ``[-zmax, zmax]``.
        points: grid size used to bracket the roots (turning points are refined separately).
        newton_steps: safeguarded Newton iterations in each bracket.

    Returns:
        ``(m, n)`` log densities ``log p(x_j | theta_i)`` (or ``log p(x_ij | theta_i)``), float64,
        ``-inf`` where ``x`` is outside the support.

    Example:
        >>> theta = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # A=0, B=1, g=0, k=0: standard normal
        >>> float(gk_log_density(theta, torch.tensor([0.0]))[0, 0])  # log phi(0)
        -0.9189385332046727
    """
    theta = torch.as_tensor(theta).double()
    x = torch.as_tensor(x).double()
    if theta.dim() != 2 or theta.shape[-1] != 4:
        raise ValueError(f"theta must have shape (m, 4), got {tuple(theta.shape)}")
    if x.dim() not in (1, 2) or x.dim() == 2 and x.shape[0] not in (1, theta.shape[0]):
        raise ValueError(f"x must have shape (n,) or ({theta.shape[0]}, n), got {tuple(x.shape)}")
    x = x.reshape(-1, x.shape[-1])
    if theta.shape[0] > chunk:
        xs = x.split(chunk) if x.shape[0] > 1 else [x] * -(-theta.shape[0] // chunk)
        return torch.cat([gk_log_density(t, xc, zmax=zmax, points=points, newton_steps=newton_steps, chunk=chunk)
                          for t, xc in zip(theta.split(chunk), xs)])
    m, n = theta.shape[0], x.shape[-1]
    out = torch.zeros(m, n, dtype=torch.float64)
    if m == 0 or n == 0:
        return out
    rows, cols, lo, hi, g_lo, g_hi = _brackets(theta, x, _grid(points, zmax))
    if rows.numel():
        th, xv = theta[rows], x.expand(m, n)[rows, cols].unsqueeze(-1)
        lo, hi = lo.unsqueeze(-1), hi.unsqueeze(-1)
        f_lo, f_hi = g_lo.unsqueeze(-1) - xv, g_hi.unsqueeze(-1) - xv
        denom = f_hi - f_lo
        t = torch.where(denom != 0, -f_lo / denom, torch.full_like(denom, 0.5)).clamp(0, 1)
        z = lo + t * (hi - lo)
        lo_sign = torch.sign(f_lo)
        # safeguarded Newton on the still-moving roots only
        act = torch.arange(z.shape[0])
        for _ in range(newton_steps):
            za, la, ha, ta, xa = z[act], lo[act], hi[act], th[act], xv[act]
            f, d = _value_and_derivative(ta, za)
            f = f - xa
            same = torch.sign(f) == lo_sign[act]  # the root lies above z
            la, ha = torch.where(same, za, la), torch.where(same, ha, za)
            step = za - f / d
            inside = (step >= la) & (step <= ha) & torch.isfinite(step)
            zn = torch.where(inside, step, 0.5 * (la + ha))
            zn = torch.where(f == 0, za, zn)
            z[act], lo[act], hi[act] = zn, la, ha
            going = ((zn - za).abs() > 1e-12 * (1 + za.abs())).squeeze(-1) & (f != 0).squeeze(-1)
            act = act[going]
            if act.numel() == 0:
                break
        d = _value_and_derivative(th, z)[1].abs().squeeze(-1)
        z = z.squeeze(-1)
        dens = torch.exp(-0.5 * z * z - _LOG_SQRT_2PI) / d
        dens = torch.where(torch.isfinite(dens), dens, torch.zeros_like(dens))
        out.index_put_((rows, cols), dens, accumulate=True)
    return torch.log(out)
