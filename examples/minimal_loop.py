"""examples/one_device_loop.py on N replicas: the math of trainer/trainer.py in one file.

main() reads in order: strategy, data split across replicas, model, optimizer and metrics in its
scope (no BatchNorm: no replica statistics to sync), n steps per tf.function call, epochs with
validation on a held-out slice of the training split, the test. docs/the_training_loop.md, part
2, lists what changed from the one-device loop, and why.
Run: python examples/minimal_loop.py --cpu_devices=2 --epochs=2
(offline, add --data_dir=DIR --download=false)
"""

from collections.abc import Callable
import math
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

flags.DEFINE_integer("cpu_devices", 1, "Replicas, one per logical CPU.", lower_bound=1)
flags.DEFINE_string("dataset", "cifar10", "A TFDS dataset of (image, label), e.g. mnist.")
flags.DEFINE_string("data_dir", None, "Where TFDS keeps prepared datasets (default: TFDS').")
flags.DEFINE_boolean("download", True, "Download the dataset if data_dir does not hold it.")
flags.DEFINE_integer("epochs", 10, "Passes over the training data.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Global batch: all replicas.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-4, "Adam's learning rate.")
flags.DEFINE_integer("steps_per_call", 100, "Steps per tf.function call.", lower_bound=1)
FLAGS = flags.FLAGS
SPLITS = ["train[:90%]", "train[90%:]", "test"]  # Train, validate (held out), test.
SUM = tf.distribute.ReduceOp.SUM


def make_dataset(examples: tf.data.Dataset, global_batch: int, training: bool) -> Callable:
    """Returns fn(ctx) -> one input pipeline's batches of `examples`, images scaled to [0, 1]."""
    def dataset_fn(ctx):
        # A pipeline per worker reads its own shard; its replicas take one batch each per step.
        shard = examples.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if training:  # Decoded once, reshuffled each pass, endless: epochs are counted in steps.
            shard = shard.cache().shuffle(10_000).repeat()
        # Training: full batches, static shapes, one trace. Evaluation: every example counts.
        batches = shard.batch(ctx.get_per_replica_batch_size(global_batch), drop_remainder=training)
        batches = batches.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels))
        # Freeing an autotuned iterator waits out its tuning thread: up to a minute at the end of
        # a run (docs/pitfalls.md#18).
        options = tf.data.Options()
        options.autotune.enabled = False
        return batches.with_options(options)
    return dataset_fn


def make_train_loop(strategy: tf.distribute.Strategy, model: tf.keras.Model,
                    optimizer: tf.keras.optimizers.Optimizer, metrics: tuple,
                    global_batch: int) -> Callable:
    """Returns train_loop(iterator, n): n optimizer steps in one call; returns the last one's
    loss. `metrics` (a loss mean, an accuracy) accumulate over every example trained on."""
    train_loss, train_accuracy = metrics

    def replica_step(images, labels):  # On every replica, on its slice of the global batch.
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)
            # Divide by the GLOBAL batch: apply_gradients SUMS the replicas' gradients, and the
            # sum must be the gradient of the global batch's mean loss, as on one device.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        train_loss.update_state(per_example)  # This replica's copy; result() sums the copies.
        train_accuracy.update_state(labels, logits)
        return loss

    @tf.function
    def train_loop(iterator, num_steps):
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):  # A tensor bound: a graph loop, traced once for any n.
            per_replica = strategy.run(replica_step, args=next(iterator))
            # Each replica's loss is its share of the global mean: their SUM is that mean.
            loss = strategy.reduce(SUM, per_replica, axis=None)
        return loss
    return train_loop


