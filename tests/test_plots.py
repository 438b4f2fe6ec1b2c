"""Plots of a finished run: confusion counts, PNG files, and runs without matplotlib."""

import sys

import numpy as np

from trainer import plots

HISTORY = [{"train_loss": 2.0, "train_accuracy": 0.3, "val_loss": 1.8, "val_accuracy": 0.4},
           {"train_loss": 1.5, "train_accuracy": 0.5, "val_loss": 1.6, "val_accuracy": 0.45}]


def test_confusion_matrix_counts_true_by_predicted():
    matrix = plots.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_plots_are_png_files(tmp_path):
    written = plots.save_run_plots(str(tmp_path), HISTORY, [0, 1, 1], [0, 1, 0], ["cat", "dog"])
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["confusion_matrix.png", "curves.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(4) == b"\x89PNG"


def test_without_matplotlib_runs_go_on_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # Makes `import matplotlib` fail.
    assert plots.save_run_plots(str(tmp_path), HISTORY, [0], [0], ["cat", "dog"]) == []
    assert list(tmp_path.iterdir()) == []
