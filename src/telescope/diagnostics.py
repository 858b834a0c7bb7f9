r"""Diagnostics that make ratio estimators trustworthy (Section 2.2 and Appendix D of Miller et al., 2022).

They need only the prior, the simulator and the estimator — never the true posterior — and work
with any object that has a ``prior`` and ``log_ratio(theta, x, grid=False)`` returning
:math:`h_w(\theta, x) \approx \log p(\theta \mid x) - \log p(\theta)` (e.g. :class:`telescope.NRE`).

* :func:`log_normalizer` — :math:`\log Z_w(x) = \log \mathbb{E}_{p(\theta)}[e^{h_w(\theta, x)}]`
  (eqs. 13–14) by Monte Carlo with ``logsumexp``.  Close to 0 for NRE-C/NRE-A, which are trained
  towards a normalised posterior; unconstrained for NRE-B (its optimum carries an x-dependent bias).
* :func:`mutual_information` — the variational bounds of eqs. (48) and (61) on held-out pairs,

  .. math::
      \hat I^{(0)} = \frac1N \sum_n h_w(\theta_n, x_n) - \frac1N \sum_n \log \frac1M \sum_m e^{h_w(\theta_{n,m}, x_n)},
      \qquad
      \hat I^{(1)} = \frac1N \sum_n h_w(\theta_n, x_n) - \frac{1}{NM} \sum_{n,m} \big(e^{h_w(\theta_{n,m}, x_n)} - 1\big),

  with :math:`\theta_{n,m} \sim p(\theta)`.  :math:`I(\theta; x) \ge I^{(0)}_w \ge I^{(1)}_w` and
  :math:`I(\theta; x) - I^{(0)}_w = \mathbb{E}_{p(x)} \mathrm{KL}(p(\theta \mid x) \,\|\, p_w(\theta \mid x))`
  (eq. 15), so the estimator with the largest :math:`\hat I^{(0)}` on common held-out data is, on
  average over ``x``, the closest to the posterior: :func:`select` picks it.
* :func:`importance_diagnostic` — a classifier is trained to tell samples of :math:`p(x \mid \theta)`
  from samples of :math:`p(x)` weighted by :math:`\hat r(x \mid \theta) = e^{h_w(\theta, x)}`
  (Fig. 3); with a correct ratio the two are the same distribution and the held-out ROC AUC is 0.5.
  The AUC of the same classifier on *unweighted* :math:`p(x)` samples shows its power.
* :func:`expected_coverage` — HPD coverage over pairs from the joint (:func:`telescope.metrics.coverage`).

Each has a plot: :func:`plot_log_normalizer`, :func:`plot_mutual_information`, :func:`plot_roc`,
:func:`plot_coverage`.  Figures are built without ``pyplot`` and saved when ``path`` is given.

References:
    Miller, Weniger & Forré (2022), "Contrastive neural ratio estimation", NeurIPS 2022, arXiv:2210.06170
    (equation, figure and appendix numbers above are this paper's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .simulation.simulators import as_simulator, seeded
from .utils import check_count
from .utils import save_figure as _save

__all__ = [
    "log_normalizer",
    "mutual_information",
    "select",
    "importance_diagnostic",
    "expected_coverage",
    "plot_log_normalizer",
    "plot_mutual_information",
    "plot_roc",
    "plot_coverage",
]

PathLike = str | os.PathLike


def _check_estimator(estimator) -> None:
    if not callable(getattr(estimator, "log_ratio", None)) or getattr(estimator, "prior", None) is None:
        raise TypeError(f"estimator must have a prior and a log_ratio(theta, x, grid=...) method (e.g. telescope.NRE), "
                        f"got {type(estimator).__name__}")


def _x_rows(estimator, x, name: str = "x") -> Tensor:
    """``x`` as ``(m, *event)`` (a single observation gets a batch dimension), checked by the estimator."""
    check = getattr(estimator, "_check_x", None)
    if check is not None:
        return check(x, name)
    x = torch.as_tensor(x, dtype=torch.float32)
    return x if x.dim() >= 2 else x.reshape(1, -1)


# ----------------------------------------------------------------------------------------------
# normalising constant and mutual information


@torch.no_grad()
def log_normalizer(estimator, x, n: int = 10_000, *, seed: int = 0, return_ess: bool = False):
    r"""Monte Carlo :math:`\log Z_w(x) = \log \frac1n \sum_i e^{h_w(\theta_i, x)}`, :math:`\theta_i \sim p(\theta)`.

    Arguments:
        estimator: a ratio estimator (``prior``, ``log_ratio``).
        x: ``(m, *event)`` observations, or one observation.
        n: prior draws (shared by all observations).
        seed: seeds the prior draws.
        return_ess: also return the effective sample size ``(sum w)^2 / sum w^2`` of the weights per
            observation — when it is small the estimate is unreliable (posterior much narrower than the prior).

    Returns:
        ``(m,)`` log normalising constants (and ``(m,)`` effective sample sizes).

    Example:
        >>> # log_normalizer(nre, task.observation(1)) -> tensor([~0.0]) for a good NRE-C
    """
    _check_estimator(estimator)
    n = check_count("n", n)
    x = _x_rows(estimator, x)
    with seeded(seed):
        theta = estimator.prior.sample((n,)).float()
    h = estimator.log_ratio(theta, x, grid=True).double()  # (n, m)
    log_z = torch.logsumexp(h, 0) - math.log(n)
    if not return_ess:
        return log_z
    ess = torch.exp(2 * torch.logsumexp(h, 0) - torch.logsumexp(2 * h, 0))
    return log_z, ess


@torch.no_grad()
def mutual_information(estimator, theta, x, *, n_contrast: int = 100, seed: int = 0,
                       chunk: int = 2**16) -> dict[str, float]:
    r"""The mutual-information bounds :math:`\hat I^{(0)}` (eq. 48) and :math:`\hat I^{(1)}` (eq. 61).

    Arguments:
        estimator: a ratio estimator (``prior``, ``log_ratio``).
        theta, x: ``N`` held-out pairs ``(N, d)``, ``(N, *event)`` from the joint (not used for training).
        n_contrast: ``M`` prior draws per ``x_n`` (fresh for every ``n``).
        seed: seeds the prior draws.

    Returns:
        A dict with ``I0``, ``I1`` (nats; larger is better, both bound :math:`I(\theta; x)` from below in
        expectation), ``mean_log_r`` (the naive estimate of eq. 50, biased for NRE-B), ``mean_log_Z``,
        ``n`` and ``n_contrast``.  ``I1`` may be ``-inf`` when some ``exp(h)`` overflows (NRE-B).
    """
    _check_estimator(estimator)
    M = check_count("n_contrast", n_contrast)
    x = _x_rows(estimator, x)
    theta = torch.as_tensor(theta, dtype=torch.float32)
    if theta.dim() != 2 or theta.shape[0] != x.shape[0]:
        raise ValueError(f"theta must have shape (N, d) with N = {x.shape[0]} rows like x, got {tuple(theta.shape)}")
    N = x.shape[0]
    h_joint = estimator.log_ratio(theta, x).double()  # (N,)
    with seeded(seed):
        theta_c = estimator.prior.sample((N, M)).float()  # theta_{n, m}
    log_z = torch.empty(N, dtype=torch.float64)
    mean_r = torch.empty(N, dtype=torch.float64)
    rows = max(1, chunk // M)
    for lo in range(0, N, rows):
        hi = min(N, lo + rows)
        xr = x[lo:hi].repeat_interleave(M, 0)
        h = estimator.log_ratio(theta_c[lo:hi].reshape(-1, theta.shape[1]), xr).double().reshape(hi - lo, M)
        log_z[lo:hi] = torch.logsumexp(h, 1) - math.log(M)
        mean_r[lo:hi] = torch.exp(h).mean(1)
    mean_h = float(h_joint.mean())
    i1 = mean_h - float((mean_r - 1).mean())
    return {"I0": mean_h - float(log_z.mean()), "I1": i1 if math.isfinite(i1) else -math.inf,
            "mean_log_r": mean_h, "mean_log_Z": float(log_z.mean()), "n": N, "n_contrast": M}


def select(estimators: Mapping[str, Any], theta, x, *, bound: str = "I0", n_contrast: int = 100,
           seed: int = 0) -> tuple[str, dict[str, dict[str, float]]]:
    """Model selection without the true posterior: the estimator with the largest MI bound on held-out pairs.

    Arguments:
        estimators: ``{name: estimator}``, e.g. NRE-C and NRE-B with several ``K`` and ``gamma``.
        theta, x: held-out pairs from the joint, the same for every estimator.
        bound: ``"I0"`` (tighter, eq. 48) or ``"I1"`` (eq. 61).

    Returns:
        The best name and ``{name: mutual_information(...)}`` for all.
    """
    if bound not in ("I0", "I1"):
        raise ValueError(f"bound must be 'I0' or 'I1', got {bound!r}")
    if not isinstance(estimators, Mapping) or not estimators:
        raise ValueError("estimators must be a non-empty dict {name: estimator}")
    scores = {str(k): mutual_information(e, theta, x, n_contrast=n_contrast, seed=seed) for k, e in estimators.items()}
    best = max(scores, key=lambda k: scores[k][bound])
    return best, scores


# ----------------------------------------------------------------------------------------------
# importance-sampling diagnostic


def _default_classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True,
                                          validation_fraction=0.2, n_iter_no_change=10, random_state=seed)


@torch.no_grad()
def importance_diagnostic(estimator, simulator, theta, n: int = 2000, *, seed: int = 0, classifier=None,
                          test_fraction: float = 0.5) -> dict[str, Any]:
    r"""Classifier test of :math:`p(x \mid \theta) = p(x)\, \hat r(x \mid \theta)` for one parameter ``theta``.

    ``n`` samples :math:`x \sim p(x \mid \theta)` (label 1) and ``n`` samples :math:`x \sim p(x)` (label 0,
    weighted by :math:`e^{h_w(\theta, x)}`, normalised to the size of class 1) are split into a training
    and a test part; a classifier is fitted with these sample weights and its weighted ROC curve is
    measured on the test part.

    Arguments:
        estimator: a ratio estimator (``prior``, ``log_ratio``).
        simulator: the simulator (a callable ``theta -> x`` or a :class:`telescope.Simulator`).
        theta: ``(d,)`` one parameter (or ``(1, d)``).
        n: samples of each class.
        seed: seeds simulations, split and classifier.
        classifier: any scikit-learn classifier whose ``fit`` takes ``sample_weight`` and that has
            ``predict_proba``; default a histogram gradient-boosting classifier.
        test_fraction: share of each class held out for the ROC curve.

    Returns:
        A dict with ``auc`` (about 0.5 for a correct ratio), ``fpr``, ``tpr`` (the ROC curve),
        ``auc_power``, ``fpr_power``, ``tpr_power`` (the same classifier recipe on *unweighted*
        :math:`p(x)` samples: how well it can tell the two distributions apart at all), ``ess`` (effective
        sample size of the weights, out of ``n``) and ``weight_mean`` (Monte Carlo
        :math:`\mathbb{E}_{p(x)}[\hat r(x \mid \theta)]`, which is 1 for a correct ratio).
    """
    _check_estimator(estimator)
    n = check_count("n", n, 4)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    sim = as_simulator(simulator)
    prior = estimator.prior
    theta = torch.as_tensor(theta, dtype=torch.float32).reshape(-1)
    d = int(prior.event_shape[0])
    if theta.numel() != d:
        raise ValueError(f"theta must be one parameter of shape ({d},), got {theta.numel()} values")
    x_l, x_m = _two_classes(sim, prior, theta, n, seed)
    log_w = estimator.log_ratio(theta, x_m).double()
    w = torch.exp(log_w - log_w.max())
    weight_mean = float(torch.exp(torch.logsumexp(log_w, 0) - math.log(log_w.numel())))
    ess = float(w.sum() ** 2 / (w**2).sum())

    rng = np.random.default_rng(seed)
    feats_l = x_l.reshape(x_l.shape[0], -1).numpy().astype(np.float64)
    feats_m = x_m.reshape(x_m.shape[0], -1).numpy().astype(np.float64)
    w_np = w.numpy()
    rows_l = _split_rows(rng, feats_l.shape[0], test_fraction)
    rows_m = _split_rows(rng, feats_m.shape[0], test_fraction)
    fpr, tpr, auc = _weighted_roc(classifier, seed, feats_l, feats_m, rows_l, rows_m, w_np)
    fpr0, tpr0, auc0 = _weighted_roc(classifier, seed, feats_l, feats_m, rows_l, rows_m, np.ones_like(w_np))
    return {"auc": auc, "fpr": fpr, "tpr": tpr, "auc_power": auc0, "fpr_power": fpr0, "tpr_power": tpr0,
            "ess": ess, "weight_mean": weight_mean, "theta": theta.tolist(), "n": n}


def _two_classes(sim, prior, theta: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    r"""``n`` simulations from :math:`p(x \mid \theta)` and ``n`` from :math:`p(x)`, the non-finite ones dropped."""
    d = theta.numel()
    with seeded(seed):
        theta_m = prior.sample((n,)).float()
    x_l = torch.as_tensor(sim(theta.expand(n, d).contiguous(), seed=seed + 1)).float()  # p(x | theta)
    x_m = torch.as_tensor(sim(theta_m, seed=seed + 2)).float()  # p(x)
    ok_l = torch.isfinite(x_l.reshape(n, -1)).all(-1)
    ok_m = torch.isfinite(x_m.reshape(n, -1)).all(-1)
    x_l, x_m = x_l[ok_l], x_m[ok_m]
    if min(x_l.shape[0], x_m.shape[0]) < 4:
        raise ValueError("fewer than 4 finite simulations in a class; check the simulator at this theta")
    return x_l, x_m


def _split_rows(rng: np.random.Generator, k: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``k`` rows: ``(train rows, test rows)``, ``test_fraction`` of them for testing."""
    perm = rng.permutation(k)
    t = int(round(test_fraction * k))
    return perm[t:], perm[:t]


