"""`ImageClassifier`: the tutorial's task as a `Module` around either CNN."""

import math

import tensorflow as tf

from trainer import module
from trainer import optimization

LR_SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9  # Nesterov momentum of the "sgd" optimizer, the usual value for CNNs.


class ImageClassifier(module.Module):
    """Classifies images: sparse categorical cross-entropy on logits, accuracy, Adam or SGD.

    Args:
        network: a Keras model mapping a batch of images to logits, e.g. `layers.build_cnn(...)`.
        learning_rate: the optimizer's learning rate (the peak, with a schedule).
        optimizer: "adam" (Adam, or AdamW with `weight_decay`) or "sgd" (SGD with Nesterov
            momentum 0.9).
        weight_decay: if > 0, decoupled weight decay (AdamW's): every step also shrinks each
            kernel (every variable of 2 or more dimensions; not the biases nor BatchNorm's scale
            and offset) by learning_rate * weight_decay * kernel, apart from the gradient.
        label_smoothing: if > 0, the training target puts 1 - label_smoothing + ls/classes on
            the true class and ls/classes on each other class. Evaluation uses hard labels.
        lr_schedule: "constant", "cosine" (a cosine decay to 0 over the Trainer's
            `total_steps`) or "linear" (a straight line down to 0 at the last step; after a
            warmup, the triangle of a one-cycle schedule).
        warmup_steps: optimizer steps of linear warmup to `learning_rate` first; step s of the
            warmup (from 0) runs at (s + 1) / warmup_steps x `learning_rate`.
        ema_decay: if given, in (0, 1), the optimizer also keeps an exponential moving average
            of the weights (decay per optimizer step, e.g. 0.999), which the Trainer validates,
            ranks, tests and exports instead of the live weights.
        tta_flip: test-time augmentation: inference (`training=False`: validation, the test,
            predictions and the export) averages the logits of each image and of its mirror
            image (flipped left to right), at twice the cost. Training is unchanged.
    """

    def __init__(self, network: tf.keras.Model, *, learning_rate: float = 3e-4,
                 weight_decay: float = 0.0, label_smoothing: float = 0.0,
                 lr_schedule: str = "constant", warmup_steps: int = 0,
                 ema_decay: float | None = None, optimizer: str = "adam",
                 tta_flip: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not 0 < learning_rate < math.inf:  # Written so that nan fails too.
            raise ValueError(f"learning_rate ({learning_rate}) must be a positive finite number")
        if not 0 <= weight_decay < math.inf:
            raise ValueError(f"weight_decay ({weight_decay}) must be a finite number >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing ({label_smoothing}) must be in [0, 1)")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule ({lr_schedule!r}) must be one of {list(LR_SCHEDULES)}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be >= 0")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay ({ema_decay}) must be in (0, 1), e.g. 0.999")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer ({optimizer!r}) must be one of {list(OPTIMIZERS)}")
        self.network = network
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.ema_decay = ema_decay
        self.optimizer_name = optimizer
        self.tta_flip = tta_flip

    def call(self, images, training=False):
        # Float32 logits under any precision policy, whatever the network's last layer computes
        # in: softmax and the loss need float32's range, and the loop keeps the loss in float32.
        logits = tf.cast(self.network(images, training=training), tf.float32)
        if self.tta_flip and not training:
            mirrored = tf.cast(self.network(tf.reverse(images, axis=[2]), training=False),
                               tf.float32)  # Axis 2 of [batch, height, width, channels].
            logits = (logits + mirrored) / 2.0
        return logits

    def training_step(self, batch):
        images, labels = batch
        logits = self(images, training=True)
        per_example_loss = self._per_example_loss(labels, logits, self.label_smoothing)
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
        learning_rate = self._learning_rate()
        # Keras' own EMA: after every step, average = decay * average + (1 - decay) * weight.
        options = {"use_ema": True, "ema_momentum": self.ema_decay} if self.ema_decay else {}
        if self.weight_decay:
            options["weight_decay"] = self.weight_decay
        if self.optimizer_name == "sgd":
            optimizer = tf.keras.optimizers.SGD(learning_rate=learning_rate, momentum=SGD_MOMENTUM,
                                                nesterov=True, **options)
        elif self.weight_decay:
            optimizer = tf.keras.optimizers.AdamW(learning_rate=learning_rate, **options)
        else:
            optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate, **options)
        if not self.weight_decay:
            return optimizer
        # Decay the weight matrices and kernels only: biases and BatchNorm's scale and offset
        # (the 1-D variables) are left alone, the usual practice (timm, BERT): shrinking them
        # toward 0 only fights the normalization and the layer's offset.
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in self.trainable_variables if len(v.shape) <= 1])
        return optimizer

    def _learning_rate(self):
        """The learning rate, or a schedule of it over optimizer steps (`self.total_steps`)."""
        if self.lr_schedule == "constant" and not self.warmup_steps:
            return self.learning_rate
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be fewer than the run's "
                             f"{self.total_steps} optimizer steps")
        after_warmup = self.learning_rate
        decay_steps = self.total_steps - self.warmup_steps
        if self.lr_schedule == "cosine":
            after_warmup = tf.keras.optimizers.schedules.CosineDecay(
                self.learning_rate, decay_steps=decay_steps)
        elif self.lr_schedule == "linear":  # Reaches 0 after the last step, not at it.
            after_warmup = tf.keras.optimizers.schedules.PolynomialDecay(
                self.learning_rate, decay_steps=decay_steps + 1, end_learning_rate=0.0)
        return optimization.WarmupSchedule(self.learning_rate, self.warmup_steps, after_warmup)

    def _evaluate(self, batch):
        """Logs loss and accuracy per example, so the means stay exact for a partial last batch."""
        images, labels = batch
        logits = self(images, training=False)
        self.log("loss", self._per_example_loss(labels, logits))
        self.log("accuracy", _correct(labels, logits))

    def _per_example_loss(self, labels, logits, label_smoothing=0.0):
        """Cross-entropy per example; no reduction here, the caller decides how to average."""
        if not label_smoothing:
            return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        targets = tf.one_hot(labels, tf.shape(logits)[-1])
        return tf.keras.losses.categorical_crossentropy(targets, logits, from_logits=True,
                                                        label_smoothing=label_smoothing)


def _correct(labels, logits):
    """1.0 where the arg-max class equals the label, else 0.0: per-example accuracy."""
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.cast(tf.equal(predictions, labels), tf.float32)
