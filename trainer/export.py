"""Exporting a trained module for inference, as a SavedModel that needs only TensorFlow.

The serving signature takes the raw uint8 images and returns class probabilities, so a client
does not need to know that the model expects floats in [0, 1]:

    model = tf.saved_model.load("runs/cifar10-functional/export")
    probabilities = model.signatures["serving_default"](images=uint8_batch)["probabilities"]
"""

import tensorflow as tf


class _Serving(tf.Module):
    """Wraps the module with the pre- and post-processing of the serving signature."""

    def __init__(self, module, input_shape):
        super().__init__()
        self.module = module
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, *input_shape], tf.uint8, "images")])

    def _serve(self, images):
        logits = self.module(tf.cast(images, tf.float32) / 255.0, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}


def export_for_serving(module, input_shape: tuple[int, ...], path: str) -> str:
    """Writes `module` as a SavedModel at `path` with a uint8 -> probabilities signature."""
    serving = _Serving(module, tuple(input_shape))
    tf.saved_model.save(serving, path, signatures={"serving_default": serving.serve})
    return path
