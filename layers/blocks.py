"""Reusable layers: the Conv -> BatchNorm -> ReLU block and the classifier head of both CNNs."""

import tensorflow as tf


class ConvBNReLU(tf.keras.layers.Layer):
    """Conv2D without bias, then BatchNormalization, then ReLU.

    The convolution keeps its bias (as the tutorial's model does) so that parameter counts match
    the reference table, even though BatchNorm's offset makes it redundant.

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


class ClassifierHead(tf.keras.layers.Layer):
    """Flatten -> [Dropout] -> Dense(hidden, relu) -> [Dropout] -> Dense(classes) logits.

    The logits layer computes in float32 under any mixed-precision policy: softmax and the loss
    need float32's range. Dropout (only when `dropout` > 0) is active in training only.

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
        self.dropout1 = tf.keras.layers.Dropout(dropout) if dropout else None
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu")
        self.dropout2 = tf.keras.layers.Dropout(dropout) if dropout else None
        self.logits = tf.keras.layers.Dense(num_classes, dtype="float32")

    def call(self, features, training=False):
        x = self.flatten(features)
        if self.dropout1:
            x = self.dropout1(x, training=training)
        x = self.hidden(x)
        if self.dropout2:
            x = self.dropout2(x, training=training)
        return self.logits(x)
