"""Command line entry point: `python -m trainer.main --model=functional`.

The only place that reads flag values: it turns them into the DataModule, the Module, the
Trainer's two configs and its callbacks, and hands them to trainer/cli/job.py, which fits, tests,
exports and writes the run's files. `--explain` prints the plan instead (trainer/cli/explain.py),
`--selftest` checks the strategy (trainer/cli/selftest.py), and `--evaluate_checkpoints` (or a
TF_CONFIG task of type "evaluator") validates the run's checkpoints as they appear
(trainer/cli/evaluator.py). `run(argv)` is the same command as a Python function, for launchers
that call one in each worker (trainer/cluster/).

Under multi-worker training every worker runs this same program; only the chief writes files, but
every worker takes part in every collective (metric reads, checkpoint saves, the export), in the
same order.
"""

import json
import os
import signal
import sys

from absl import app
from absl import flags as absl_flags
from absl import logging
import tensorflow as tf

import data
from data import image_files
from data import image_folder
import flags as run_flags
import layers
import trainer
from trainer import callbacks
from trainer import checkpointing
from trainer import distribute
from trainer import precision
from trainer import run_directory
from trainer import schedule
from trainer.cluster import slurm
from trainer.cli import evaluator
from trainer import tuning
from trainer.cli import explain
from trainer.cli import job as job_lib
from trainer.cli import quiet
from trainer.cli import run_files
from trainer.cli import selftest
from trainer.vision import loggers as vision_loggers

EVAL_BATCH_MULTIPLE = 4  # --eval_batch_size's default, in training batches
# Flags that may differ between the workers of one run: where each host keeps the data, the
# cache and the run directory, and what its console shows.
PER_HOST_FLAGS = ("data_dir", "cache_dir", "download", "model_dir", "progress_bar",
                  "progress_every_s", "model_summary")

# `--help` lists the key flags of the main module: make every flag of flags/ one of them.
for _flags_module in (run_flags.model, run_flags.dataset, run_flags.training,
                      run_flags.optimization, run_flags.run_control, run_flags.output,
                      run_flags.distribution, run_flags.diagnostics):
    absl_flags.adopt_module_key_flags(_flags_module)


def main(argv):
    """`python -m trainer.main`: the run, each ending printed once as a plain line on stderr,
    without a traceback, with the exit status the shell expects (0, 1, 128 + a signal)."""
    try:
        _run_parsed(argv)
    except (trainer.TrainingInterrupted, KeyboardInterrupt, ValueError, TypeError, OSError,
            RuntimeError, tf.errors.OpError) as error:
        ended = job_lib.ending(error, _latest_checkpoint)
        if ended is None:
            raise  # Not a message for the user: a bug, shown with its traceback.
        status, line = ended
        print(line, file=sys.stderr)
        sys.exit(status)


def run(argv: list[str]) -> dict:
    """`run(["trainer.main", *flags])` does what `python -m trainer.main <flags>` does, for
    launchers that call a function in each worker (trainer/cluster/ray_train.py); it returns the
    results (results.json's; empty after --explain or --selftest) and raises where the command
    prints `error: ...` (ValueError for a refused flag), or TrainingInterrupted after a signal.
    TensorFlow sets up its devices and collective ops once per process: a second call in one
    process must train on one device (e.g. --strategy=default), or it raises."""
    run_flags.parse(argv)
    logging.use_absl_handler()  # What app.run does: absl's log handler, and INFO by default.
    if absl_flags.FLAGS["verbosity"].using_default_value:
        absl_flags.FLAGS.verbosity = 0
    return _run_parsed(argv[:1]) or {}


_runs_started = []  # This process's runs (see `run`: after the first, on one device only).


