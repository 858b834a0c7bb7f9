"""One training loop for every estimator, single-level or multilevel.

``train(module, loss_fn, data)`` minimises a Monte Carlo loss with minibatch Adam:

* ``data`` is a dict of equally long tensors — or a list of such dicts ("groups", e.g. the
  levels of a multilevel loss, eq. 2 of Hikida et al., 2025), each batched so every epoch has the same
  number of steps in every group;
* ``loss_fn(net, batch)`` returns a scalar or a dict of named terms whose sum is minimised
  (a non-finite term raises an error naming the epoch, batch and term);
* ``backward(terms, params)``, when given, replaces ``sum(terms).backward()``: the multilevel
  gradient adjustment (Algorithm 1 of Hikida et al., 2025) plugs in here;
* a validation split, early stopping that restores the best weights, gradient clipping,
  an optional exponential moving average of the weights (used by score-based estimators,
  whose validation and final weights are then the averaged ones).

Tensors stay in memory on the training device and are indexed directly: no DataLoader.

References:
    Hikida, Bharti, Jeffrey & Briol (2025), "Multilevel neural simulation-based inference", arXiv:2506.06087.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..simulation.simulators import seeded
from ..utils import as_device, progress

__all__ = ["train", "split", "NonFiniteLossError"]

Batch = dict[str, Tensor]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf during training."""


def _check_group(g: Batch, i: int) -> int:
    if not isinstance(g, dict) or not g:
        raise TypeError(f"data[{i}] must be a non-empty dict of tensors, got {type(g).__name__}")
    lengths = {k: v.shape[0] for k, v in g.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"tensors in data[{i}] must have the same first dimension, got {lengths}")
    return next(iter(lengths.values()))


def split(data: Batch, val_fraction: float, generator: torch.Generator) -> tuple[Batch, Batch]:
    """Random train/validation split of a dict of tensors (at least one row in each when possible)."""
    n = next(iter(data.values())).shape[0]
    n_val = int(round(val_fraction * n))
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    perm = torch.randperm(n, generator=generator)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    return ({k: v[tr_idx] for k, v in data.items()}, {k: v[val_idx] for k, v in data.items()})


def _terms(out) -> dict[str, Tensor]:
    if isinstance(out, Tensor):
        return {"loss": out}
    if isinstance(out, dict) and out:
        return out
    raise TypeError(f"loss_fn must return a scalar tensor or a dict of scalar tensors, got {type(out).__name__}")


def _total(terms: dict[str, Tensor]) -> Tensor:
    return sum(terms.values())  # type: ignore[return-value]


def _check_finite(terms: dict[str, Tensor], epoch: int, batch: int, where: str) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"{where} loss term {name!r} became {value.item() if value.numel() == 1 else value} at epoch "
                f"{epoch}, batch {batch}; try a lower learning rate (lr=), stronger gradient clipping (clip=), "
                f"or check the training data for extreme values")


def _ema(decay: float) -> Callable:
    """Moving average with a warm start: the plain mean of the first ``1 / (1 - decay)`` iterates, then
    decay ``decay``.  A fixed decay from step one would keep most of the weight on the first iterates, so
    a short fit (a few epochs) would return a nearly untrained network."""
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged) -> None:
        weight = max(1.0 - decay, 1.0 / (float(num_averaged) + 1.0))
        torch._foreach_lerp_(averaged, current, weight)
    return update


