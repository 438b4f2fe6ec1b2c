"""PNG pictures of a finished run, for people without TensorBoard.

    curves.png            training and validation loss and accuracy per epoch
    confusion_matrix.png  test confusion matrix, rows = true class, columns = predicted class
    lr_find.png           the learning-rate finder's loss against the learning rate

matplotlib is an optional extra (`pip install ".[plots]"`); without it runs still work and say
how to get the plots.
"""

import io

from absl import logging
import numpy as np

from trainer import files


def _pyplot():
    """matplotlib.pyplot with a file-only backend, or None if matplotlib is not installed."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
    except ImportError:
        logging.info("plots skipped: matplotlib is not installed (pip install \".[plots]\")")
        return None
    matplotlib.use("Agg")  # No display needed.
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    return plt


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] pairs."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def plot_curves(history: list[dict[str, float]], path: str) -> str | None:
    """Saves loss and accuracy per epoch (train and, where present, val); returns the path.

    Each curve has a point for every epoch that logged it: a run stopped mid-epoch (max_time,
    max_steps between validations) may end with an epoch without `val_*`.
    """
    plt = _pyplot()
    if plt is None or not history:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for stage in ("train", "val"):
            key = f"{stage}_{metric}"
            points = [(logs.get("epoch", number), logs[key])
                      for number, logs in enumerate(history, start=1) if key in logs]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        axis.grid(alpha=0.3)
    _save(figure, path, plt)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str) -> str | None:
    """Saves the confusion matrix with class names and counts; returns the path."""
    plt = _pyplot()
    if plt is None:
        return None
    size = max(5, 0.5 * len(class_names))
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axis.set_title(f"test confusion matrix (accuracy {accuracy:.3f})")
    if len(class_names) <= 20:  # Counts stay readable up to about 20 classes.
        for (row, col), count in np.ndenumerate(matrix):
            axis.text(col, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > matrix.max() / 2 else "black")
    _save(figure, path, plt)
    return path


def _save(figure, path, plt):
    """Saves `figure` as a PNG at `path`; a kill leaves the old picture or the new one."""
    figure.tight_layout()
    picture = io.BytesIO()
    figure.savefig(picture, dpi=100, format="png")
    plt.close(figure)
    files.write_bytes(path, picture.getvalue())


def plot_learning_rate_search(learning_rates: list[float], losses: list[float],
                              smoothed_losses: list[float], suggestion: float | None,
                              path: str) -> str | None:
    """Saves the loss (raw and smoothed) against the learning rate, on a log axis, with the
    suggested rate marked; returns the path."""
    plt = _pyplot()
    if plt is None or not losses:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(learning_rates, losses, color="tab:blue", alpha=0.3, label="loss")
    axis.plot(learning_rates, smoothed_losses, color="tab:blue", label="smoothed loss")
    if suggestion is not None:
        axis.axvline(suggestion, color="tab:red", linestyle="--",
                     label=f"suggested learning rate {suggestion:.3g}")
    # The blow-up at the end would squash the interesting part: show up to 1.5x the first loss.
    finite = [value for value in losses if np.isfinite(value)]
    axis.set_ylim(min(finite) * 0.95, max(smoothed_losses[0], losses[0]) * 1.5)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.set_title("learning-rate finder")
    axis.legend()
    axis.grid(alpha=0.3)
    _save(figure, path, plt)
    return path
