"""TensorBoard summaries written with TensorFlow alone, and the pictures the loggers draw.

`tf.summary.scalar`, `tf.summary.image` and `tf.summary.text` are TensorBoard's code: without the
`tensorboard` package (TensorFlow 2.21 no longer installs it) they raise `TBNotInstalledError`.
Each of them is thin: it writes one tensor with TensorFlow's own `tf.summary.write`, tagged with a
`SummaryMetadata` that names the TensorBoard plugin (the tab) that shows it. The functions here do
the same, so a run writes the event files TensorBoard reads whether or not it is installed;
`pip install tensorboard` is needed only to look at them.

The pictures are drawn with tf ops, not matplotlib (an optional extra here):

    framed(images, correct)   a green frame around each correct prediction, a red one otherwise
    heat_map(matrix)          a confusion matrix as squares from white (0%) to dark blue (100%)
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2  # pylint: disable=g-direct-tensorflow-import

GREEN = (0.0, 0.75, 0.0)
RED = (0.9, 0.0, 0.0)
_WHITE = (1.0, 1.0, 1.0)
_DARK_BLUE = (0.03, 0.19, 0.42)
_HEAT_MAP_PIXELS = 256  # About this many pixels per side, whatever the number of classes.


def _metadata(plugin_name: str, data_class: str) -> tf.compat.v1.SummaryMetadata:
    """Says which TensorBoard plugin shows a summary and how its tensor is laid out."""
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=plugin_name),
        data_class=data_class)


def start() -> None:
    """Marks the start of a run's events. TensorBoard's Python loader (`--load_fast=false`,
    `EventAccumulator`) takes the first `SessionLog` START of a run as its start and only the
    later ones as restarts: without this marker a run's first `restart` would be ignored there."""
    _session_start(0)


def restart(step: int) -> None:
    """Tells TensorBoard that the run restarts at `step`: it then drops the events of that run
    with a step >= `step` written before this point (a killed run's orphaned tail), so the charts
    of a resumed run show every step once. The marker is an `Event` with a `SessionLog` START,
    the signal TensorBoard has always honoured (a run's first one marks its `start`)."""
    _session_start(step)


def _session_start(step: int) -> None:
    """Writes a `SessionLog` START event; TensorFlow 2 writes one only through `import_event`."""
    event = tf.compat.v1.Event(step=step, session_log=tf.compat.v1.SessionLog(
        status=tf.compat.v1.SessionLog.START))
    summary_ops_v2.import_event(tf.constant(event.SerializeToString()))


def scalar(tag: str, value: float, step: int) -> None:
    """Writes one number to the default writer (the Scalars tab)."""
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                     metadata=_metadata("scalars", "DATA_CLASS_SCALAR"))


def text(tag: str, markdown: str, step: int) -> None:
    """Writes a string to the default writer; the Text tab renders it as Markdown."""
    tf.summary.write(tag, tf.constant(markdown), step=step,
                     metadata=_metadata("text", "DATA_CLASS_TENSOR"))


def images(tag: str, batch: tf.Tensor, step: int) -> None:
    """Writes float images [N, height, width, channels] in [0, 1] to the default writer.

    The Images tab's format: a string vector of width, height, then one PNG per image.
    """
    pixels = tf.image.convert_image_dtype(batch, tf.uint8, saturate=True)
    height, width = pixels.shape[1:3]
    pngs = [tf.image.encode_png(image) for image in pixels]
    tf.summary.write(tag, tf.stack([str(width), str(height), *pngs]), step=step,
                     metadata=_metadata("images", "DATA_CLASS_BLOB_SEQUENCE"))


def framed(batch: tf.Tensor, correct: np.ndarray, width: int = 2) -> tf.Tensor:
    """Frames each image in green where `correct` is True and in red where it is False.

    Args:
        batch: float images [N, height, width, 1 or 3] in [0, 1].
        correct: N booleans.
        width: the frame's width in pixels.

    Returns:
        RGB images [N, height + 2 * width, width + 2 * width, 3].
    """
    rgb = batch if batch.shape[-1] == 3 else tf.image.grayscale_to_rgb(batch)
    paddings = [[0, 0], [width, width], [width, width], [0, 0]]
    inside = tf.pad(tf.ones_like(rgb[..., :1]), paddings)  # 1 on the image, 0 on the frame.
    colors = tf.where(tf.constant(correct)[:, None], GREEN, RED)[:, None, None, :]
    return tf.pad(rgb, paddings) * inside + colors * (1.0 - inside)


def heat_map(matrix: np.ndarray) -> tf.Tensor:
    """Draws a confusion matrix (rows: true class) as one RGB image [1, height, width, 3].

    Each row is divided by its true class's count, so a cell's shade is the fraction of that
    class predicted as the column's class, whatever the class sizes; each cell is a square of
    pixels, so that ten classes are not ten pixels wide.
    """
    counts = tf.constant(matrix, tf.float32)
    fractions = counts / tf.maximum(tf.reduce_sum(counts, axis=1, keepdims=True), 1.0)
    white, dark_blue = tf.constant(_WHITE), tf.constant(_DARK_BLUE)
    rgb = white + fractions[..., None] * (dark_blue - white)  # [classes, classes, 3]
    cell = max(1, _HEAT_MAP_PIXELS // len(matrix))
    return tf.repeat(tf.repeat(rgb, cell, axis=0), cell, axis=1)[None]


def confusion_table(matrix: np.ndarray, class_names: list[str]) -> str:
    """The confusion matrix as a Markdown table of counts, rows = true class."""
    lines = ["| true \\ predicted | " + " | ".join(class_names) + " |",
             "|---" * (len(class_names) + 1) + "|"]
    for name, row in zip(class_names, matrix):
        lines.append(f"| **{name}** | " + " | ".join(str(count) for count in row) + " |")
    return "\n".join(lines)
