"""`ImageClassifier`: the tutorial's task as a `Module` around either CNN."""

import tensorflow as tf

from trainer import module


class ImageClassifier(module.Module):
    """Classifies images: sparse categorical cross-entropy on logits, accuracy, Adam.

    Args:
        network: a Keras model mapping a batch of images to logits, e.g. `layers.build_cnn(...)`.
        learning_rate: Adam's learning rate.
    """

    def __init__(self, network: tf.keras.Model, *, learning_rate: float = 3e-4, **kwargs):
        super().__init__(**kwargs)
        if learning_rate <= 0:
            raise ValueError(f"learning_rate ({learning_rate}) must be positive")
        self.network = network
        self.learning_rate = learning_rate

    def call(self, images, training=False):
        return self.network(images, training=training)

    def training_step(self, batch):
        images, labels = batch
        logits = self(images, training=True)
        per_example_loss = self._per_example_loss(labels, logits)
        self.log("loss", per_example_loss)
        self.log("accuracy", _correct(labels, logits))
        return self.average_over_global_batch(per_example_loss)

    def validation_step(self, batch):
        self._evaluate(batch)

    def test_step(self, batch):
        self._evaluate(batch)

    def predict_step(self, batch):
        images, _ = batch
        return tf.nn.softmax(self(images, training=False))

    def configure_optimizers(self):
        return tf.keras.optimizers.Adam(learning_rate=self.learning_rate)

    def _evaluate(self, batch):
        """Logs loss and accuracy per example, so the means stay exact for a partial last batch."""
        images, labels = batch
        logits = self(images, training=False)
        self.log("loss", self._per_example_loss(labels, logits))
        self.log("accuracy", _correct(labels, logits))

    def _per_example_loss(self, labels, logits):
        """Cross-entropy per example; no reduction here, the caller decides how to average."""
        return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def _correct(labels, logits):
    """1.0 where the arg-max class equals the label, else 0.0: per-example accuracy."""
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.cast(tf.equal(predictions, labels), tf.float32)
