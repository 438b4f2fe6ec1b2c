"""Exporting a trained module for inference, as a SavedModel that needs only TensorFlow.

The serving signature takes the raw uint8 images and returns class probabilities, so a client
does not need to know that the model expects floats in [0, 1]:

    model = tf.saved_model.load("runs/cifar10-functional/export")
    probabilities = model.signatures["serving_default"](images=uint8_batch)["probabilities"]
"""

import shutil
import tempfile

import numpy as np
import tensorflow as tf

import data
from trainer import faults
from trainer import files


class _Serving(tf.Module):
    """Wraps the module with the pre- and post-processing of the serving signature."""

    def __init__(self, module, input_shape):
        super().__init__()
        self.module = module
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, *input_shape], tf.uint8, "images")])

    def _serve(self, images):
        logits = self.module(data.scale_pixels(images), training=False)  # As in training.
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}


def export_for_serving(module, input_shape: tuple[int, ...], path: str, *,
                       is_chief: bool = True) -> str:
    """Writes `module` as a SavedModel at `path` with a uint8 -> probabilities signature.

    The chief writes a new directory beside `path` and then switches `path` (a symbolic link) to
    it in one step, so a kill during the export leaves the previous export whole. Under
    multi-worker training every worker must call this: saving reads the variables, which can be a
    collective (the TensorFlow multi-worker guide saves on every worker); the others write to a
    temporary directory that they delete.
    """
    serving = _Serving(module, tuple(input_shape))

    def save(directory):
        tf.saved_model.save(serving, directory, signatures={"serving_default": serving.serve})
        faults.reached("export")

    if is_chief:
        files.replace_directory(path, save)
    else:
        temporary = tempfile.mkdtemp(prefix="export-")
        save(temporary)
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def all_finite(module) -> bool:
    """Whether every weight of `module` is finite: a diverged model is not worth serving."""
    return all(np.all(np.isfinite(weight)) for weight in module.get_weights())