def train(module: nn.Module, loss_fn: Callable, data: Batch | Sequence[Batch], *, batch_size: int | None = None,
          lr: float = 1e-3, max_epochs: int = 1000, patience: int = 20, val_fraction: float = 0.1,
          clip: float | None = 5.0, weight_decay: float = 0.0, ema: float | None = None,
          ema_max_epochs: float | None = None, backward: Callable | None = None, max_time: float | None = None,
          device=None, seed: int | None = 0, progress_bar: bool = True, desc: str = "train", min_epochs: int = 1,
          schedule: str | None = None, val_data: Batch | Sequence[Batch] | None = None,
          val_loss_fn: Callable | None = None, val_initial: bool = False, tol: float = 0.0) -> dict:
    """Train ``module`` by minimising ``loss_fn`` over ``data``.

    Arguments:
        module: the network whose parameters are optimised (moved to ``device``).
        loss_fn: ``loss_fn(net, batch) -> Tensor | dict[str, Tensor]``; ``net`` is the module (or its EMA copy
            during validation); ``batch`` is a dict of tensors, or a list of dicts when ``data`` is a list of groups.
        data: a dict of tensors ``(n, *)`` or a list of such dicts.
        batch_size: minibatch size (of the largest group; smaller groups get proportionally smaller batches);
            default ``n / 20`` clipped to ``[50, 512]``: ~20 steps per epoch, large batches on large data sets.
        lr, weight_decay: Adam settings.
        max_epochs, patience: stop after ``patience`` epochs without a better validation loss.
        tol: relative tolerance of early stopping: an epoch resets the patience count only if its validation
            loss beats the one of the last epoch that did by more than ``tol`` times the decrease so far (the
            first epoch's validation loss minus the best one).  A slow creep of the loss (e.g. the moving
            average of a score network) then no longer postpones the stop indefinitely.  The weights
            restored are still those of the lowest validation loss.  0 (default): any decrease counts.
        val_fraction: share of each group held out for validation (0 disables early stopping).
        clip: max gradient norm (None: no clipping).
        ema: decay of an exponential moving average of the weights (e.g. 0.999), or None; the average
            starts as the plain mean of the iterates until ``1 / (1 - ema)`` steps.
        ema_max_epochs: cap the average's window ``1 / (1 - ema)`` at this many epochs of steps (None: no
            cap).  On small data sets (few steps per epoch) a fixed decay lags many epochs behind the
            iterates and delays early stopping.
        backward: ``backward(terms, params)`` that fills ``p.grad``; default ``sum(terms).backward()``.
        max_time: stop after this many seconds (keeps the best weights).
        schedule: ``None`` (constant ``lr``) or ``"cosine"``: the learning rate falls from ``lr`` to 0 along
            half a cosine over ``max_epochs`` (Loshchilov & Hutter, 2017); early stopping still applies; or
            ``"plateau"``: the learning rate halves after every ``max(1, patience // 4)`` epochs without an
            improvement that resets the patience count (the ``tol`` rule), so a run that stalls at the noise
            level of its step size gets a smaller one before it stops.
        device, seed, progress_bar: where to train, seed of splits/shuffles/dropout, show a bar.
        val_data: a validation set of the same structure as ``data`` (then ``data`` is used whole for
            training and ``val_fraction`` only switches validation on or off), for callers that split once
            and train in several stages on the same split.
        val_loss_fn: the validation loss, ``val_loss_fn(net, val_batch)`` (default ``loss_fn``); with it,
            ``val_data`` may have another structure than ``data`` (e.g. a multilevel estimate of the
            high-fidelity loss to validate a network trained on one level).
        val_initial: validate the module before the first step too, and keep its initial weights when no
            epoch beats them (fine-tuning a pre-trained network: ``best_epoch`` is then -1).

    Returns:
        A history dict: ``train_loss``, ``val_loss``, ``lr`` (at the end of each epoch), ``best_epoch``, ``epochs``,
        ``seconds``, ``ema`` (the decay used, after the cap, or None).
    """
    groups = [data] if isinstance(data, dict) else list(data)
    if not groups:
        raise ValueError("data must contain at least one group of tensors")
    for i, g in enumerate(groups):
        _check_group(g, i)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    dev = as_device(device)
    module.to(dev)
    gen = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
    train_sets, val_sets = _data_sets(groups, val_data, val_fraction, val_loss_fn, gen, dev)
    loop = _Loop(module, train_sets, val_sets, gen=gen, dev=dev, batch_size=batch_size, val_fraction=val_fraction,
                 single=isinstance(data, dict), val_single=isinstance(data if val_data is None else val_data, dict))
    loop.optimiser(lr=lr, weight_decay=weight_decay, schedule=schedule, max_epochs=max_epochs, ema=ema,
                   ema_max_epochs=ema_max_epochs)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return loop.run(loss_fn, val_loss_fn or loss_fn, backward=backward, clip=clip, max_epochs=max_epochs,
                    patience=patience, tol=float(tol), min_epochs=min_epochs, max_time=max_time, val_initial=val_initial,
                    progress_bar=progress_bar, desc=desc)


