"""Reusable layers: the Conv -> BatchNorm -> ReLU block of the `functional` CNN."""

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
