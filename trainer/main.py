"""Command line entry point: `python -m trainer.main --model=functional`.

The only place that reads flag values: it turns them into keyword arguments for the DataModule,
the Module and the Trainer, runs fit then test, and writes `<model_dir>/results.json` (metrics)
and `<model_dir>/timings.json` (wall times, images/s). `--explain` prints the plan instead, and `--selftest` checks the strategy (trainer/selftest.py).

Under multi-worker training every worker runs this same program; only the chief writes files, but
every worker takes part in every collective (metric reads, checkpoint saves, the export), in the
same order.
"""

import json
import os
import sys

from absl import app
from absl import flags as absl_flags
from absl import logging
import tensorflow as tf

import flags as run_flags
import data
import layers
import trainer
from trainer import callbacks
from trainer import checkpointing
from trainer import distribute
from trainer import explain
from trainer import export
from trainer import loggers
from trainer import plots
from trainer import precision
from trainer import progress
from trainer import selftest

_TIMINGS = ("_seconds", "_per_s", "_time_s")  # Keys of results that measure time, not the model.

# `--help` lists the key flags of the main module: make every flag of flags/ one of them.
for _flags_module in (run_flags.model, run_flags.dataset, run_flags.training,
                      run_flags.optimization, run_flags.run_control, run_flags.output,
                      run_flags.distribution, run_flags.diagnostics):
    absl_flags.adopt_module_key_flags(_flags_module)


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
    writes_files = not run_flags.run_control.FAST_DEV_RUN.value
    if writes_files:
        _prepare_model_dir_on_chief(strategy, model_dir, model_name, dataset_name)
    datamodule = _datamodule()

    fit = _make_trainer(strategy, model_dir, is_chief)
    with strategy.scope():
        network = layers.build_cnn(model_name, input_shape=datamodule.input_shape,
                                   num_classes=datamodule.num_classes,
                                   sync_batchnorm=run_flags.model.SYNC_BATCHNORM.value,
                                   dropout=run_flags.model.DROPOUT.value,
                                   width_multiplier=run_flags.model.WIDTH_MULTIPLIER.value)
        module = trainer.ImageClassifier(network,
                                         learning_rate=run_flags.model.LEARNING_RATE.value,
                                         weight_decay=run_flags.model.WEIGHT_DECAY.value,
                                         label_smoothing=run_flags.model.LABEL_SMOOTHING.value,
                                         lr_schedule=run_flags.optimization.LR_SCHEDULE.value,
                                         warmup_steps=run_flags.optimization.WARMUP_STEPS.value)

    results = {"model": model_name, "dataset": dataset_name,
               "replicas": strategy.num_replicas_in_sync,
               "precision": run_flags.training.PRECISION.value,
               "global_batch_size": datamodule.batch_size}
    results.update(fit.fit(module, datamodule))
    labels = predictions = None
    if run_flags.dataset.TEST_SPLIT.value and run_flags.run_control.LIMIT_TEST_BATCHES.value != 0:
        results.update(fit.test(module, datamodule))
        labels, predictions = _test_predictions(fit, module, datamodule)
    if fit.best_models:
        with strategy.scope():
            best = fit.best_models.restore_best(module)
        logging.info("the best epoch by %s: %s", fit.best_models.monitor, best)
    if not writes_files:
        return results
    export_dir = export.export_for_serving(module, datamodule.input_shape,
                                           os.path.join(model_dir, "export"), is_chief=is_chief)
    if fit.is_chief:
        logging.info("exported the %s model for serving to %s",
                     "best" if fit.best_models else "last", export_dir)
        _write_outputs(model_dir, results, fit, datamodule, labels, predictions)
    return results


def _make_trainer(strategy, model_dir, is_chief):
    """The Trainer with its callbacks, checkpoints and run control, from the flags."""
    training, run_control = run_flags.training, run_flags.run_control
    optimization, output = run_flags.optimization, run_flags.output
    return trainer.Trainer(
        strategy=strategy,
        epochs=training.EPOCHS.value,
        max_steps=run_control.MAX_STEPS.value,
        callbacks=_callbacks(model_dir),
        enable_progress_bar=output.PROGRESS_BAR.value,
        enable_model_summary=output.MODEL_SUMMARY.value,
        log_every_n_steps=output.LOG_EVERY_N_STEPS.value,
        steps_per_loop=training.STEPS_PER_LOOP.value,
        limit_train_batches=run_control.LIMIT_TRAIN_BATCHES.value,
        limit_val_batches=run_control.LIMIT_VAL_BATCHES.value,
        limit_test_batches=run_control.LIMIT_TEST_BATCHES.value,
        val_check_interval=run_control.VAL_CHECK_INTERVAL.value,
        check_val_every_n_epoch=run_control.CHECK_VAL_EVERY_N_EPOCH.value,
        num_sanity_val_steps=run_control.NUM_SANITY_VAL_STEPS.value,
        fast_dev_run=run_control.FAST_DEV_RUN.value,
        overfit_batches=run_control.OVERFIT_BATCHES.value,
        gradient_clip_val=optimization.GRADIENT_CLIP_VAL.value,
        gradient_clip_algorithm=optimization.GRADIENT_CLIP_ALGORITHM.value,
        accumulate_grad_batches=optimization.ACCUMULATE_GRAD_BATCHES.value,
        precision=training.PRECISION.value,
        detect_anomaly=training.DETECT_ANOMALY.value,
        profile_steps=_profile_steps(training.PROFILE_STEPS.value),
        profile_dir=os.path.join(model_dir, "tensorboard"),
        run_eagerly=training.RUN_EAGERLY.value,
        jit_compile=training.JIT_COMPILE.value,
        checkpointer=checkpointing.Checkpointer(
            os.path.join(model_dir, "checkpoints"),
            every_n_steps=training.CHECKPOINT_EVERY_STEPS.value,
            max_to_keep=training.KEEP_CHECKPOINTS.value, is_chief=is_chief),
        resume_from=training.CKPT_PATH.value,
        best_models=_best_models(model_dir, is_chief))