def _run_parsed(argv: list[str]) -> dict | None:
    """Creates the strategy, then explains, self-tests, evaluates or trains; logs the results."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {' '.join(argv[1:])}")
    quiet.hide_library_info_lines(logging.get_verbosity())
    if slurm.in_job():
        slurm.tolerate_late_requeue_signal()
    strategy = _create_strategy()
    one_device = strategy.num_replicas_in_sync == 1 and distribute.num_workers(strategy) == 1
    if _runs_started and not (one_device and all(_runs_started)):  # Devices are set up once.
        raise RuntimeError(f"a run has already started in this process (pid {os.getpid()}): "
                           "start each distributed run in a new process")
    _runs_started.append(one_device)
    quiet.quiet_unless_chief(worker=distribute.worker_index(strategy),
                             workers=distribute.num_workers(strategy),
                             verbosity_given=absl_flags.FLAGS["verbosity"].present)
    try:
        results = _explain_selftest_or_train(strategy)
    except trainer.TrainingInterrupted as interruption:
        _requeue_if_asked(strategy, interruption)
        raise
    if results:
        logging.info("results: %s", json.dumps(results))
    return results


def _latest_checkpoint() -> str | None:
    return tf.train.latest_checkpoint(os.path.join(_model_dir(), "checkpoints"))


def _create_strategy() -> tf.distribute.Strategy:
    """The strategy comes first: it fixes the devices before anything else touches TensorFlow,
    and MultiWorkerMirroredStrategy must configure the collective ops at program startup."""
    gpus = run_flags.distribution.GPUS.value
    return distribute.create_strategy(
        run_flags.distribution.STRATEGY.value,
        cpu_devices=run_flags.distribution.CPU_DEVICES.value,
        gpus=None if gpus is None else [int(gpu) for gpu in gpus],  # Checked by the flag.
        gpu_memory_growth=run_flags.distribution.GPU_MEMORY_GROWTH.value,
        communication=run_flags.distribution.COMMUNICATION.value,
        slurm_port_base=run_flags.distribution.SLURM_PORT_BASE.value,
        evaluator=run_flags.distribution.EVALUATE_CHECKPOINTS.value)


def _requeue_if_asked(strategy, interruption):
    """Inside a SLURM job, after a SIGUSR1 on any worker (or a SIGTERM, with --slurm_requeue),
    the chief requeues the job; every worker votes, as every worker was interrupted."""
    if not slurm.in_job():
        return
    stopped_by = interruption.signal_number
    asked = stopped_by == signal.SIGUSR1 or (run_flags.distribution.SLURM_REQUEUE.value
                                             and stopped_by == signal.SIGTERM)
    if distribute.any_worker(strategy, asked) and distribute.is_chief(strategy):
        slurm.requeue()


def _explain_selftest_or_train(strategy: tf.distribute.Strategy) -> dict | None:
    """Prints the plan (--explain), checks the strategy (--selftest), evaluates checkpoints (the
    evaluator task) or trains: returns the training or evaluation results, None for the others."""
    perturb_replica = run_flags.diagnostics.SELFTEST_PERTURB_REPLICA.value
    if run_flags.diagnostics.EXPLAIN.value:
        print(explain.explain(_plan(strategy)))
        return None
    if run_flags.diagnostics.SELFTEST.value:
        _check_same_flags(strategy)
        _selftest(strategy, perturb_replica)
        return None
    if run_flags.distribution.EVALUATE_CHECKPOINTS.value or distribute.is_evaluator_task():
        return _evaluate_checkpoints(strategy)
    if perturb_replica is not None:
        raise ValueError(f"selftest_perturb_replica ({perturb_replica}) needs --selftest")
    _check_same_flags(strategy)
    return _train(strategy)


def _check_same_flags(strategy: tf.distribute.Strategy) -> None:
    """Under multi-worker training, before any work: every worker was given the same flags,
    apart from where its host keeps things and what its console shows. Workers that train
    differently would fail much later, in a collective, with a message that names nothing."""
    values = run_files.flag_values(absl_flags.FLAGS, run_flags.__name__, leave_out=PER_HOST_FLAGS)
    distribute.check_same_on_every_worker(strategy, values, what="flags")


def _train(strategy: tf.distribute.Strategy) -> dict:
    """Trains, tests and exports the run's model and writes the run's files (trainer/cli/job.py);
    returns the results. The chief holds model_dir's lock meanwhile (trainer/run_directory.py)."""
    loop_config, step_config = _loop_config(), _step_config()  # Checked before any work.
    if run_flags.distribution.SLURM_REQUEUE.value and not slurm.in_job():
        raise ValueError("slurm_requeue (True) applies inside a SLURM job only, and SLURM_JOB_ID "
                         "is not set")
    learning_rate = _learning_rate()
    _set_up_tensorflow(step_config)
    model_dir = _model_dir()
    run_directory.check_directory(model_dir, "model_dir")
    writes_files, settings = not loop_config.fast_dev_run, _settings()
    chosen = _callbacks(model_dir)
    tracker = next((c for c in chosen if isinstance(c, callbacks.MLflowLogger)), None)
    lock = job_lib.prepare_run_directory(
        strategy, model_dir, fresh_start=run_flags.training.FRESH_START.value, tracker=tracker,
        keep_on_restart=slurm.restart_count(), settings=settings) if writes_files else None
    try:
        is_chief = distribute.is_chief(strategy)
        datamodule = _datamodule()
        fitter = trainer.Trainer(
            strategy=strategy, loop_config=loop_config, step_config=step_config, callbacks=chosen,
            enable_progress_bar=run_flags.output.PROGRESS_BAR.value,
            enable_model_summary=run_flags.output.MODEL_SUMMARY.value,
            checkpointer=checkpointing.Checkpointer(
                os.path.join(model_dir, "checkpoints"),
                every_n_steps=run_flags.training.CHECKPOINT_EVERY_STEPS.value,
                max_to_keep=run_flags.training.KEEP_CHECKPOINTS.value, is_chief=is_chief),
            resume_from=run_flags.training.CKPT_PATH.value,
            best_models=_best_models(model_dir, is_chief))
        with strategy.scope():
            module = _module(datamodule, learning_rate)
        job = job_lib.Job(
            model_dir=model_dir, writes_files=writes_files, settings=settings,
            flags_text=_flags_text(),
            results={"model": run_flags.model.MODEL.value,
                     "dataset": run_flags.dataset.DATASET.value,
                     "replicas": strategy.num_replicas_in_sync,
                     "precision": step_config.precision,
                     "global_batch_size": datamodule.batch_size},
            live_test=bool(run_flags.optimization.EMA_DECAY.value),
            monitor=run_flags.training.MONITOR.value,
            predict_split=run_flags.dataset.PREDICT_SPLIT.value,
            predict_files=run_flags.dataset.PREDICT_FILES.value, tracker=tracker)
        return job_lib.fit_test_and_export(fitter, module, datamodule, job)
    finally:
        if lock:
            lock.release()


