"""The smallest complete distributed training loop: the math of trainer/trainer.py in one file.

main() reads in order: strategy, data split across replicas, model and optimizer in its scope
(no BatchNorm: no replica statistics to sync), n steps per tf.function call, epochs, evaluation.
Run: python examples/minimal_loop.py --cpu_devices=2 --epochs=1 --data_dir=~/tensorflow_datasets
"""

from collections.abc import Callable
import os
import sys

from absl import app
from absl import flags
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For `layers`.
import layers  # pylint: disable=wrong-import-position

flags.DEFINE_integer("cpu_devices", 1, "Replicas, one per logical CPU.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Passes over the training split.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Global batch: all replicas.", lower_bound=1)
flags.DEFINE_float("learning_rate", 3e-4, "Adam's learning rate.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS').")
flags.DEFINE_integer("steps_per_call", 100, "Steps per tf.function call.", lower_bound=1)
flags.DEFINE_string("dataset", "cifar10", "A TFDS dataset of (image, label).")
FLAGS = flags.FLAGS


def make_dataset(examples: tf.data.Dataset, global_batch: int, training: bool) -> Callable:
    """Returns fn(ctx) -> one input pipeline's batches of `examples`, images scaled to [0, 1]."""
    def dataset_fn(ctx):
        # A pipeline per worker reads its own shard; its replicas take one batch each per step.
        shard = examples.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if training:  # Decoded once, reshuffled each pass, endless: epochs are counted in steps.
            shard = shard.cache().shuffle(10_000).repeat()
        # Training: full batches, static shapes, one trace. Evaluation: every example counts.
        batches = shard.batch(ctx.get_per_replica_batch_size(global_batch), drop_remainder=training)
        return batches.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels))
    return dataset_fn


def make_train_loop(strategy: tf.distribute.Strategy, model: tf.keras.Model,
                    optimizer: tf.keras.optimizers.Optimizer, global_batch: int) -> Callable:
    """Returns train_loop(iterator, n): n optimizer steps in one call; returns their loss sum."""
    def replica_step(images, labels):  # On every replica, on its slice of the global batch.
        with tf.GradientTape() as tape:
            per_example = tf.keras.losses.sparse_categorical_crossentropy(
                labels, model(images, training=True), from_logits=True)
            # Divide by the GLOBAL batch: apply_gradients SUMS the replicas' gradients, and the
            # sum must be the gradient of the global batch's mean loss, as on one device.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_loop(iterator, num_steps):
        total = tf.constant(0.0)
        for _ in tf.range(num_steps):  # A tensor bound: a graph loop, traced once for any n.
            losses = strategy.run(replica_step, args=next(iterator))
            # Each replica's loss is its share of the global mean: their SUM is that mean.
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
        return total
    return train_loop


def evaluate(strategy: tf.distribute.Strategy, model: tf.keras.Model,
             dataset_fn: Callable) -> tuple[float, int]:
    """Returns the accuracy over every example of `dataset_fn`'s batches, and their number."""
    def replica_counts(images, labels):  # Counts, not means: a batch can be partial, or empty.
        if tf.size(labels) == 0:  # The model never sees an empty batch: oneDNN's CPU convolution
            return tf.zeros([2], tf.int32)  # can fail on one (docs/pitfalls.md#10).
        hits = tf.argmax(model(images, training=False), -1, output_type=labels.dtype) == labels
        return tf.stack([tf.reduce_sum(tf.cast(hits, tf.int32)), tf.size(labels)])

    @tf.function
    def count(dataset):
        totals = tf.zeros([2], tf.int32)
        for images, labels in dataset:  # A get_next_as_optional loop: it ends with the data.
            per_replica = strategy.run(replica_counts, args=(images, labels))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals
    correct, examples = count(strategy.distribute_datasets_from_function(dataset_fn)).numpy()
    return correct / examples, int(examples)


def main(_) -> None:
    strategy = tf.distribute.get_strategy()  # The default strategy: one device, no copies.
    if FLAGS.cpu_devices > 1:  # Before any other op: TensorFlow fixes its devices at the first.
        cpus = [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], cpus)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(FLAGS.cpu_devices)])
    batch, replicas = FLAGS.batch_size, strategy.num_replicas_in_sync
    if batch % replicas:
        raise app.UsageError(f"--batch_size ({batch}) must be a multiple of replicas ({replicas})")
    (train_split, test_split), info = tfds.load(
        FLAGS.dataset, split=["train", "test"], as_supervised=True, with_info=True,
        data_dir=os.path.expanduser(FLAGS.data_dir) if FLAGS.data_dir else None)
    shape, classes = info.features["image"].shape, info.features["label"].num_classes
    with strategy.scope():  # Variables created here get one synchronized copy per replica.
        model = layers.build_cnn("sequential", input_shape=shape, num_classes=classes)
        model(tf.zeros([1, *shape]))  # The first call creates the weights.
        optimizer = tf.keras.optimizers.Adam(FLAGS.learning_rate)
        # Eagerly: Adam's slots created lazily inside strategy.run crash on Keras 3.15.
        optimizer.build(model.trainable_variables)
    train_loop = make_train_loop(strategy, model, optimizer, batch)
    train_data = strategy.distribute_datasets_from_function(make_dataset(train_split, batch, True))
    # Kept for all epochs; freeing it at exit waits out tf.data autotuning: up to 1 min per replica.
    iterator, steps_per_epoch = iter(train_data), len(train_split) // batch
    for epoch in range(FLAGS.epochs):
        total = 0.0
        for done in range(0, steps_per_epoch, FLAGS.steps_per_call):
            num_steps = tf.constant(min(FLAGS.steps_per_call, steps_per_epoch - done))
            total += float(train_loop(iterator, num_steps))  # One host sync per call, not step.
        print(f"epoch {epoch + 1}/{FLAGS.epochs}: train loss {total / steps_per_epoch:.4f}")
    accuracy, examples = evaluate(strategy, model, make_dataset(test_split, batch, False))
    print(f"test accuracy {accuracy:.4f} ({examples} examples)")


if __name__ == "__main__":
    app.run(main)
