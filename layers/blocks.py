"""Reusable layers: the Conv -> BatchNorm -> ReLU block, a Dropout whose mask differs on every
replica, and the classifier head of both CNNs."""

import tensorflow as tf


class ConvBNReLU(tf.keras.layers.Layer):
    """Conv2D, then BatchNormalization, then ReLU.

    The convolution keeps its bias, as the tutorial's model does, so that the parameter counts
    match the tutorial's, even though BatchNorm's offset makes the bias redundant.

    Args:
        filters: number of output channels.
        kernel_size: side of the square convolution kernel.
        padding: "valid" or "same".
        sync_batchnorm: if True, batch statistics are computed over the global batch across all
            replicas (`BatchNormalization(synchronized=True)`), so N replicas normalize exactly
            like one device; if False, each replica normalizes over its own slice.
    """

    def __init__(self, filters: int, kernel_size: int, *, padding: str = "valid",
                 sync_batchnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.conv = tf.keras.layers.Conv2D(filters, kernel_size, padding=padding)
        self.norm = tf.keras.layers.BatchNormalization(synchronized=sync_batchnorm)
        self.relu = tf.keras.layers.ReLU()

    def call(self, inputs, training=False):
        return self.relu(self.norm(self.conv(inputs), training=training))


class ReplicaDropout(tf.keras.layers.Dropout):
    """Keras' `Dropout`, drawing a different mask on every replica of a `tf.distribute` strategy.

    Keras' Dropout draws from a seed generator whose state is one variable mirrored on every
    replica; each replica advances it identically, so under N replicas every replica drops the
    same positions of its slice of the batch: N copies of one draw instead of independent draws
    for the whole global batch. Here the drawn seed is folded with the replica's id (unique
    across workers), so the draws differ, and stay a pure function of (seed state, replica):
    a run resumed from a checkpoint (which holds the seed state) redraws the same masks.
    """

    def call(self, inputs, training=False):
        if not training or not self.rate:
            return inputs
        seed = tf.cast(self.seed_generator.next(), tf.int64)  # Advances as Keras' Dropout does.
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed,
                                                    noise_shape=self.noise_shape)


class ClassifierHead(tf.keras.layers.Layer):
    """Flatten -> [Dropout] -> Dense(hidden, relu) -> [Dropout] -> Dense(classes) logits.

    The logits layer computes in float32 under any mixed-precision policy: softmax and the loss
    need float32's range. Dropout (only when `dropout` > 0; a `ReplicaDropout`, so each replica
    draws its own mask) is active in training only.

    Args:
        hidden: units of the hidden dense layer.
        num_classes: number of logits.
        dropout: fraction of inputs dropped before each dense layer, in [0, 1).
    """

    def __init__(self, hidden: int, num_classes: int, *, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout ({dropout}) must be in [0, 1)")
        self.flatten = tf.keras.layers.Flatten()
        self.dropout1 = ReplicaDropout(dropout) if dropout else None
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu")
        self.dropout2 = ReplicaDropout(dropout) if dropout else None
        self.logits = tf.keras.layers.Dense(num_classes, dtype="float32")

    def call(self, features, training=False):
        x = self.flatten(features)
        if self.dropout1:
            x = self.dropout1(x, training=training)
        x = self.hidden(x)
        if self.dropout2:
            x = self.dropout2(x, training=training)
        return self.logits(x)