def _set_up_tensorflow(step_config: trainer.StepConfig) -> None:
    """Seeds, determinism and precision: before any layer exists, as Keras initializers draw their
    seeds when they are created and layers read the precision policy."""
    tf.keras.utils.set_random_seed(run_flags.training.SEED.value)
    if run_flags.training.DETERMINISTIC.value:
        tf.config.experimental.enable_op_determinism()
    precision.set_precision(step_config.precision)


def _evaluate_checkpoints(strategy: tf.distribute.Strategy) -> dict:
    """The evaluator task (trainer/cli/evaluator.py): the training run's module and data, built
    from the same flags, validated at each checkpoint as it appears."""
    loop_config, step_config = _loop_config(), _step_config()
    if not run_flags.dataset.VAL_SPLIT.value:
        raise ValueError("val_split ('') must name a split: the evaluator validates on it")
    _set_up_tensorflow(step_config)
    datamodule = _datamodule()
    with strategy.scope():
        module = _module(datamodule, None)  # The learning rate plays no part here.
    fitter = trainer.Trainer(strategy=strategy, loop_config=loop_config, step_config=step_config,
                             enable_progress_bar=False, enable_model_summary=False)
    return evaluator.run(fitter, module, datamodule, model_dir=_model_dir(),
                         monitor=run_flags.training.MONITOR.value,
                         monitor_mode=run_flags.training.MONITOR_MODE.value,
                         timeout_s=run_flags.distribution.EVALUATOR_TIMEOUT_S.value)


def _loop_config() -> trainer.LoopConfig:
    run_control = run_flags.run_control
    return trainer.LoopConfig(
        epochs=run_flags.training.EPOCHS.value,
        max_steps=run_control.MAX_STEPS.value,
        steps_per_loop=run_flags.training.STEPS_PER_LOOP.value,
        log_every_n_steps=run_flags.output.LOG_EVERY_N_STEPS.value,
        limit_train_batches=run_control.LIMIT_TRAIN_BATCHES.value,
        limit_val_batches=run_control.LIMIT_VAL_BATCHES.value,
        limit_test_batches=run_control.LIMIT_TEST_BATCHES.value,
        val_check_interval=run_control.VAL_CHECK_INTERVAL.value,
        check_val_every_n_epoch=run_control.CHECK_VAL_EVERY_N_EPOCH.value,
        num_sanity_val_steps=run_control.NUM_SANITY_VAL_STEPS.value,
        overfit_batches=run_control.OVERFIT_BATCHES.value,
        fast_dev_run=run_control.FAST_DEV_RUN.value)


