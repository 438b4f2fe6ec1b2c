"""Command line entry point: `python -m trainer.main --model=functional`.

The only place that reads flag values: it turns them into keyword arguments for the DataModule,
the Module and the Trainer, runs fit then test, and writes `<model_dir>/results.json`.
`--explain` prints the plan instead, and `--selftest` checks the strategy (trainer/selftest.py).

Under multi-worker training every worker runs this same program; only the chief writes files, but
every worker takes part in every collective (metric reads, checkpoint saves, the export), in the
same order.
"""

import json
import os
import sys

from absl import app
from absl import logging
import tensorflow as tf

import flags as run_flags
import data
import layers
import trainer
from trainer import checkpointing
from trainer import distribute
from trainer import explain
from trainer import export
from trainer import plots
from trainer import precision
from trainer import selftest


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {' '.join(argv[1:])}")
    try:
        results = _explain_selftest_or_train(_create_strategy())
    except trainer.TrainingInterrupted as interruption:
        logging.warning("%s", interruption)
        print(f"stopped: {interruption}", file=sys.stderr)
        sys.exit(128 + interruption.signal_number)  # The shell's convention for "killed by".
    except tf.errors.UnavailableError as error:  # Under multi-worker: another worker died.
        logging.error("%s", error)
        sys.exit(f"error: a worker of the cluster is unreachable ({str(error).splitlines()[0]}). "
                 "Restart every worker with the same command: the run resumes from the latest "
                 "checkpoint")
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        logging.error("%s", error)
        sys.exit(f"error: {error}")
    if results:
        logging.info("results: %s", json.dumps(results))


def _create_strategy() -> tf.distribute.Strategy:
    """The strategy comes first: it fixes the devices before anything else touches TensorFlow,
    and MultiWorkerMirroredStrategy must configure the collective ops at program startup."""
    return distribute.create_strategy(
        run_flags.distribution.STRATEGY.value,
        cpu_devices=run_flags.distribution.CPU_DEVICES.value,
        gpus=_gpu_indices(run_flags.distribution.GPUS.value),
        gpu_memory_growth=run_flags.distribution.GPU_MEMORY_GROWTH.value,
        communication=run_flags.distribution.COMMUNICATION.value)


def _explain_selftest_or_train(strategy: tf.distribute.Strategy) -> dict | None:
    """Prints the plan (--explain), checks the strategy (--selftest), or trains: returns the
    training results, None for the others."""
    perturb_replica = run_flags.diagnostics.SELFTEST_PERTURB_REPLICA.value
    if run_flags.diagnostics.EXPLAIN.value:
        print(explain.explain(_plan(strategy)))
        return None
    if run_flags.diagnostics.SELFTEST.value:
        _selftest(strategy, perturb_replica)
        return None
    if perturb_replica is not None:
        raise ValueError(f"selftest_perturb_replica ({perturb_replica}) only applies with "
                         "--selftest")
    return _run(strategy)


