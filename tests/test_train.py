import math

import pytest
import torch
from torch import nn

from telescope.training import NonFiniteLossError, train


def _linear_data(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return {"x": x, "y": y}


def _mse(net, batch):
    return ((net(batch["x"]) - batch["y"]) ** 2).mean()


def test_train_fits_linear_regression_and_stops_early():
    net = nn.Linear(3, 1)
    hist = train(net, _mse, _linear_data(), lr=1e-2, max_epochs=500, patience=5, progress_bar=False)
    assert torch.allclose(net.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.03)
    assert hist["epochs"] < 500  # early stopping really stops
    assert hist["val_loss"][hist["best_epoch"]] == pytest.approx(min(hist["val_loss"]))


def test_ema_returns_averaged_weights_with_current_batch_norm_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    data = _linear_data()
    data["x"] = data["x"] + 3.0  # BatchNorm's running mean must move away from 0
    hist = train(net, _mse, data, lr=1e-2, max_epochs=60, patience=60, ema=0.9, progress_bar=False)
    assert hist["best_val_loss"] < 0.05  # the averaged network fits (noise variance 0.01)
    # the returned buffers follow training, not the copies made when averaging started
    assert net[1].running_mean.abs().mean() > 0.5
    net.eval()
    with torch.no_grad():
        assert _mse(net, data).item() == pytest.approx(hist["best_val_loss"], rel=0.5)


def test_short_ema_fit_is_not_stuck_at_the_initial_weights():
    # with a fixed decay of 0.999 from step one, 30 steps would leave ~97% of the weight on the first iterate
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    data = _linear_data()
    init = _mse(net, data).item()
    hist = train(net, _mse, data, lr=5e-2, batch_size=200, max_epochs=3, patience=3, ema=0.999, progress_bar=False)
    assert hist["best_val_loss"] < 0.5 * init  # the plain mean of 27 iterates: 2.7 against 7.5; fixed decay: ~7.3


def test_best_weights_are_restored():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    data = _linear_data()
    # a huge learning rate makes later epochs worse; the best epoch's weights must come back
    hist = train(net, _mse, data, lr=1.0, clip=None, max_epochs=30, patience=30, progress_bar=False, seed=1)
    with torch.no_grad():
        # recompute the validation loss of the restored weights on the same split
        from telescope.training import split
        _, val = split(data, 0.1, torch.Generator().manual_seed(1))
        assert _mse(net, val).item() == pytest.approx(hist["best_val_loss"], rel=1e-4)


def test_non_finite_loss_names_epoch_batch_and_term():
    net = nn.Linear(3, 1)

    def bad(net, batch):
        return {"nll": (net(batch["x"]) ** 2).mean(), "penalty": torch.tensor(float("nan"))}

    with pytest.raises(NonFiniteLossError, match="penalty.*epoch 0, batch 0"):
        train(net, bad, _linear_data(), progress_bar=False)


def test_groups_are_batched_together_and_seeded():
    d1, d2 = _linear_data(1000, 0), _linear_data(100, 1)
    seen = []

    def loss(net, batch):
        assert isinstance(batch, list) and len(batch) == 2
        seen.append((batch[0]["x"].shape[0], batch[1]["x"].shape[0]))
        return _mse(net, batch[0]) + _mse(net, batch[1])

    torch.manual_seed(0)
    a = nn.Linear(3, 1)
    h1 = train(a, loss, [d1, d2], batch_size=100, max_epochs=3, patience=10, progress_bar=False, seed=3)
    assert seen[0] == (100, 10)  # the small group gets proportionally smaller batches
    torch.manual_seed(0)
    b = nn.Linear(3, 1)
    h2 = train(b, loss, [d1, d2], batch_size=100, max_epochs=3, patience=10, progress_bar=False, seed=3)
    assert h1["train_loss"] == h2["train_loss"]


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError, match="same first dimension"):
        train(nn.Linear(3, 1), _mse, {"x": torch.zeros(5, 3), "y": torch.zeros(4, 1)}, progress_bar=False)


