"""The classifier two-sample test (C2ST) of the SBI benchmark.

An MLP with two hidden layers of ``10 d`` ReLU units is trained to tell ``p`` from ``q``; the score is its
``n_folds``-fold cross-validated accuracy: 0.5 means indistinguishable, 1.0 means disjoint.

References:
    Lopez-Paz and Oquab (2017), "Revisiting classifier two-sample tests", arXiv:1610.06545.
    Lueckmann et al. (2021), "Benchmarking simulation-based inference", arXiv:2101.04653.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils import check_count
from ._checks import _pair, _subsample

__all__ = ["c2st"]


def c2st(p: Any, q: Any, *, seed: int = 0, n_folds: int = 5, max_samples: int | None = None,
         z_score: bool = True, n_jobs: int = 1, backend: str = "torch") -> float:
    """Classifier two-sample test accuracy (SBI-benchmark protocol).

    Arguments:
        p: ``(n, d)`` samples, e.g. from the approximate posterior.
        q: ``(m, d)`` samples, e.g. from the reference posterior.
        seed: seeds the subsampling, the fold split and the classifier initialisation.
        n_folds: folds of the stratified cross-validation.
        max_samples: if given, each sample is randomly reduced to at most this many rows.
        z_score: standardise both samples with the mean and standard deviation of ``p``
            (the first sample), as in the benchmark.
        n_jobs: ``backend="sklearn"`` only: folds fitted in parallel processes (same result, less wall time).
        backend: ``"torch"`` (default) trains the ``n_folds`` classifiers together, as one batch of
            matrix products in float32 (:func:`_fit_fold_mlps`); ``"sklearn"`` fits scikit-learn's
            ``MLPClassifier`` once per fold, as the benchmark's code does.  Both follow the same recipe
            (architecture, initialisation, Adam with learning rate 1e-3, L2 penalty 1e-4, minibatches of
            200, stop when the training loss has not improved by 1e-4 for 10 epochs) and the same folds;
            they differ only in random numbers.  The torch backend is about twice as fast and agrees with
            scikit-learn's to within noise (``benchmarks/c2st_speed.py``; measured in
            ``benchmarks/README_bench.md``); it uses torch's threads.

    Returns:
        Mean held-out accuracy in ``[0, 1]``; about 0.5 when ``p`` and ``q`` agree.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 5
        >>> c2st(a, b) > 0.95
        True
    """
    from sklearn.model_selection import StratifiedKFold

    if backend not in ("torch", "sklearn"):
        raise ValueError(f"backend must be 'torch' or 'sklearn', got {backend!r}")
    n_folds = check_count("n_folds", n_folds, 2)
    n_jobs = check_count("n_jobs", n_jobs)
    if max_samples is not None:
        max_samples = check_count("max_samples", max_samples, n_folds)
    p, q = _pair(p, q)
    g = torch.Generator().manual_seed(int(seed))
    p, q = _subsample(p, max_samples, g), _subsample(q, max_samples, g)
    for name, t in (("p", p), ("q", q)):
        if t.shape[0] < n_folds:
            raise ValueError(f"{name} has {t.shape[0]} samples, fewer than n_folds = {n_folds}; "
                             "expected at least one sample of each class per fold")
    if z_score:
        mean = p.mean(0)
        std = p.std(0) if p.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > 0, std, torch.ones_like(std))
        p, q = (p - mean) / std, (q - mean) / std

    data = torch.cat([p, q]).numpy()
    target = np.concatenate([np.zeros(p.shape[0], dtype=int), np.ones(q.shape[0], dtype=int)])
    d = data.shape[1]
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
    if backend == "torch":
        splits = list(folds.split(data, target))
        X, y = torch.as_tensor(data, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
        nets = _fit_fold_mlps(X, y, [torch.as_tensor(tr) for tr, _ in splits], seed=int(seed))
        return float(np.mean([float(((_mlp_logit(X[te], *(w[f] for w in nets)) > 0) == (y[te] > 0.5))
                                    .float().mean()) for f, (_, te) in enumerate(splits)]))
    from sklearn.model_selection import cross_val_score
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    clf = MLPClassifier(hidden_layer_sizes=(10 * d, 10 * d), activation="relu", solver="adam",
                        max_iter=10_000, random_state=int(seed))
    # one BLAS thread: the matrices are small, and BLAS threads spinning on busy cores (other processes,
    # or the parallel folds) made one 10-d C2ST on 2 x 2000 samples take over 10 minutes instead of 100 s
    with threadpool_limits(limits=1, user_api="blas"):
        scores = cross_val_score(clf, data, target, cv=folds, scoring="accuracy", n_jobs=min(n_jobs, n_folds))
    return float(np.mean(scores))


def _mlp_logit(x: Tensor, W1: Tensor, c1: Tensor, W2: Tensor, c2: Tensor, W3: Tensor, c3: Tensor) -> Tensor:
    """Logits of the C2ST classifier (two ReLU layers); works batched over folds (leading dimension)."""
    return ((x @ W1 + c1).clamp_min(0) @ W2 + c2).clamp_min(0).matmul(W3).add(c3).squeeze(-1)


def _fit_fold_mlps(X: Tensor, y: Tensor, train: list[Tensor], *, seed: int, alpha: float = 1e-4,
                   lr: float = 1e-3, batch_size: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10,
                   max_iter: int = 10_000, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                   ) -> list[Tensor]:
    """Train one C2ST classifier per fold at once; returns the weights ``[W1, c1, W2, c2, W3, c3]``, each with
    a leading fold dimension.

    The recipe of scikit-learn's ``MLPClassifier`` with the benchmark's settings, written for ``F`` folds in
    parallel: hidden layers of ``10 d`` ReLU units, a logistic output, Glorot-uniform initialisation (weights
    and biases), Adam on the mean log loss plus ``alpha / 2 * sum(W^2) / batch``, minibatches of
    ``min(batch_size, n)`` rows from a fresh permutation every epoch, and per fold: stop once the epoch's
    training loss has failed ``n_iter_no_change + 1`` times running to improve on the best by ``tol``.
    Folds whose training sets are shorter are padded with zero-weight rows; stopped folds stay frozen while
    the others train.  Gradients are written out by hand (three layers), so one step is a handful of batched
    matrix products with no autograd bookkeeping.
    """
    F, d = len(train), X.shape[1]
    h = 10 * d
    n = torch.tensor([t.numel() for t in train])
    g = torch.Generator().manual_seed(seed)
    shapes = [(d, h), (1, h), (h, h), (1, h), (h, 1), (1, 1)]
    sizes = [a * b for a, b in shapes]
    flat, grad = torch.empty(F, sum(sizes)), torch.empty(F, sum(sizes))  # all weights in one buffer for Adam
    W1, c1, W2, c2, W3, c3 = (v.view(F, *s) for v, s in zip(flat.split(sizes, 1), shapes))
    gW1, gc1, gW2, gc2, gW3, gc3 = (v.view(F, *s) for v, s in zip(grad.split(sizes, 1), shapes))
    for W, c in ((W1, c1), (W2, c2), (W3, c3)):
        fan_in, fan_out = W.shape[1:]
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # sklearn: factor 6 unless the hidden units are logistic
        W.uniform_(-bound, bound, generator=g)
        c.uniform_(-bound, bound, generator=g)
    m1, m2 = torch.zeros_like(flat), torch.zeros_like(flat)
    bs = int(min(batch_size, int(n.min())))
    n_batches = math.ceil(int(n.max()) / bs)
    active = torch.ones(F, dtype=torch.bool)
    best, bad = torch.full((F,), math.inf), torch.zeros(F, dtype=torch.long)
    idx = torch.zeros(F, n_batches * bs, dtype=torch.long)
    wt = (torch.arange(n_batches * bs) < n[:, None]).float()  # 0 on the padding rows of shorter folds
    step = 0
    for _ in range(max_iter):
        for f in range(F):
            idx[f, : n[f]] = train[f][torch.randperm(int(n[f]), generator=g)]
        Xe, ye = X[idx], y[idx]
        epoch_loss = torch.zeros(F)
        for k in range(n_batches):
            xb, yb, wb = Xe[:, k * bs:(k + 1) * bs], ye[:, k * bs:(k + 1) * bs], wt[:, k * bs:(k + 1) * bs]
            inv = 1.0 / wb.sum(1).clamp_min(1.0)[:, None, None]  # 1 / rows of this fold's batch
            z1 = torch.baddbmm(c1, xb, W1)
            a1 = z1.clamp_min(0)
            z2 = torch.baddbmm(c2, a1, W2)
            a2 = z2.clamp_min(0)
            z3 = torch.baddbmm(c3, a2, W3).squeeze(-1)
            l2 = W1.square().sum((1, 2)) + W2.square().sum((1, 2)) + W3.square().sum((1, 2))
            epoch_loss += ((torch.nn.functional.softplus(z3) - yb * z3) * wb).sum(1) + 0.5 * alpha * l2
            dz3 = ((torch.sigmoid(z3) - yb) * wb)[..., None] * inv
            torch.bmm(a2.transpose(1, 2), dz3, out=gW3).add_(W3 * (alpha * inv))
            gc3.copy_(dz3.sum(1, keepdim=True))
            dz2 = torch.bmm(dz3, W3.transpose(1, 2)).mul_(z2 > 0)
            torch.bmm(a1.transpose(1, 2), dz2, out=gW2).add_(W2 * (alpha * inv))
            gc2.copy_(dz2.sum(1, keepdim=True))
            dz1 = torch.bmm(dz2, W2.transpose(1, 2)).mul_(z1 > 0)
            torch.bmm(xb.transpose(1, 2), dz1, out=gW1).add_(W1 * (alpha * inv))
            gc1.copy_(dz1.sum(1, keepdim=True))
            step += 1
            m1.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
            m2.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
            lr_t = lr * math.sqrt(1 - betas[1] ** step) / (1 - betas[0] ** step)
            flat.sub_(m1 / (m2.sqrt() + eps) * (lr_t * active.float())[:, None])
        epoch_loss /= n
        improved = epoch_loss <= best - tol
        bad = torch.where(active, torch.where(improved, 0, bad + 1), bad)
        best = torch.where(active, torch.minimum(best, epoch_loss), best)
        active &= bad <= n_iter_no_change
        if not active.any():
            break
    return [W1, c1, W2, c2, W3, c3]