def _run(strategy: tf.distribute.Strategy) -> dict:
    # Seeded before any layer exists: Keras initializers draw their seeds when they are created.
    tf.keras.utils.set_random_seed(run_flags.training.SEED.value)
    if run_flags.training.DETERMINISTIC.value:
        tf.config.experimental.enable_op_determinism()
    precision.set_precision(run_flags.training.PRECISION.value)  # Before the layers, which read it.
    model_name = run_flags.model.MODEL.value
    dataset_name = run_flags.dataset.DATASET.value
    model_dir = _model_dir()
    is_chief = distribute.is_chief(strategy)
    _prepare_model_dir_on_chief(strategy, model_dir, model_name, dataset_name)
    datamodule = _datamodule()

    fit = trainer.Trainer(
        strategy=strategy,
        epochs=run_flags.training.EPOCHS.value,
        steps_per_loop=run_flags.training.STEPS_PER_LOOP.value,
        run_eagerly=run_flags.training.RUN_EAGERLY.value,
        jit_compile=run_flags.training.JIT_COMPILE.value,
        checkpointer=checkpointing.Checkpointer(
            os.path.join(model_dir, "checkpoints"),
            every_n_steps=run_flags.training.CHECKPOINT_EVERY_STEPS.value,
            max_to_keep=run_flags.training.KEEP_CHECKPOINTS.value, is_chief=is_chief),
        resume_from=run_flags.training.CKPT_PATH.value,
        best_models=_best_models(model_dir, is_chief))
    with strategy.scope():
        network = layers.build_cnn(model_name, input_shape=datamodule.input_shape,
                                   num_classes=datamodule.num_classes,
                                   sync_batchnorm=run_flags.model.SYNC_BATCHNORM.value,
                                   dropout=run_flags.model.DROPOUT.value,
                                   width_multiplier=run_flags.model.WIDTH_MULTIPLIER.value)
        module = trainer.ImageClassifier(network,
                                         learning_rate=run_flags.model.LEARNING_RATE.value,
                                         weight_decay=run_flags.model.WEIGHT_DECAY.value,
                                         label_smoothing=run_flags.model.LABEL_SMOOTHING.value)

    results = {"model": model_name, "dataset": dataset_name,
               "replicas": strategy.num_replicas_in_sync,
               "precision": run_flags.training.PRECISION.value,
               "global_batch_size": datamodule.batch_size}
    results.update(fit.fit(module, datamodule))
    labels = predictions = None
    if run_flags.dataset.TEST_SPLIT.value:
        results.update(fit.test(module, datamodule))
        labels, predictions = _test_predictions(fit, module, datamodule)
    if fit.best_models:
        with strategy.scope():
            best = fit.best_models.restore_best(module)
        logging.info("the best epoch by %s: %s", fit.best_models.monitor, best)
    export_dir = export.export_for_serving(module, datamodule.input_shape,
                                           os.path.join(model_dir, "export"), is_chief=is_chief)
    if fit.is_chief:
        logging.info("exported the %s model for serving to %s",
                     "best" if fit.best_models else "last", export_dir)
        _write_outputs(model_dir, results, fit, datamodule, labels, predictions)
    return results


def _model_dir() -> str:
    return run_flags.training.MODEL_DIR.value or os.path.join(
        "runs", f"{run_flags.dataset.DATASET.value}-{run_flags.model.MODEL.value}")


def _datamodule() -> data.TFDSImageData:
    """The TFDS DataModule the flags describe, prepared and set up (its metadata read)."""
    datamodule = data.TFDSImageData(
        name=run_flags.dataset.DATASET.value,
        data_dir=run_flags.dataset.DATA_DIR.value,
        download=run_flags.dataset.DOWNLOAD.value,
        train_split=run_flags.dataset.TRAIN_SPLIT.value,
        val_split=run_flags.dataset.VAL_SPLIT.value,
        test_split=run_flags.dataset.TEST_SPLIT.value,
        batch_size=run_flags.dataset.BATCH_SIZE.value,
        seed=run_flags.training.SEED.value,
        augment=run_flags.dataset.AUGMENT.value)
    datamodule.prepare_data()
    datamodule.setup()  # Reads the image shape and class count the network is built for.
    return datamodule


def _prepare_model_dir_on_chief(strategy, model_dir, model_name, dataset_name):
    """The chief prepares model_dir; if that fails, every worker stops, not only the chief (the
    others would wait for it forever in their first collective)."""
    error = None
    if distribute.is_chief(strategy):
        try:
            _prepare_model_dir(model_dir, model_name, dataset_name)
        except (ValueError, OSError) as caught:
            error = caught
    if distribute.any_worker(strategy, error is not None):
        raise error or RuntimeError(f"the chief could not prepare model_dir ({model_dir}): "
                                    "its log says why")


def _prepare_model_dir(model_dir, model_name, dataset_name):
    """Sets an old run aside (--fresh_start), then checks the settings against the run there."""
    if run_flags.training.FRESH_START.value:
        old_run = checkpointing.set_aside(model_dir)
        if old_run:
            logging.info("--fresh_start: the previous run in %s is now %s", model_dir, old_run)
    # Flags that change what is trained must match the run being resumed.
    checkpointing.check_run_config(model_dir, {
        "model": model_name, "dataset": dataset_name,
        "batch_size": run_flags.dataset.BATCH_SIZE.value,
        "train_split": run_flags.dataset.TRAIN_SPLIT.value,
        "width_multiplier": run_flags.model.WIDTH_MULTIPLIER.value,
        "seed": run_flags.training.SEED.value})


