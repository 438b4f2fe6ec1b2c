"""Plots of a finished run: confusion counts, PNG files, and runs without matplotlib."""

import sys

import numpy as np

from trainer.vision import plots

HISTORY = [{"train_loss": 2.0, "train_accuracy": 0.3, "val_loss": 1.8, "val_accuracy": 0.4},
           {"train_loss": 1.5, "train_accuracy": 0.5, "val_loss": 1.6, "val_accuracy": 0.45}]


def test_confusion_matrix_counts_true_by_predicted():
    matrix = plots.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_plots_are_png_files(tmp_path):
    matrix = plots.confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=2)
    written = [plots.plot_curves(HISTORY, str(tmp_path / "curves.png")),
               plots.plot_confusion_matrix(matrix, ["cat", "dog"], str(tmp_path / "matrix.png"))]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(4) == b"\x89PNG"


def test_without_matplotlib_runs_go_on_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # Makes `import matplotlib` fail.
    assert plots.plot_curves(HISTORY, str(tmp_path / "curves.png")) is None
    assert plots.plot_confusion_matrix(np.eye(2), ["cat", "dog"], str(tmp_path / "m.png")) is None
    assert list(tmp_path.iterdir()) == []
