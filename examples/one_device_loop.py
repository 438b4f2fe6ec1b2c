"""The training loop on one device, written out: what Keras' `fit` does for the tutorial's CNN.

Read it first; examples/minimal_loop.py is this program on N replicas. main() reads in order:
the data (the last tenth of the training split is held out to validate on; the test split is
used once, at the end), the model, its optimizer and metrics, the step (eager Python, then traced
by tf.function), the epochs, the test. docs/the_training_loop.md, part 1, reads it with you.
Run: python examples/one_device_loop.py --epochs=2
(offline, add --data_dir=DIR --download=false)
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The project.
# pylint: disable=wrong-import-position
from trainer.cli import quiet  # First: imports TensorFlow without its start-up log lines.
import layers
import tensorflow as tf
import tensorflow_datasets as tfds

flags.DEFINE_string("dataset", "cifar10", "A TFDS dataset of (image, label), e.g. mnist.")
flags.DEFINE_string("data_dir", None, "Where TFDS keeps prepared datasets (default: TFDS').")
flags.DEFINE_boolean("download", True, "Download the dataset if data_dir does not hold it.")
flags.DEFINE_integer("epochs", 10, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Examples per step.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-4, "Adam's learning rate.")
flags.DEFINE_boolean("run_eagerly", False, "Run the steps as plain Python, untraced (pdb works).")
FLAGS = flags.FLAGS
SPLITS = ["train[:90%]", "train[90%:]", "test"]  # Train, validate (held out), test.


def scale(images, labels):
    """uint8 pixels in [0, 255] -> floats in [0, 1], as the tutorial's `/ 255.0`."""
    return tf.cast(images, tf.float32) / 255.0, labels


def main(_) -> None:
    quiet.hide_library_info_lines(logging.get_verbosity())
    tf.keras.utils.set_random_seed(0)  # The same initial weights and order on every run.
    data_dir = os.path.expanduser(FLAGS.data_dir) if FLAGS.data_dir else None
    if not FLAGS.download and not tfds.builder(FLAGS.dataset, data_dir=data_dir).is_prepared():
        sys.exit(f"error: dataset {FLAGS.dataset!r} is not prepared in "
                 f"{data_dir or '~/tensorflow_datasets'} and --download=false: point --data_dir "
                 "at a directory that holds it prepared")
    (train_split, val_split, test_split), info = tfds.load(
        FLAGS.dataset, split=SPLITS, as_supervised=True, with_info=True, download=FLAGS.download,
        data_dir=data_dir)
    # Full training batches, a new order every epoch: one batch shape, so one trace of the step.
    train_data = train_split.cache().shuffle(10_000).batch(FLAGS.batch_size, drop_remainder=True)
    train_data = train_data.map(scale)
    val_data, test_data = (split.cache().batch(FLAGS.batch_size).map(scale)  # Every example.
                           for split in (val_split, test_split))
    model = layers.build_cnn("sequential", input_shape=info.features["image"].shape,
                             num_classes=info.features["label"].num_classes)
    optimizer = tf.keras.optimizers.Adam(FLAGS.learning_rate)
    # Running means over every example seen since reset_state(): update_state() in the step,
    # result() once per epoch.
    train_loss, eval_loss = tf.keras.metrics.Mean(), tf.keras.metrics.Mean()
    train_accuracy = tf.keras.metrics.SparseCategoricalAccuracy()
    eval_accuracy = tf.keras.metrics.SparseCategoricalAccuracy()

    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)
            loss = tf.reduce_mean(per_example)  # The batch's mean, as the tutorial's loss object.
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        train_loss.update_state(per_example)
        train_accuracy.update_state(labels, logits)

    def eval_step(images, labels):
        logits = model(images, training=False)  # BatchNorm's learned statistics; no dropout.
        eval_loss.update_state(tf.keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
        eval_accuracy.update_state(labels, logits)

    if not FLAGS.run_eagerly:  # Traced once into a graph: the same math, no Python per step.
        train_step, eval_step = tf.function(train_step), tf.function(eval_step)

    def evaluate(dataset) -> tuple[float, float]:
        eval_loss.reset_state()
        eval_accuracy.reset_state()
        for images, labels in dataset:
            eval_step(images, labels)
        return float(eval_loss.result()), float(eval_accuracy.result())

    for epoch in range(FLAGS.epochs):
        start = time.perf_counter()
        train_loss.reset_state()
        train_accuracy.reset_state()
        for images, labels in train_data:
            train_step(images, labels)
        val_loss, val_accuracy = evaluate(val_data)
        print(f"epoch {epoch + 1}/{FLAGS.epochs} | train_loss {train_loss.result():.4f} | "
              f"train_accuracy {train_accuracy.result():.4f} | val_loss {val_loss:.4f} | "
              f"val_accuracy {val_accuracy:.4f} | {time.perf_counter() - start:.1f} s")
    test_loss, test_accuracy = evaluate(test_data)
    print(f"test | test_loss {test_loss:.4f} | test_accuracy {test_accuracy:.4f}")


if __name__ == "__main__":
    app.run(main)