def test_cosine_schedule_anneals_the_learning_rate_to_zero():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    hist = train(net, _mse, _linear_data(), lr=5e-2, max_epochs=30, patience=30, schedule="cosine",
                 progress_bar=False)
    assert torch.allclose(net.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.03)
    lr = hist["lr"]
    assert len(lr) == 30 and all(a > b for a, b in zip(lr, lr[1:]))
    assert lr[14] == pytest.approx(5e-2 * 0.5 * (1 + math.cos(math.pi * 15 / 30)), rel=1e-6)
    assert lr[-1] < 1e-12
    with pytest.raises(ValueError, match="schedule"):
        train(nn.Linear(3, 1), _mse, _linear_data(), schedule="linear", progress_bar=False)


def test_ema_window_is_capped_in_epochs():
    # 900 training rows in batches of 300: 3 steps per epoch, so a 2-epoch cap gives a window of 6 steps
    data = _linear_data(1000)
    kw = {"lr": 1e-2, "batch_size": 300, "max_epochs": 2, "patience": 2, "progress_bar": False}
    assert train(nn.Linear(3, 1), _mse, data, ema=0.99, ema_max_epochs=2, **kw)["ema"] == pytest.approx(1 - 1 / 6)
    assert train(nn.Linear(3, 1), _mse, data, ema=0.5, ema_max_epochs=2, **kw)["ema"] == 0.5  # already shorter
    assert train(nn.Linear(3, 1), _mse, data, ema=0.99, **kw)["ema"] == 0.99  # no cap by default
    with pytest.raises(ValueError, match="ema_max_epochs"):
        train(nn.Linear(3, 1), _mse, data, ema=0.99, ema_max_epochs=0, **kw)
    with pytest.raises(ValueError, match="ema must be"):
        train(nn.Linear(3, 1), _mse, data, ema=1.5, **kw)


def test_tol_stops_a_creeping_loss_sooner_and_restores_the_lowest_loss():
    data = _linear_data()
    kw = {"lr": 1e-2, "max_epochs": 400, "patience": 10, "progress_bar": False, "clip": None}
    # fits in a few epochs, then the validation loss keeps falling by tiny amounts (Adam's steps shrink)
    plain = train(nn.Linear(3, 1), _mse, data, **kw)
    net = nn.Linear(3, 1)
    tolerant = train(net, _mse, data, tol=0.01, **kw)
    assert tolerant["epochs"] < plain["epochs"]
    assert tolerant["epochs"] >= kw["patience"] + 1
    # the weights returned are those of the lowest validation loss seen, even after an improvement below tol
    assert tolerant["best_val_loss"] == pytest.approx(min(tolerant["val_loss"]))
    assert tolerant["val_loss"][tolerant["best_epoch"]] == min(tolerant["val_loss"])
    with pytest.raises(ValueError, match="tol"):
        train(nn.Linear(3, 1), _mse, data, tol=-1.0, **kw)


def test_tol_zero_keeps_the_plain_patience_rule():
    data = _linear_data()
    h = train(nn.Linear(3, 1), _mse, data, lr=1e-2, max_epochs=500, patience=5, tol=0.0, progress_bar=False)
    assert h["epochs"] == h["best_epoch"] + 1 + 5


def test_plateau_schedule_halves_the_learning_rate_when_progress_stalls():
    data = _linear_data()
    h = train(nn.Linear(3, 1), _mse, data, lr=1e-2, max_epochs=500, patience=8, tol=0.01, schedule="plateau",
              progress_bar=False)
    lr = h["lr"]
    assert lr[0] == 1e-2 and min(lr) < lr[0]
    assert all(b in (a, a / 2) or b == pytest.approx(a / 2) for a, b in zip(lr, lr[1:]))  # only halvings
    assert h["epochs"] < 500
