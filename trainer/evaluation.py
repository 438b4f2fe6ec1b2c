"""Wrappers for evaluation and prediction hooks run on every replica.

At the end of the evaluation data some replicas receive an empty batch (fewer examples than
replicas are left). Evaluation hooks never see one: an empty batch breaks oneDNN convolutions on
CPU, which return their input unchanged, and a hook's metrics gain nothing from it anyway.
Prediction cannot skip: every replica must return outputs of one structure for `strategy.gather`.
"""

import tensorflow as tf


def _batch_size(batch):
    return tf.shape(tf.nest.flatten(batch)[0])[0]


def skip_if_empty(hook):
    """Wraps an evaluation hook so that a replica with an empty batch does nothing."""
    def run_unless_empty(batch):
        if _batch_size(batch) > 0:
            hook(batch)
    return run_unless_empty


def pad_by_one(hook):
    """Wraps a prediction hook: runs it on the batch plus one zero example, then drops that one.

    The extra example keeps every replica's batch non-empty without a branch, so the outputs of
    all replicas keep one structure for `strategy.gather`.
    """
    def run_padded(batch):
        size = _batch_size(batch)
        padded = tf.nest.map_structure(
            lambda t: tf.concat([t, tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)], 0),
            batch)
        return tf.nest.map_structure(lambda output: output[:size], hook(padded))
    return run_padded
