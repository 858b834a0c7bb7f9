r"""Multilevel neural SBI (Hikida, Bharti, Jeffrey & Briol, "Multilevel neural simulation-based inference").

Simulators :math:`G^0, \dots, G^L` of rising cost and fidelity, run seed-matched
(:func:`telescope.simulate_levels`), train any Monte Carlo-loss estimator through the telescoping
MLMC loss (eq. 2)

.. math::
    \ell_{\mathrm{MLMC}}(\phi) = \frac{1}{n_0}\sum_i f^0_\phi(u^0_i, \theta^0_i)
      + \sum_{l=1}^{L} \frac{1}{n_l}\sum_i \big(f^l_\phi - f^{l-1}_\phi\big)(u^l_i, \theta^l_i),

an unbiased estimate of the high-fidelity loss whose variance is small when the levels are coupled.

* :class:`MultilevelNLE`, :class:`MultilevelNPE`, and :class:`Multilevel` for any estimator
  (NRE, NPSE, ...) — :mod:`.wrapper`;
* the loss terms — :mod:`.loss`; level-data checks, shared standardisation, coupling — :mod:`.levels`;
* the gradient adjustment of Algorithm 1 — :mod:`.adjust`;
* Theorem 2's allocation of ``n_0..n_L`` and pilot variance estimates — :mod:`.allocation`;
* the TL-NPE baseline — :mod:`.transfer`;
* control-variate weights and the standard error of the loss — :mod:`.weights`; out-of-sample comparison
  with the expensive level alone — :mod:`.safeguard`; training from a ladder and a budget — :mod:`.budget`.

Example:
    >>> import telescope as ts
    >>> a = ts.multilevel.allocate(costs=[50, 80, 300], variances=[1.0, 0.05, 0.01], budget=603_000)
    >>> a.n
    [7370, 1022, 267]
"""

from .adjust import GradientAdjustment, adjust_gradients
from .allocation import Allocation, LevelVariances, allocate, level_variances
from .levels import Level, as_levels, check_coupling, pair_correlations, pooled
from .loss import mlmc_loss, mlmc_terms, term_names
from .safeguard import compare
from .transfer import TLNPE
from .weights import coefficients, weighted_mean
from .wrapper import Multilevel, MultilevelNLE, MultilevelNPE

__all__ = [
    "Multilevel", "MultilevelNLE", "MultilevelNPE", "TLNPE",
    "mlmc_terms", "mlmc_loss", "term_names",
    "adjust_gradients", "GradientAdjustment",
    "allocate", "Allocation", "level_variances", "LevelVariances",
    "as_levels", "Level", "pooled", "pair_correlations", "check_coupling",
    "coefficients", "weighted_mean", "compare",
]
