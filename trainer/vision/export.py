"""Exporting a trained module for inference, as a SavedModel that needs only TensorFlow.

The serving signature takes the raw uint8 images and returns class probabilities, so a client
does not need to know that the model expects floats in [0, 1]:

    model = tf.saved_model.load("runs/cifar10-functional/export")
    probabilities = model.signatures["serving_default"](images=uint8_batch)["probabilities"]
"""

import shutil
import tempfile

import tensorflow as tf

import data


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

    Under multi-worker training every worker must call it: saving reads the variables, which can
    be a collective (the TensorFlow multi-worker guide saves on every worker). Only the chief
    writes to `path`; the others write to a temporary directory that they delete.
    """
    target = path if is_chief else tempfile.mkdtemp(prefix="export-")
    serving = _Serving(module, tuple(input_shape))
    tf.saved_model.save(serving, target, signatures={"serving_default": serving.serve})
    if not is_chief:
        shutil.rmtree(target, ignore_errors=True)
    return path
