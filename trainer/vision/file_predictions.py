"""Classifying image files with an exported model (`--predict_files`), into `predictions.csv`.

    path,predicted,predicted_name,probability
    new/cat_1.jpg,0,cat,0.912345
    new/dog_7.png,1,dog,0.604398

The model is the SavedModel of trainer/vision/export.py: it takes uint8 images of the shape it
was trained on, so each file is decoded, converted (grayscale to RGB or the other way) and
resized to that shape exactly as the image folder source does in training (data/image_files.py).
It needs no `Trainer`, no strategy and no checkpoint, only the export and, for the class names,
the `label.labels.txt` the run wrote beside it:

    rows = file_predictions.predict_files("runs/pets-functional/export", "new/*.jpg")
"""

import csv
import io
import os

import numpy as np
import tensorflow as tf

from data import image_files
from trainer import files

COLUMNS = ("path", "predicted", "predicted_name", "probability")
LABELS_FILE = "label.labels.txt"  # One class name per line, as TFDS names its label files.


def write_labels(model_dir: str, class_names: list[str]) -> str:
    """Writes `<model_dir>/label.labels.txt`, the names of the export's classes; returns its path."""
    path = os.path.join(model_dir, LABELS_FILE)
    files.write_text(path, "".join(f"{name}\n" for name in class_names))
    return path


def read_labels(export_dir: str) -> list[str] | None:
    """The class names in `label.labels.txt` beside `export_dir`, or None if there is none."""
    path = os.path.join(os.path.dirname(os.path.normpath(export_dir)), LABELS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def predict_files(export_dir: str, pattern: str, *, class_names: list[str] | None = None,
                  batch_size: int = 64) -> list[tuple[str, int, str, float]]:
    """Classifies the image files `pattern` names (a glob, or a folder searched recursively).

    Args:
        export_dir: the exported SavedModel, e.g. `<model_dir>/export`.
        pattern: which files; those that are not images are skipped.
        class_names: the classes' names; None: read from `label.labels.txt` beside `export_dir`,
            or the class numbers if there is no such file.
        batch_size: images per call of the model.

    Returns:
        One (path, predicted class, its name, its probability) per image, sorted by path.

    Raises:
        ValueError: if `pattern` names no image, or a file cannot be decoded (named).
    """
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    height, width, channels = serve.structured_input_signature[1]["images"].shape[1:]
    paths, _ = image_files.find_images(pattern)
    images = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: image_files.decode(path, channels=channels, size=(height, width)),
        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    try:
        probabilities = np.concatenate(
            [serve(images=batch)["probabilities"].numpy() for batch in images])
    except tf.errors.InvalidArgumentError:
        image_files.check_images(paths)  # Raises, naming the file that does not decode.
        raise
    names = class_names or read_labels(export_dir) or [
        str(number) for number in range(probabilities.shape[-1])]
    predicted = np.argmax(probabilities, axis=-1)
    return [(path, int(guess), names[guess], float(row[guess]))
            for path, guess, row in zip(paths, predicted, probabilities)]


def write_file_predictions(export_dir: str, pattern: str, path: str, *,
                           class_names: list[str] | None = None) -> int:
    """Writes `predict_files(export_dir, pattern)` to the CSV file `path` (atomically); returns
    the number of rows."""
    rows = predict_files(export_dir, pattern, class_names=class_names)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for file_path, guess, name, probability in rows:
        writer.writerow([file_path, guess, name, f"{probability:.6f}"])
    files.write_text(path, text.getvalue())
    return len(rows)