def _callbacks(model_dir):
    """The callbacks the flags ask for; the learning-rate monitor first, so loggers see its value."""
    run_control, output = run_flags.run_control, run_flags.output
    chosen = [callbacks.LearningRateMonitor()]
    if output.TENSORBOARD.value:
        chosen.append(loggers.TensorBoardLogger(
            logdir=os.path.join(model_dir, "tensorboard"),
            log_every_n_steps=output.LOG_EVERY_N_STEPS.value,
            flags_text=_flags_text()))
    if output.CSV_LOG.value:
        chosen.append(loggers.CSVLogger(os.path.join(model_dir, "metrics.csv"),
                                        log_every_n_steps=output.LOG_EVERY_N_STEPS.value))
    if run_control.EARLY_STOPPING_PATIENCE.value:
        chosen.append(callbacks.EarlyStopping(
            monitor=run_control.EARLY_STOPPING_MONITOR.value,
            min_delta=run_control.EARLY_STOPPING_MIN_DELTA.value,
            patience=run_control.EARLY_STOPPING_PATIENCE.value,
            mode=run_control.EARLY_STOPPING_MODE.value,
            restore_best_weights=run_control.RESTORE_BEST_WEIGHTS.value))
    if run_control.MAX_TIME.value:
        chosen.append(callbacks.Timer(callbacks.parse_duration(run_control.MAX_TIME.value)))
    if output.PROGRESS_BAR.value:
        chosen.append(progress.ProgressBar(every_s=output.PROGRESS_EVERY_S.value))
    return chosen


def _flags_text() -> str:
    """This project's flags (flags/*.py) as a flagfile: `--flagfile=` of it repeats the run."""
    by_module = absl_flags.FLAGS.flags_by_module_dict()
    lines = [flag.serialize() for module, module_flags in sorted(by_module.items())
             if module.startswith(run_flags.__name__ + ".") for flag in module_flags]
    return "\n".join(line for line in lines if line)  # An unset flag (None) serializes to "".


def _profile_steps(values: list[str] | None) -> tuple[int, int] | None:
    if not values:
        return None
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise ValueError(f"profile_steps ({','.join(values)}) must be two optimizer steps A,B, "
                         "e.g. 10,20") from None


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
        "seed": run_flags.training.SEED.value,
        "accumulate_grad_batches": run_flags.optimization.ACCUMULATE_GRAD_BATCHES.value,
        "limit_train_batches": run_flags.run_control.LIMIT_TRAIN_BATCHES.value,
        "overfit_batches": run_flags.run_control.OVERFIT_BATCHES.value})


def _write_outputs(model_dir, results, fit, datamodule, labels, predictions):
    """Writes results.json, history.json and the plots (the chief only)."""
    # Metrics and timings apart: with --deterministic, two runs write identical results.json.
    timings = {key: value for key, value in results.items() if key.endswith(_TIMINGS)}
    with open(os.path.join(model_dir, "results.json"), "w") as f:
        json.dump({k: v for k, v in results.items() if k not in timings}, f, indent=2)
    with open(os.path.join(model_dir, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
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
        global_batch=datamodule.batch_size,
        steps_per_epoch=min(datamodule.steps_per_epoch(),
                            run_flags.run_control.LIMIT_TRAIN_BATCHES.value or 2**31)
        // run_flags.optimization.ACCUMULATE_GRAD_BATCHES.value,
        epochs=run_flags.training.EPOCHS.value, dropped_per_epoch=datamodule.dropped_per_epoch(),
        train_examples=datamodule.steps_per_epoch() * datamodule.batch_size
        + datamodule.dropped_per_epoch(),
        train_split=run_flags.dataset.TRAIN_SPLIT.value,
        precision=run_flags.training.PRECISION.value, compute_dtype=policy.compute_dtype,
        variable_dtype=policy.variable_dtype, sync_batchnorm=run_flags.model.SYNC_BATCHNORM.value,
        communication=run_flags.distribution.COMMUNICATION.value,
        checkpoint_every_steps=run_flags.training.CHECKPOINT_EVERY_STEPS.value,
        keep_checkpoints=run_flags.training.KEEP_CHECKPOINTS.value,
        checkpoint_dir=os.path.join(_model_dir(), "checkpoints"),
        accumulate_grad_batches=run_flags.optimization.ACCUMULATE_GRAD_BATCHES.value,
        gradient_clip_val=run_flags.optimization.GRADIENT_CLIP_VAL.value,
        gradient_clip_algorithm=run_flags.optimization.GRADIENT_CLIP_ALGORITHM.value,
        detect_anomaly=run_flags.training.DETECT_ANOMALY.value)


def _best_models(model_dir: str, is_chief: bool):
    monitor = run_flags.training.MONITOR.value
    if not run_flags.training.SAVE_TOP_K.value or run_flags.run_control.FAST_DEV_RUN.value:
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