def make_evaluate(strategy: tf.distribute.Strategy, model: tf.keras.Model,
                  metrics: tuple) -> Callable:
    """Returns evaluate(dataset_fn) -> (mean loss, accuracy) over every example of its batches."""
    eval_loss, eval_accuracy = metrics

    def replica_step(images, labels):
        if tf.size(labels) > 0:  # The model never sees an empty batch: oneDNN's CPU convolution
            logits = model(images, training=False)  # can fail on one (docs/pitfalls.md#10).
            eval_loss.update_state(tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            eval_accuracy.update_state(labels, logits)

    @tf.function
    def eval_loop(iterator):
        for _ in tf.range(2**31 - 1):  # Until the data ends: get_next_as_optional, not next(),
            batch = iterator.get_next_as_optional()  # so that the end stops the loop, not the call.
            if not batch.has_value():
                break
            strategy.run(replica_step, args=batch.get_value())

    def evaluate(dataset_fn):
        for metric in metrics:
            metric.reset_state()
        eval_loop(iter(strategy.distribute_datasets_from_function(dataset_fn)))
        return float(eval_loss.result()), float(eval_accuracy.result())
    return evaluate


def main(_) -> None:
    batch, replicas = FLAGS.batch_size, FLAGS.cpu_devices
    if batch % replicas:
        raise app.UsageError(f"--batch_size ({batch}) must be a multiple of replicas ({replicas})")
    quiet.hide_library_info_lines(logging.get_verbosity())
    strategy = tf.distribute.get_strategy()  # The default strategy: one device, no copies.
    if replicas > 1:  # Before any other op: TensorFlow fixes its devices at the first.
        cpus = [tf.config.LogicalDeviceConfiguration()] * replicas
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], cpus)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    tf.keras.utils.set_random_seed(0)  # The same initial weights and order on every run.
    data_dir = os.path.expanduser(FLAGS.data_dir) if FLAGS.data_dir else None
    if not FLAGS.download and not tfds.builder(FLAGS.dataset, data_dir=data_dir).is_prepared():
        sys.exit(f"error: dataset {FLAGS.dataset!r} is not prepared in "
                 f"{data_dir or '~/tensorflow_datasets'} and --download=false: point --data_dir "
                 "at a directory that holds it prepared")
    (train_split, val_split, test_split), info = tfds.load(
        FLAGS.dataset, split=SPLITS, as_supervised=True, with_info=True, download=FLAGS.download,
        data_dir=data_dir)
    shape, classes = info.features["image"].shape, info.features["label"].num_classes
    with strategy.scope():  # Variables created here get one synchronized copy per replica.
        model = layers.build_cnn("sequential", input_shape=shape, num_classes=classes)
        model(tf.zeros([1, *shape]))  # The first call creates the weights.
        optimizer = tf.keras.optimizers.Adam(FLAGS.learning_rate)
        # Eagerly: Adam's slots created lazily inside strategy.run crash on Keras 3.15.
        optimizer.build(model.trainable_variables)
        train_metrics = tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy()
        eval_metrics = tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy()
    train_loop = make_train_loop(strategy, model, optimizer, train_metrics, batch)
    evaluate = make_evaluate(strategy, model, eval_metrics)
    train_data = strategy.distribute_datasets_from_function(make_dataset(train_split, batch, True))
    # One iterator for all epochs: the pipeline's buffers stay warm.
    iterator, steps_per_epoch = iter(train_data), len(train_split) // batch
    for epoch in range(FLAGS.epochs):
        start = time.perf_counter()
        for metric in train_metrics:
            metric.reset_state()
        for done in range(0, steps_per_epoch, FLAGS.steps_per_call):
            num_steps = tf.constant(min(FLAGS.steps_per_call, steps_per_epoch - done))
            loss = float(train_loop(iterator, num_steps))  # One host sync per call, not per step.
            if not math.isfinite(loss):  # Diverged: stop before it trains, or reports, on NaN.
                sys.exit(f"error: the loss is {loss} after step {int(optimizer.iterations)}: "
                         f"training diverged (--learning_rate {FLAGS.learning_rate} too high?)")
        val_loss, val_accuracy = evaluate(make_dataset(val_split, batch, False))
        print(f"epoch {epoch + 1}/{FLAGS.epochs} | train_loss {train_metrics[0].result():.4f} | "
              f"train_accuracy {train_metrics[1].result():.4f} | val_loss {val_loss:.4f} | "
              f"val_accuracy {val_accuracy:.4f} | {time.perf_counter() - start:.1f} s")
    test_loss, test_accuracy = evaluate(make_dataset(test_split, batch, False))
    print(f"test | test_loss {test_loss:.4f} | test_accuracy {test_accuracy:.4f}")


if __name__ == "__main__":
    app.run(main)