def _data_sets(groups: list[Batch], val_data: Batch | Sequence[Batch] | None, val_fraction: float,
               val_loss_fn: Callable | None, gen: torch.Generator, dev) -> tuple[list[Batch], list[Batch]]:
    """The training and validation groups on ``dev``: ``val_data`` as given, or a random split of each group."""
    if val_data is not None:
        vgroups = [val_data] if isinstance(val_data, dict) else list(val_data)
        if len(vgroups) != len(groups) and val_loss_fn is None:
            raise ValueError(f"val_data must have one group per group of data ({len(groups)}), got {len(vgroups)}")
        for i, v in enumerate(vgroups):
            _check_group(v, i)
        train_sets = [{k: v.to(dev) for k, v in g.items()} for g in groups]
        val_sets = [{k: v.to(dev) for k, v in g.items()} for g in vgroups]
        return train_sets, val_sets
    train_sets, val_sets = [], []
    for g in groups:
        tr, va = split(g, val_fraction, gen)
        train_sets.append({k: v.to(dev) for k, v in tr.items()})
        val_sets.append({k: v.to(dev) for k, v in va.items()})
    return train_sets, val_sets


class _Loop:
    """One training run: minibatches, the optimiser and weight average, epochs, validation and early stopping."""

    def __init__(self, module: nn.Module, train_sets: list[Batch], val_sets: list[Batch], *, gen: torch.Generator,
                 dev, batch_size: int | None, val_fraction: float, single: bool, val_single: bool):
        self.module, self.train_sets, self.val_sets, self.gen, self.dev = module, train_sets, val_sets, gen, dev
        self.single, self.val_single = single, val_single
        n_train = [next(iter(t.values())).shape[0] for t in train_sets]
        if batch_size is None:
            batch_size = min(512, max(50, max(n_train) // 20))
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.n_steps = max(1, math.ceil(max(n_train) / batch_size))
        self.has_val = val_fraction > 0 and all(next(iter(v.values())).shape[0] > 0 for v in val_sets)

    def optimiser(self, *, lr: float, weight_decay: float, schedule: str | None, max_epochs: int, ema: float | None,
                  ema_max_epochs: float | None) -> None:
        """Adam (with the cosine schedule if asked), the moving average of the weights, an empty history."""
        if schedule not in (None, "cosine", "plateau"):
            raise ValueError(f"schedule must be None, 'cosine' or 'plateau', got {schedule!r}")
        self.plateau = schedule == "plateau"
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=lr, weight_decay=weight_decay, foreach=True)
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max_epochs * self.n_steps)
                      if schedule == "cosine" else None)
        if ema is not None and not (isinstance(ema, (int, float)) and 0 <= ema < 1):
            raise ValueError(f"ema must be a decay in [0, 1) or None, got {ema!r}")
        if ema and ema_max_epochs is not None:
            if not ema_max_epochs > 0:
                raise ValueError(f"ema_max_epochs must be > 0 or None, got {ema_max_epochs!r}")
            ema = min(float(ema), 1.0 - 1.0 / max(1.0, ema_max_epochs * self.n_steps))
        self.avg = torch.optim.swa_utils.AveragedModel(self.module, multi_avg_fn=_ema(ema)) if ema else None
        self.history: dict = {"train_loss": [], "val_loss": [], "lr": [], "best_epoch": 0, "epochs": 0,
                              "ema": ema or None}

    def batches(self, sets: list[Batch], shuffle: bool, single: bool):
        """``(b, batch)`` pairs: ``n_steps`` shuffled minibatches per group, or validation chunks of about 4096 rows."""
        gen, dev = self.gen, self.dev
        perms = [torch.randperm(n, generator=gen).to(dev) if shuffle else torch.arange(n, device=dev)
                 for n in (next(iter(s.values())).shape[0] for s in sets)]
        steps = self.n_steps if shuffle else max(1, math.ceil(max(p.numel() for p in perms) / 4096))
        for b in range(steps):
            out = []
            for s, p in zip(sets, perms):
                lo, hi = (b * p.numel()) // steps, ((b + 1) * p.numel()) // steps
                idx = p[lo:hi]
                out.append({k: v[idx] for k, v in s.items()})
            yield b, (out[0] if single else out)

    def epoch(self, loss_fn: Callable, epoch: int, backward: Callable | None, clip: float | None) -> None:
        """One pass over the training data: a step per minibatch; the mean loss and the learning rate to the history."""
        module, opt, params = self.module, self.opt, self.params
        module.train()
        total, count = torch.zeros((), device=self.dev), 0
        for b, batch in self.batches(self.train_sets, True, self.single):
            terms = _terms(loss_fn(module, batch))
            _check_finite(terms, epoch, b, "training")
            opt.zero_grad(set_to_none=True)
            loss = _total(terms)  # once per step: for backward and for the epoch's mean
            if backward is None:
                loss.backward()
            else:
                backward(terms, params)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if self.sched is not None:
                self.sched.step()
            if self.avg is not None:
                self.avg.update_parameters(module)
            total += loss.detach()
            count += 1
        self.history["train_loss"].append(float(total) / count)
        self.history["lr"].append(opt.param_groups[0]["lr"])
        self.history["epochs"] = epoch + 1

    def validate(self, net: nn.Module, val_loss_fn: Callable, epoch: int) -> float:
        """The validation loss of ``net`` (deterministic chunks, no gradients)."""
        return _validate(net, val_loss_fn, self.batches(self.val_sets, False, self.val_single), epoch)

    def run(self, loss_fn: Callable, val_loss_fn: Callable, *, backward: Callable | None, clip: float | None,
            max_epochs: int, patience: int, min_epochs: int, tol: float, max_time: float | None, val_initial: bool,
            progress_bar: bool, desc: str) -> dict:
        """Epochs until ``patience`` epochs without a better validation loss (or ``max_epochs``, ``max_time``);
        then the best weights (or the average) are loaded and the history returned."""
        module, history, has_val = self.module, self.history, self.has_val
        best, best_state, bad = math.inf, None, 0
        mark = first = math.inf  # the validation loss that last reset the patience count; the first epoch's
        t0 = time.perf_counter()
        if val_initial and has_val:
            best = mark = self.validate(module, val_loss_fn, -1)
            best_state, history["best_epoch"], history["initial_val_loss"] = copy.deepcopy(module.state_dict()), -1, best
        with seeded(int(torch.randint(2**62, (1,), generator=self.gen).item())), \
                progress(total=max_epochs, desc=desc, enabled=progress_bar, unit="epoch") as bar:
            for epoch in range(max_epochs):
                self.epoch(loss_fn, epoch, backward, clip)
                if has_val:
                    net = self.avg.module if self.avg is not None else module
                    val = self.validate(net, val_loss_fn, epoch)
                    history["val_loss"].append(val)
                    if first == math.inf:
                        first = val
                    if val < best:
                        best, history["best_epoch"] = val, epoch
                        best_state = copy.deepcopy(net.state_dict())
                    if val < mark - tol * max(first - best, 0.0):
                        mark, bad = val, 0
                    else:
                        bad += 1
                        if self.plateau and bad % max(1, patience // 4) == 0:
                            for group in self.opt.param_groups:
                                group["lr"] *= 0.5
                    bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}", val=f"{val:.3f}", best=f"{best:.3f}")
                else:
                    bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}")
                bar.update(1)
                if has_val and bad >= patience and epoch + 1 >= min_epochs:
                    break
                if max_time is not None and time.perf_counter() - t0 > max_time:
                    history["stopped"] = "max_time"
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        elif self.avg is not None:
            module.load_state_dict(self.avg.module.state_dict())
        module.eval()
        history["seconds"] = time.perf_counter() - t0
        history["best_val_loss"] = best if has_val else None
        return history


@torch.no_grad()
def _validate(net: nn.Module, loss_fn: Callable, chunks, epoch: int) -> float:
    net.eval()
    total, count = 0.0, 0
    for b, batch in chunks:
        terms = _terms(loss_fn(net, batch))
        _check_finite(terms, epoch, b, "validation")
        total += float(_total(terms))
        count += 1
    net.train()
    return total / max(count, 1)
