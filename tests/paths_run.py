"""The side paths on 2 replicas, checked in one process; prints one JSON report.

Run as a subprocess (one MirroredStrategy per process): `python tests/paths_run.py`. What it
measures, for tests/test_correct_paths.py:

    dropout         each replica's dropout mask for the same input (they must differ)
    all_reduces_*   gradient all-reduces issued per optimizer step, plain and reduced paths
    ranking         the best checkpoint's recorded score vs the score of its weights re-validated
    tta             flip-averaged validation accuracy on 2 replicas vs the same computed eagerly
"""

import json
import tempfile

from trainer import distribute


def _dropout_masks(strategy, tf, layers):
    """Each replica's dropout mask for an input of ones, from the CNNs' dropout layer."""
    with strategy.scope():
        network = layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=4,
                                   dropout=0.5)
        network(tf.zeros([1, 32, 32, 3]))
    dropout = network.head.dropout1

    @tf.function
    def masks():
        return strategy.run(lambda: dropout(tf.ones([4, 64]), training=True))

    return [m.numpy().tolist() for m in strategy.experimental_local_results(masks())]


def _count_gradient_all_reduces(strategy, tf, trainer, conftest, **step_options):
    """Gradient all-reduces (SUM over a list of one tensor per trainable variable) that one
    traced optimizer step issues, counted while the training loop is traced. MirroredStrategy
    traces a replica function once per replica, so each all-reduce is seen once per replica:
    replica 0's calls count."""
    calls = []
    original = tf.distribute.ReplicaContext.all_reduce

    def counting_all_reduce(self, reduce_op, value, options=None):
        if tf.get_static_value(self.replica_id_in_sync_group) == 0:
            calls.append((reduce_op, len(tf.nest.flatten(value))))
        return original(self, reduce_op, value, options)

    tf.distribute.ReplicaContext.all_reduce = counting_all_reduce
    try:
        fitter = trainer.Trainer(strategy=strategy, epochs=1, max_steps=2,
                                 num_sanity_val_steps=0, enable_progress_bar=False,
                                 enable_model_summary=False, **step_options)
        with strategy.scope():
            module = trainer.ImageClassifier(conftest.tiny_network(), learning_rate=1e-2)
        fitter.fit(module, conftest.quadrant_datamodule())
    finally:
        tf.distribute.ReplicaContext.all_reduce = original
    variables = len(module.trainable_variables)
    return sum(1 for op, size in calls if op == tf.distribute.ReduceOp.SUM and size == variables)


def _ranking(strategy, tf, trainer, conftest, layers):
    """Mid-epoch validations of a BatchNorm network on 2 replicas: each kept "best" checkpoint,
    re-validated, must score what was recorded for it."""
    from trainer import checkpointing  # pylint: disable=import-outside-toplevel
    best = checkpointing.BestModels(tempfile.mkdtemp(), monitor="val_loss", top_k=3)
    fitter = trainer.Trainer(strategy=strategy, epochs=2, val_check_interval=10,
                             num_sanity_val_steps=0, enable_progress_bar=False,
                             enable_model_summary=False, best_models=best)
    datamodule = conftest.quadrant_datamodule()
    with strategy.scope():
        network = tf.keras.Sequential([
            tf.keras.layers.Conv2D(4, 3), tf.keras.layers.BatchNormalization(),
            tf.keras.layers.ReLU(), tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = trainer.ImageClassifier(network, learning_rate=1e-2)
    fitter.fit(module, datamodule)
    pairs = []
    for entry in best.ranking:
        tf.train.Checkpoint(module=module).read(best.path_of(entry)).assert_existing_objects_matched()
        pairs.append((entry["step"], entry["score"], fitter.validate(module, datamodule)["val_loss"]))
    return pairs


def _tta_validation(strategy, tf, trainer, conftest):
    """Validation with test-time flips on 2 replicas over 69 examples in global batches of 4:
    the last batch holds one example, so one replica gets none. Returns the validated accuracy
    and the accuracy of the flip-averaged logits computed eagerly over all 69 examples."""
    import data  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    images, labels = conftest.quadrant_data(69, seed=2)
    datamodule = data.ArrayImageData(train=conftest.quadrant_data(64, 0), val=(images, labels),
                                     num_classes=4, batch_size=16, eval_batch_size=4)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = trainer.ImageClassifier(network, tta_flip=True)
    fitter = trainer.Trainer(strategy=strategy, epochs=1, num_sanity_val_steps=0,
                             enable_progress_bar=False, enable_model_summary=False)
    validated = fitter.validate(module, datamodule)["val_accuracy"]
    pixels = data.scale_pixels(images)
    logits = (network(pixels) + network(pixels[:, :, ::-1, :])) / 2
    return [validated, float(np.mean(np.argmax(logits, axis=-1) == labels))]


def main():
    strategy = distribute.create_strategy("mirrored", cpu_devices=2)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import conftest  # pylint: disable=import-outside-toplevel
    import layers  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel
    from trainer import precision  # pylint: disable=import-outside-toplevel

    tf.keras.utils.set_random_seed(0)
    report = {"dropout": _dropout_masks(strategy, tf, layers),
              "ranking": _ranking(strategy, tf, trainer, conftest, layers),
              "tta": _tta_validation(strategy, tf, trainer, conftest)}
    report["all_reduces_plain"] = _count_gradient_all_reduces(strategy, tf, trainer, conftest)
    report["all_reduces_clip_accumulate"] = _count_gradient_all_reduces(
        strategy, tf, trainer, conftest, gradient_clip_val=1.0, accumulate_grad_batches=2)
    precision.set_precision("16-mixed")
    report["all_reduces_reduced"] = _count_gradient_all_reduces(
        strategy, tf, trainer, conftest, gradient_clip_val=1.0, accumulate_grad_batches=2,
        precision="16-mixed")
    precision.set_precision("32")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
