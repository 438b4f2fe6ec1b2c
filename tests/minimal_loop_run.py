"""Trains the same batches with the Trainer and with examples/minimal_loop.py, and saves both.

Run as a subprocess (logical CPU devices must be set up before TensorFlow initialises its
devices, and a process holds one MirroredStrategy):

    python tests/minimal_loop_run.py OUT_DIR

Once on one device (TensorFlow's default strategy), once on two replicas: both loops start from
the same weights, use plain SGD and read the Trainer's DataModule pipeline, unshuffled, so they
see the same batches. OUT_DIR/replicas<N>.npz holds `initial/<i>`, `trainer/<i>` and
`minimal/<i>`: the i-th trainable variable before training and after each loop.
OUT_DIR/replicas<N>.json holds the variable paths, each loop's last-epoch training loss and
accuracy, its validation loss and accuracy, and how many validation examples the minimal loop's
metrics counted. OUT_DIR/errors.json holds what the minimal loop's main() stops with on a batch
that does not split across replicas, on a learning rate that makes training diverge (TFDS
mocked), and offline on a data_dir without the dataset.
"""

import argparse
import contextlib
import json
import os

from absl import app
from absl import flags
import numpy as np

from trainer import distribute

EPOCHS = 2
LEARNING_RATE = 0.05


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    args = parser.parse_args()

    # Two logical devices first; TensorFlow's default strategy (one device) runs beside them, as
    # --selftest compares them: one MirroredStrategy in the process, and one process for both.
    mirrored = distribute.create_strategy("mirrored", cpu_devices=2)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from examples import minimal_loop  # pylint: disable=import-outside-toplevel
    for strategy in (tf.distribute.get_strategy(), mirrored):
        arrays, report = compare(strategy, minimal_loop)
        out = os.path.join(args.out_dir, f"replicas{strategy.num_replicas_in_sync}")
        np.savez(out + ".npz", **arrays)
        with open(out + ".json", "w") as f:
            json.dump(report, f)
    empty_dir = os.path.join(args.out_dir, "empty_data_dir")
    os.makedirs(empty_dir)
    with open(os.path.join(args.out_dir, "errors.json"), "w") as f:
        json.dump(errors_of_main(minimal_loop, empty_dir), f)


def compare(strategy, minimal_loop) -> tuple[dict, dict]:
    """(the arrays, the report) of the Trainer and the minimal loop trained under `strategy`."""
    import data  # pylint: disable=import-outside-toplevel
    import layers  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel

    class SGDClassifier(trainer.ImageClassifier):
        def configure_optimizers(self):
            return tf.keras.optimizers.SGD(LEARNING_RATE)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(196, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=196)
    # 128 training examples: 4 steps of 32 per epoch, in the same order every epoch. 68 validation
    # examples end in a partial batch; on 2 replicas the last step is 4 examples and an empty batch.
    datamodule = data.ArrayImageData(train=(images[:128], labels[:128]),
                                     val=(images[128:], labels[128:]), num_classes=10,
                                     batch_size=32, seed=0, shuffle_buffer_size=1)
    datamodule.setup()

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        networks = [layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=10)
                    for _ in range(2)]
        for network in networks:
            network(tf.zeros([1, 32, 32, 3]))
        networks[1].set_weights(networks[0].get_weights())
        module = SGDClassifier(networks[0], learning_rate=LEARNING_RATE)
        optimizer = tf.keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(networks[1].trainable_variables)
        train_metrics = tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy()
        eval_metrics = tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy()
    initial = [v.numpy() for v in networks[0].trainable_variables]

    fitter = trainer.Trainer(strategy=strategy, epochs=EPOCHS, steps_per_loop=3,
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
    logs = fitter.fit(module, datamodule)

    # The minimal loop's host loop, as in its main(); 2 steps per call where the Trainer runs 3
    # then 1: how the steps are grouped into calls must not matter.
    train_loop = minimal_loop.make_train_loop(strategy, networks[1], optimizer, train_metrics,
                                              datamodule.batch_size)
    evaluate = minimal_loop.make_evaluate(strategy, networks[1], eval_metrics)
    iterator = iter(strategy.distribute_datasets_from_function(datamodule.train_dataset))
    steps_per_epoch = datamodule.steps_per_epoch()
    for _ in range(EPOCHS):  # The metrics kept are the last epoch's.
        for metric in train_metrics:
            metric.reset_state()
        last_losses = [float(train_loop(iterator, tf.constant(2)))
                       for _ in range(steps_per_epoch // 2)]
    val_loss, val_accuracy = evaluate(datamodule.val_dataset)

    arrays = {}
    for name, weights in (("initial", initial),
                          ("trainer", [v.numpy() for v in networks[0].trainable_variables]),
                          ("minimal", [v.numpy() for v in networks[1].trainable_variables])):
        arrays.update({f"{name}/{i}": w for i, w in enumerate(weights)})
    report = {"paths": [v.path for v in networks[0].trainable_variables],
              "replicas": strategy.num_replicas_in_sync, "steps": int(optimizer.iterations.numpy()),
              "trainer": {"loss": logs["train_loss"], "accuracy": logs["train_accuracy"],
                          "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"],
                          "steps": logs["steps"]},
              "minimal": {"loss": float(train_metrics[0].result()),
                          "accuracy": float(train_metrics[1].result()),
                          "last_step_loss": last_losses[-1],
                          "val_loss": val_loss, "val_accuracy": val_accuracy,
                          "val_examples": int(eval_metrics[0].count.numpy())}}
    return arrays, report


def errors_of_main(minimal_loop, empty_dir: str) -> dict[str, str | None]:
    """{case: the error minimal_loop.main stops with, or None} for three bad command lines."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    cases = {"batch": (["--cpu_devices=2", "--batch_size=63"], True),
             # inf turns the weights to inf and NaN at the first step, so step 2's loss is NaN.
             "diverged": (["--learning_rate=inf", "--batch_size=16", "--epochs=1",
                           "--steps_per_call=1"], True),
             "not_prepared": ([f"--data_dir={empty_dir}", "--download=false"], False)}
    errors = {}
    for case, (argv, mocked) in cases.items():
        flags.FLAGS(["minimal_loop.py", *argv])
        try:
            with tfds.testing.mock_data(num_examples=80) if mocked else contextlib.nullcontext():
                minimal_loop.main([])
            errors[case] = None
        except (app.UsageError, SystemExit) as error:
            errors[case] = str(error)
        finally:
            flags.FLAGS.unparse_flags()
    return errors


if __name__ == "__main__":
    main()