def _weighted_roc(classifier, seed: int, feats_l: np.ndarray, feats_m: np.ndarray, rows_l: tuple, rows_m: tuple,
                  weights_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit a classifier of class 1 (``feats_l``) against class 0 (``feats_m`` weighted by ``weights_m``, normalised to
    the size of class 1) on the training rows; its weighted ROC curve and AUC on the test rows."""
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score, roc_curve

    (tr_l, te_l), (tr_m, te_m) = rows_l, rows_m
    clf = clone(classifier if classifier is not None else _default_classifier(seed))
    wm_tr = weights_m[tr_m] / max(weights_m[tr_m].sum(), 1e-300) * len(tr_l)
    X = np.concatenate([feats_l[tr_l], feats_m[tr_m]])
    y = np.concatenate([np.ones(len(tr_l)), np.zeros(len(tr_m))])
    sw = np.concatenate([np.ones(len(tr_l)), wm_tr])
    clf.fit(X, y, sample_weight=sw)
    Xt = np.concatenate([feats_l[te_l], feats_m[te_m]])
    yt = np.concatenate([np.ones(len(te_l)), np.zeros(len(te_m))])
    wt = np.concatenate([np.ones(len(te_l)), weights_m[te_m] / max(weights_m[te_m].sum(), 1e-300) * len(te_l)])
    score = clf.predict_proba(Xt)[:, 1]
    fpr, tpr, _ = roc_curve(yt, score, sample_weight=wt)
    return fpr, tpr, float(roc_auc_score(yt, score, sample_weight=wt))


def expected_coverage(estimator, theta, x, n_samples: int = 500, alphas=None, *, seed: int | None = 0,
                      batch_size: int = 64, **kwargs):
    """Expected HPD coverage over pairs ``theta (m, d)``, ``x (m, *event)`` from the joint.

    A thin wrapper of :func:`telescope.metrics.coverage` (the estimator's ``sample_batched`` and
    ``log_prob_batched``).  Returns ``(alphas, coverage)``; plot with :func:`plot_coverage`.
    """
    from .metrics import coverage

    return coverage(estimator, theta, x, n_samples=n_samples, alphas=alphas, seed=seed, batch_size=batch_size,
                    **kwargs)


# ----------------------------------------------------------------------------------------------
# plots


def _figure(ax, size=(4.5, 3.5)):
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=size)
        return fig, fig.add_subplot()
    return ax.figure, ax


def plot_log_normalizer(log_z, path: PathLike | None = None, *, bins: int = 30, ax=None, dpi: int = 120):
    """Histogram of :math:`\\log Z_w(x)` over observations, one per estimator; 0 is marked (a normalised ratio).

    Arguments:
        log_z: ``(m,)`` values from :func:`log_normalizer`, or ``{label: (m,) values}``.
    """
    fig, ax = _figure(ax)
    curves = {str(k): v for k, v in log_z.items()} if isinstance(log_z, Mapping) else {"": log_z}
    if not curves:
        raise ValueError("log_z must not be an empty dict; expected {label: values}")
    arrays = {k: np.asarray(torch.as_tensor(v, dtype=torch.float64).reshape(-1)) for k, v in curves.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    if finite.size == 0:
        raise ValueError("log_z holds no finite value")
    lo, hi = min(finite.min(), -0.1), max(finite.max(), 0.1)
    edges = np.linspace(lo, hi, bins + 1)
    for i, (k, a) in enumerate(arrays.items()):
        label = f"{k} (mean |log Z| = {np.mean(np.abs(a)):.2f})" if k else f"mean |log Z| = {np.mean(np.abs(a)):.2f}"
        ax.hist(a[np.isfinite(a)], bins=edges, alpha=0.55, color=f"C{i}", label=label)
    ax.axvline(0.0, color="0.2", linestyle="--", linewidth=1)
    ax.set_xlabel("log Z(x)")
    ax.set_ylabel("observations")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path, dpi)


def plot_mutual_information(results, path: PathLike | None = None, *, ax=None, dpi: int = 120):
    """Bars of :math:`\\hat I^{(0)}` and :math:`\\hat I^{(1)}` per estimator (larger is better).

    Arguments:
        results: one dict from :func:`mutual_information`, or ``{label: dict}`` (e.g. the scores of :func:`select`).
    """
    fig, ax = _figure(ax, (max(4.0, 1.2 * (len(results) if "I0" not in results else 1) + 2), 3.5))
    res = {"": results} if isinstance(results, Mapping) and "I0" in results else dict(results)
    names = list(res)
    pos = np.arange(len(names))
    i0 = np.array([res[k]["I0"] for k in names], dtype=float)
    i1 = np.array([res[k]["I1"] for k in names], dtype=float)
    floor = np.nanmin(np.concatenate([i0[np.isfinite(i0)], [0.0]]))
    i1_plot = np.where(np.isfinite(i1), i1, floor - 1.0)
    ax.bar(pos - 0.2, i0, width=0.4, color="C0", label="I^(0) (eq. 48)")
    ax.bar(pos + 0.2, i1_plot, width=0.4, color="C1", label="I^(1) (eq. 61)", hatch=None)
    for p, v in zip(pos, i1):
        if not np.isfinite(v):
            ax.text(p + 0.2, floor - 1.0, "-inf", ha="center", va="bottom", fontsize=7)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_xticks(pos)
    ax.set_xticklabels([k or "estimator" for k in names], rotation=20, ha="right")
    ax.set_ylabel("bound on I(theta; x) [nats]")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path, dpi)


def plot_roc(result, path: PathLike | None = None, *, ax=None, dpi: int = 120):
    """ROC curves of the importance-sampling diagnostic (Fig. 3c), with the power curve dashed.

    Arguments:
        result: a dict from :func:`importance_diagnostic`, or ``{label: dict}`` to compare estimators.
    """
    fig, ax = _figure(ax, (4.5, 4.5))
    res = {"": result} if isinstance(result, Mapping) and "auc" in result else dict(result)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1)
    for i, (k, r) in enumerate(res.items()):
        prefix = f"{k}: " if k else ""
        ax.plot(r["fpr"], r["tpr"], color=f"C{i}", linewidth=1.8,
                label=f"{prefix}p(x|θ) vs r̂·p(x), AUC {r['auc']:.3f}")
        ax.plot(r["fpr_power"], r["tpr_power"], color=f"C{i}", linewidth=1.0, linestyle="--",
                label=f"{prefix}p(x|θ) vs p(x), AUC {r['auc_power']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    return _save(fig, path, dpi)


def plot_coverage(alphas, coverage, path: PathLike | None = None, **kwargs):
    """Expected coverage plot (delegates to :func:`telescope.plots.coverage_plot`)."""
    from .plots import coverage_plot

    return coverage_plot(alphas, coverage, path=path, **kwargs)