def _step_config() -> trainer.StepConfig:
    training, optimization = run_flags.training, run_flags.optimization
    return trainer.StepConfig(
        precision=training.PRECISION.value,
        gradient_clip_val=optimization.GRADIENT_CLIP_VAL.value,
        gradient_clip_algorithm=optimization.GRADIENT_CLIP_ALGORITHM.value,
        accumulate_grad_batches=optimization.ACCUMULATE_GRAD_BATCHES.value,
        detect_anomaly=training.DETECT_ANOMALY.value,
        jit_compile=training.JIT_COMPILE.value,
        run_eagerly=training.RUN_EAGERLY.value)


def _learning_rate() -> float | None:
    """--learning_rate as a number, or None for 'auto': the rate --lr_find finds. (The flag's
    validator, flags/model.py, has already refused anything but a finite rate > 0 or 'auto'.)"""
    text = run_flags.model.LEARNING_RATE.value
    if text != "auto":
        return float(text)
    if not run_flags.optimization.LR_FIND.value:
        raise ValueError("learning_rate ('auto') needs --lr_find, which finds the rate to train on")
    return None


def _module(datamodule, learning_rate: float | None) -> trainer.ImageClassifier:
    """The classifier the flags describe; call inside `strategy.scope()`. A learning rate of None
    ('auto') starts at the flag's default until --lr_find's suggestion replaces it, before the
    first step (--fast_dev_run, which skips the search, keeps the default)."""
    model, optimization = run_flags.model, run_flags.optimization
    network = layers.build_cnn(
        model.MODEL.value, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes,
        sync_batchnorm=model.SYNC_BATCHNORM.value, dropout=model.DROPOUT.value,
        width_multiplier=model.WIDTH_MULTIPLIER.value)
    if learning_rate is None:
        learning_rate = float(model.LEARNING_RATE.default)
    return trainer.ImageClassifier(
        network, learning_rate=learning_rate, optimizer=model.OPTIMIZER.value,
        weight_decay=model.WEIGHT_DECAY.value, label_smoothing=model.LABEL_SMOOTHING.value,
        lr_schedule=optimization.LR_SCHEDULE.value, warmup_steps=optimization.WARMUP_STEPS.value,
        ema_decay=optimization.EMA_DECAY.value, tta_flip=model.TTA_FLIP.value)


def _callbacks(model_dir):
    """The callbacks the flags ask for: the learning-rate finder first, so its search ends before
    anything else starts; the learning-rate monitor before the loggers, so they see its value;
    the pictures and hyperparameters before the TensorBoard logger, which closes its files."""
    run_control, output = run_flags.run_control, run_flags.output
    optimization = run_flags.optimization
    chosen = []
    if optimization.LR_FIND.value:
        chosen.append(tuning.LearningRateFinder(
            csv_path=os.path.join(model_dir, "lr_find.csv"),
            png_path=os.path.join(model_dir, "lr_find.png"),
            update_learning_rate=run_flags.model.LEARNING_RATE.value == "auto",
            min_rate=optimization.LR_FIND_MIN.value, max_rate=optimization.LR_FIND_MAX.value,
            num_steps=optimization.LR_FIND_STEPS.value))
    chosen.append(callbacks.LearningRateMonitor())
    tensorboard = None
    if output.TENSORBOARD.value:
        tensorboard = callbacks.TensorBoardLogger(
            logdir=os.path.join(model_dir, "tensorboard"),
            log_every_n_steps=output.LOG_EVERY_N_STEPS.value, flags_text=_flags_text())
        hparams = {name: absl_flags.FLAGS[name].value for name in run_files.HPARAMS}
        chosen += [vision_loggers.SamplePredictions(tensorboard), callbacks.HParamsLogger(
            tensorboard, hparams={**hparams, "learning_rate": _learning_rate()})]  # auto: None
    chosen.append(vision_loggers.ConfusionMatrix(
        tensorboard=tensorboard, png_path=os.path.join(model_dir, "confusion_matrix.png")))
    if tensorboard:
        chosen.append(tensorboard)
    if output.CSV_LOG.value:
        chosen.append(callbacks.CSVLogger(os.path.join(model_dir, "metrics.csv"),
                                          log_every_n_steps=output.LOG_EVERY_N_STEPS.value))
    if output.MLFLOW_TRACKING_URI.value:
        chosen.append(callbacks.MLflowLogger(  # Every flag as a param; all of its files at the end.
            tracking_uri=output.MLFLOW_TRACKING_URI.value, model_dir=model_dir,
            experiment=output.MLFLOW_EXPERIMENT.value, run_name=output.MLFLOW_RUN_NAME.value,
            params=run_files.parse_flags(_flags_text())))
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
        chosen.append(callbacks.ProgressBar(every_s=output.PROGRESS_EVERY_S.value))
    profile_steps = callbacks.profiler.parse_profile_steps(run_flags.training.PROFILE_STEPS.value)
    if profile_steps:
        chosen.append(callbacks.Profiler(*profile_steps, os.path.join(model_dir, "tensorboard")))
    return chosen


