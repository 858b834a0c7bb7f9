r"""TL-NPE: transfer-learning NPE across fidelities, the baseline of Hikida et al. (2025), Section 5.2.

Krouglova et al. (2025) pre-train an NPE network on many low-fidelity simulations and then fine-tune
the same network on a few high-fidelity ones; each stage stops early on a validation split (20% of
the data, patience 20 epochs, best weights restored, as in the ``sbi`` defaults the paper used).
The standardisation statistics are fitted on the low-fidelity data and kept for fine-tuning (the
pre-trained weights depend on them).  Unlike the MLMC loss this has no unbiasedness guarantee:
what remains of the low-fidelity fit after fine-tuning is decided by early stopping.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..estimators.npe import NPE
from ..training import train

__all__ = ["TLNPE"]


class TLNPE(NPE):
    """NPE pre-trained on low-fidelity simulations and fine-tuned on high-fidelity ones.

    Takes the arguments of :class:`telescope.NPE`.  :meth:`fit` takes the two data sets.

    Example:
        >>> import torch, telescope as ts
        >>> prior = ts.BoxUniform([0.0], [1.0])
        >>> th = prior.sample((300,))
        >>> est = TLNPE(prior, transforms=1, hidden=(8,)).fit((th, th + 0.2), (th[:20], th[:20]),
        ...                                                   max_epochs=2, progress_bar=False)
        >>> {"best_epoch", "best_val_loss", "epochs"} <= set(est.history)
        True
    """

    train_defaults = {"batch_size": 200, "lr": 1e-3, "patience": 20, "val_fraction": 0.2}

    def fit(self, low: Sequence, high: Sequence | None = None, *, low_kwargs: dict | None = None,
            **train_kwargs) -> TLNPE:
        """Pre-train on ``low = (theta, x)`` and fine-tune on ``high = (theta, x)``; returns ``self``.

        ``low`` may also be :func:`telescope.simulate_levels` output with ``high`` omitted: level 0 is
        the low-fidelity set and the high members of the top level's pairs the high-fidelity set.
        ``train_kwargs`` apply to both stages, ``low_kwargs`` override them for the pre-training.
        ``history`` is the fine-tuning history, with the pre-training one under ``history["pretrain"]``.
        """
        if high is None:
            levels = list(low)
            if len(levels) < 2 or len(levels[0]) != 2:
                raise ValueError("with high omitted, low must be simulate_levels output [(theta_0, x_0), ..., "
                                 "(theta_L, x_L, x_{L-1})]")
            low, high = levels[0], (levels[-1][0], levels[-1][1])
        if len(low) != 2 or len(high) != 2:
            raise ValueError(f"low and high must be (theta, x) pairs, got tuples of {len(low)} and {len(high)}")
        theta_h, x_h = self._prepare(*high)
        super().fit(low[0], low[1], **{**train_kwargs, **(low_kwargs or {})})
        if tuple(x_h.shape[1:]) != self.x_shape:
            raise ValueError(f"high-fidelity x has shape {tuple(x_h.shape[1:])} per simulation but the low-fidelity "
                             f"x has {self.x_shape}")
        pre = self.history
        kwargs = {"seed": self.seed, "device": self.device, "desc": "fine-tune TL-NPE", **self.train_defaults,
                  **train_kwargs}
        self.history = train(self.net, self._loss, self._data(theta_h, x_h), **kwargs)
        self.history["pretrain"] = pre
        return self
