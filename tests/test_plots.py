"""Every plot returns a Figure with the expected axes and writes a non-empty PNG."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from telescope.plots import corner, coverage_plot, sbc_histograms, training_curves

PNG_MAGIC = b"\x89PNG"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:4] == PNG_MAGIC


@pytest.fixture
def samples():
    g = torch.Generator().manual_seed(0)
    return torch.randn(600, 3, generator=g), torch.randn(800, 3, generator=g) * 1.2 + 0.3


def test_corner_with_reference_and_truth(tmp_path, samples):
    s, r = samples
    path = tmp_path / "sub" / "corner.png"  # parent folder is created
    fig = corner(s, reference=r, truth=torch.zeros(3), labels=["a", "b", "c"], path=path, bins=20)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # lower triangle + diagonal of a 3 x 3 grid
    assert _is_png(path)
    # the bottom-left panel is (x = a, y = c)
    bottom_left = [ax for ax in fig.axes if ax.get_xlabel() == "a" and ax.get_ylabel() == "c"]
    assert len(bottom_left) == 1


def test_corner_numpy_one_dimension_and_limits(tmp_path, samples):
    s, _ = samples
    fig = corner(s[:, 0].numpy(), truth=[0.0], path=tmp_path / "c1.png")
    assert len(fig.axes) == 1 and _is_png(tmp_path / "c1.png")
    fig = corner(s[:, :2], limits=[(-5, 5), (-4, 4)])
    assert len(fig.axes) == 3
    assert fig.axes[-1].get_xlim() == (-4.0, 4.0)


def test_corner_drops_non_finite_rows_with_warning(samples):
    s, _ = samples
    s = s.clone()
    s[0, 1] = float("nan")
    with pytest.warns(UserWarning, match="dropped 1 of 600"):
        fig = corner(s)
    assert len(fig.axes) == 6


def test_corner_bad_inputs_name_the_argument(samples):
    s, r = samples
    with pytest.raises(ValueError, match="reference"):
        corner(s, reference=r[:, :2])
    with pytest.raises(ValueError, match="truth"):
        corner(s, truth=[0.0, 1.0])
    with pytest.raises(ValueError, match="labels"):
        corner(s, labels=["a"])
    with pytest.raises(ValueError, match="limits"):
        corner(s, limits=[(0, 1)] * 2)
    with pytest.raises(ValueError, match="samples"):
        corner(torch.empty(0, 3))
    with pytest.raises(ValueError, match="bins"):
        corner(s, bins=1)


def test_coverage_plot_single_and_several_curves(tmp_path):
    a = np.linspace(0, 1, 101)
    fig = coverage_plot(a, a, label="exact", path=tmp_path / "cov.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1 and _is_png(tmp_path / "cov.png")
    curves = {"NPE": torch.tensor(a**2), "ML-NPE": (a[::2], np.sqrt(a[::2]))}
    fig = coverage_plot(a, curves, n_pairs=300, path=tmp_path / "cov2.png")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and _is_png(tmp_path / "cov2.png")
    assert len(ax.lines) == 3  # diagonal + two curves
    assert [t.get_text() for t in ax.get_legend().get_texts()][1:] == ["NPE", "ML-NPE"]


def test_coverage_plot_bad_inputs():
    a = np.linspace(0, 1, 11)
    with pytest.raises(ValueError, match="coverage must have the shape of alphas"):
        coverage_plot(a, a[:5])
    with pytest.raises(ValueError, match="alphas"):
        coverage_plot(a * 2, a)
    with pytest.raises(ValueError, match="n_pairs"):
        coverage_plot(a, a, n_pairs=0)


def test_training_curves(tmp_path):
    history = {"train_loss": [3.0, 2.0, 1.5, 1.2], "val_loss": [3.2, 2.3, 2.1, 2.2], "best_epoch": 2,
               "loss_level_1": [1.0, 0.5, 0.4, 0.3], "config": {"lr": 1e-3}}
    fig = training_curves(history, tmp_path / "train.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1 and _is_png(tmp_path / "train.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["train", "validation", "loss_level_1"] and "best epoch (2)" in labels
    fig = training_curves({"train_loss": torch.tensor([1.0, 0.5])}, log_scale=True)
    assert fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="train_loss"):
        training_curves({"val_loss": [1.0]})
    with pytest.raises(ValueError, match="best_epoch"):
        training_curves({"train_loss": [1.0], "best_epoch": -1})
    with pytest.raises(TypeError, match="history"):
        training_curves([1.0, 2.0])


def test_sbc_histograms(tmp_path):
    g = torch.Generator().manual_seed(1)
    ranks = torch.randint(0, 101, (400, 5), generator=g)
    fig = sbc_histograms(ranks, 100, tmp_path / "sbc.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 5 and _is_png(tmp_path / "sbc.png")
    fig = sbc_histograms(ranks[:, :2].numpy(), 100, bins=7, labels=["x", "y"])
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "y"
    with pytest.raises(ValueError, match="ranks must be integers"):
        sbc_histograms(ranks, 50)
    with pytest.raises(ValueError, match="bins"):
        sbc_histograms(ranks, 100, bins=500)
    with pytest.raises(ValueError, match="labels"):
        sbc_histograms(ranks, 100, labels=["a"])