def _flags_text() -> str:
    """This project's flags (flags/*.py) as resolved, to repeat the run; also in TensorBoard."""
    return run_files.flags_text(absl_flags.FLAGS, run_flags.__name__)


def _model_dir() -> str:
    dataset = run_flags.dataset.DATASET.value
    if _is_image_folder():  # runs/<folder's name>-<model>, not a path inside the folder
        dataset = os.path.basename(os.path.normpath(dataset))
    return run_flags.training.MODEL_DIR.value or os.path.join(
        "runs", f"{dataset}-{run_flags.model.MODEL.value}")


def _is_image_folder() -> bool:
    """--dataset names an existing folder (an image folder), not a TFDS dataset."""
    return tf.io.gfile.isdir(run_flags.dataset.DATASET.value)


def _dataset_identity() -> str:
    """What run_config.json records of the data: the TFDS name, or the image folder's name and
    classes, which stay the same when the folder or the run directory moves."""
    if _is_image_folder():
        return image_folder.identity(run_flags.dataset.DATASET.value)
    return run_flags.dataset.DATASET.value


def _datamodule() -> data.ImageClassificationData:
    """The DataModule the flags describe (an image folder or a TFDS dataset), prepared and set up
    (its metadata read; an image folder's images checked)."""
    dataset = run_flags.dataset
    if dataset.CACHE_DIR.value:
        run_directory.check_directory(dataset.CACHE_DIR.value, "cache_dir")
    if dataset.PREDICT_FILES.value and dataset.PREDICT_SPLIT.value:
        raise ValueError(f"predict_files ({dataset.PREDICT_FILES.value!r}) and predict_split "
                         f"({dataset.PREDICT_SPLIT.value!r}) both write predictions.csv: pass one")
    common = dict(
        train_split=dataset.TRAIN_SPLIT.value, val_split=dataset.VAL_SPLIT.value,
        test_split=dataset.TEST_SPLIT.value, predict_split=dataset.PREDICT_SPLIT.value,
        cache_dir=dataset.CACHE_DIR.value, batch_size=dataset.BATCH_SIZE.value,
        eval_batch_size=_eval_batch_size(), seed=run_flags.training.SEED.value,
        augment=dataset.AUGMENT.value, crop_padding=dataset.CROP_PADDING.value,
        data_order=dataset.DATA_ORDER.value)
    if _is_image_folder():
        image_size = dataset.IMAGE_SIZE.value
        datamodule = data.ImageFolderData(
            root=dataset.DATASET.value, **common,
            image_size=image_files.parse_image_size(image_size) if image_size else None)
    elif dataset.IMAGE_SIZE.value:
        raise ValueError(f"image_size ({dataset.IMAGE_SIZE.value!r}) applies to image folders "
                         f"only, and dataset ({dataset.DATASET.value!r}) is not a folder: a TFDS "
                         "dataset keeps its own image size")
    else:
        datamodule = data.TFDSImageData(name=dataset.DATASET.value,
                                        data_dir=dataset.DATA_DIR.value,
                                        download=dataset.DOWNLOAD.value, **common)
    datamodule.prepare_data()
    datamodule.setup()  # Reads the image shape and class count the network is built for.
    return datamodule


def _eval_batch_size() -> int:
    """--eval_batch_size, by default 4 x --batch_size: evaluation keeps no gradients."""
    return (run_flags.dataset.EVAL_BATCH_SIZE.value
            or EVAL_BATCH_MULTIPLE * run_flags.dataset.BATCH_SIZE.value)