def _write_outputs(model_dir, results, fit, datamodule, labels, predictions):
    """Writes results.json, history.json and the plots (the chief only)."""
    with open(os.path.join(model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(model_dir, "history.json"), "w") as f:
        json.dump(fit.history, f, indent=2)  # One entry of logs per epoch.
    logging.info("wrote %s", os.path.join(model_dir, "results.json"))
    for path in plots.save_run_plots(model_dir, fit.history, labels, predictions,
                                     datamodule.class_names):
        logging.info("wrote %s", path)


def _test_predictions(fit, module, datamodule):
    """True and predicted classes of the test set, pair by pair (for the confusion matrix).

    The labels travel the same distributed path as the predictions (shards, per-replica batches,
    gather), so they come in the same order, also when each worker reads its own shard.
    """
    probabilities = fit.predict(module, datamodule)  # Every process takes part: a collective.
    labels = distribute.gathered_labels(fit.strategy, datamodule.predict_dataset)
    return labels, probabilities.argmax(axis=-1)


def _selftest(strategy, perturb_replica):
    """Runs trainer/selftest.py's checks; the chief prints the table; a FAIL exits with status 1."""
    checks = selftest.run(strategy, global_batch_size=run_flags.dataset.BATCH_SIZE.value,
                          seed=run_flags.training.SEED.value, perturb_replica=perturb_replica)
    if distribute.is_chief(strategy):
        print(selftest.format_table(checks, strategy), flush=True)
    if not all(check.passed for check in checks):
        sys.exit(1)


def _plan(strategy) -> explain.Plan:
    """The facts `--explain` prints, read from the flags, the strategy and the dataset's metadata."""
    datamodule = _datamodule()
    policy = tf.keras.mixed_precision.Policy(precision.POLICIES[run_flags.training.PRECISION.value])
    return explain.Plan(
        strategy=distribute.strategy_name(strategy), devices=tuple(distribute.replica_devices(strategy)),
        workers=distribute.num_workers(strategy), worker_index=distribute.worker_index(strategy),
        is_chief=distribute.is_chief(strategy), replicas=strategy.num_replicas_in_sync,
        global_batch=datamodule.batch_size, steps_per_epoch=datamodule.steps_per_epoch(),
        epochs=run_flags.training.EPOCHS.value, dropped_per_epoch=datamodule.dropped_per_epoch(),
        train_examples=datamodule.steps_per_epoch() * datamodule.batch_size
        + datamodule.dropped_per_epoch(),
        train_split=run_flags.dataset.TRAIN_SPLIT.value,
        precision=run_flags.training.PRECISION.value, compute_dtype=policy.compute_dtype,
        variable_dtype=policy.variable_dtype, sync_batchnorm=run_flags.model.SYNC_BATCHNORM.value,
        communication=run_flags.distribution.COMMUNICATION.value,
        checkpoint_every_steps=run_flags.training.CHECKPOINT_EVERY_STEPS.value,
        keep_checkpoints=run_flags.training.KEEP_CHECKPOINTS.value,
        checkpoint_dir=os.path.join(_model_dir(), "checkpoints"))


def _best_models(model_dir: str, is_chief: bool):
    monitor = run_flags.training.MONITOR.value
    if not run_flags.training.SAVE_TOP_K.value:
        return None
    if monitor.startswith("val_") and not run_flags.dataset.VAL_SPLIT.value:
        logging.info("no validation split: epochs are not ranked by %s; the last model is exported",
                     monitor)
        return None
    return checkpointing.BestModels(
        os.path.join(model_dir, "best"), monitor=run_flags.training.MONITOR.value,
        mode=run_flags.training.MONITOR_MODE.value, top_k=run_flags.training.SAVE_TOP_K.value,
        is_chief=is_chief)


def _gpu_indices(values: list[str] | None) -> list[int] | None:
    if values is None:
        return None
    try:
        return [int(value) for value in values]
    except ValueError:
        raise ValueError(f"gpus ({','.join(values)}) must be comma-separated GPU indices, "
                         "e.g. 0,1") from None


if __name__ == "__main__":
    app.run(main)