def _settings() -> dict:
    """The flags that change what is trained: a resumed run must match the recorded ones."""
    return {
        "model": run_flags.model.MODEL.value, "dataset": _dataset_identity(),
        "batch_size": run_flags.dataset.BATCH_SIZE.value,
        "train_split": run_flags.dataset.TRAIN_SPLIT.value,
        "data_order": run_flags.dataset.DATA_ORDER.value,
        "width_multiplier": run_flags.model.WIDTH_MULTIPLIER.value,
        "seed": run_flags.training.SEED.value,
        "accumulate_grad_batches": run_flags.optimization.ACCUMULATE_GRAD_BATCHES.value,
        "optimizer": run_flags.model.OPTIMIZER.value,  # Its state (moments) fits no other.
        "limit_train_batches": run_flags.run_control.LIMIT_TRAIN_BATCHES.value,
        "overfit_batches": run_flags.run_control.OVERFIT_BATCHES.value,
        # Moving averages add optimizer state: a checkpoint with them fits only a run with them.
        "ema_decay": "on" if run_flags.optimization.EMA_DECAY.value else "off"}


def _selftest(strategy, perturb_replica):
    """Runs trainer/cli/selftest.py's checks; the chief prints the table; a FAIL exits with 1."""
    checks = selftest.run(strategy, global_batch_size=run_flags.dataset.BATCH_SIZE.value,
                          seed=run_flags.training.SEED.value, perturb_replica=perturb_replica)
    if not selftest.report(checks, strategy):
        sys.exit(1)


def _plan(strategy) -> explain.Plan:
    """What `--explain` prints, read from the flags, the strategy and the dataset's metadata."""
    datamodule = _datamodule()
    step_config = _step_config()
    policy = tf.keras.mixed_precision.Policy(precision.POLICIES[step_config.precision])
    return explain.Plan(
        strategy=distribute.strategy_name(strategy),
        devices=tuple(distribute.replica_devices(strategy)),
        workers=distribute.num_workers(strategy), worker_index=distribute.worker_index(strategy),
        is_chief=distribute.is_chief(strategy), replicas=strategy.num_replicas_in_sync,
        global_batch=datamodule.batch_size, eval_batch=datamodule.eval_batch_size,
        steps_per_epoch=schedule.optimizer_steps_per_epoch(
            datamodule.steps_per_epoch(),
            limit_train_batches=run_flags.run_control.LIMIT_TRAIN_BATCHES.value,
            accumulate_grad_batches=step_config.accumulate_grad_batches),
        epochs=run_flags.training.EPOCHS.value, dropped_per_epoch=datamodule.dropped_per_epoch(),
        train_examples=datamodule.steps_per_epoch() * datamodule.batch_size
        + datamodule.dropped_per_epoch(),
        train_split=run_flags.dataset.TRAIN_SPLIT.value,
        data_order=datamodule.data_order,
        step=step_config, compute_dtype=policy.compute_dtype,
        variable_dtype=policy.variable_dtype, sync_batchnorm=run_flags.model.SYNC_BATCHNORM.value,
        communication=run_flags.distribution.COMMUNICATION.value,
        checkpoint_every_steps=run_flags.training.CHECKPOINT_EVERY_STEPS.value,
        keep_checkpoints=run_flags.training.KEEP_CHECKPOINTS.value,
        checkpoint_dir=os.path.join(_model_dir(), "checkpoints"),
        cluster_source=distribute.cluster_source(),
        cluster_tasks=tuple(distribute.cluster_tasks(strategy)))


def _best_models(model_dir: str, is_chief: bool):
    monitor = run_flags.training.MONITOR.value
    if not run_flags.training.SAVE_TOP_K.value or run_flags.run_control.FAST_DEV_RUN.value:
        return None
    if monitor.startswith("val_") and not run_flags.dataset.VAL_SPLIT.value:
        logging.info("no validation split: epochs are not ranked by %s; the last model is exported",
                     monitor)
        return None
    return checkpointing.BestModels(
        os.path.join(model_dir, "best"), monitor=monitor,
        mode=run_flags.training.MONITOR_MODE.value, top_k=run_flags.training.SAVE_TOP_K.value,
        is_chief=is_chief)


if __name__ == "__main__":
    app.run(main)
