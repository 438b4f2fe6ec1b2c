"""The command line's job once trainer/main.py has turned the flags into objects.

    prepare_run_directory   on the chief: the run directory's lock, --fresh_start, the settings
                            check; every worker stops if the chief cannot (no one waits forever)
    fit_test_and_export     fit, then the run's model (the best ranked one) tested, exported and
                            predicted with, and the run's files written
    ending                  the exit status and the one line a run that raised ends with

Plain Python arguments only: flags are read in main.py.
"""

import dataclasses
import os
import signal

from absl import logging
import tensorflow as tf

import trainer
from trainer import distribute
from trainer import faults
from trainer import run_directory
from trainer.cli import run_files
from trainer.vision import export
from trainer.vision import file_predictions
from trainer.vision import predictions


@dataclasses.dataclass(frozen=True)
class Job:
    """What the job writes and does besides training.

    Attributes:
        model_dir: the run directory.
        writes_files: False for a `--fast_dev_run`, which writes nothing.
        settings: the settings a resumed run must match (run_config.json).
        flags_text: the run's flags in flagfile format (flags.txt).
        results: what results.json starts with (model, dataset, replicas, ...).
        live_test: also test the live weights (with moving averages of the weights).
        monitor: the ranking's metric, for the message when nothing can be exported.
        predict_split: a split to predict into predictions.csv ("": none).
        predict_files: a glob or folder of image files to predict instead (None: none).
        tracker: the run's `MLflowLogger`, which gets the run's files as artifacts (None: none).
    """

    model_dir: str
    writes_files: bool
    settings: dict
    flags_text: str
    results: dict
    live_test: bool = False
    monitor: str = "val_accuracy"
    predict_split: str = ""
    predict_files: str | None = None
    tracker: object = None


def prepare_run_directory(strategy, model_dir: str, *, fresh_start: bool, keep_on_restart: int,
                          settings: dict, tracker=None) -> run_directory.RunLock | None:
    """On the chief: connects the `tracker` (an unreachable one fails now, not after hours of
    training), takes the lock, sets an old run aside (`fresh_start`, unless the cluster manager
    restarted the job `keep_on_restart` > 0 times) and checks `settings` against the run there;
    writes nothing else. Returns the lock (None on the other workers). If the chief fails, every
    worker stops, not only the chief (the others would wait for it forever in their first
    collective)."""
    error, lock = None, None
    if distribute.is_chief(strategy):
        try:
            if tracker:
                tracker.connect()
            lock = _prepare(model_dir, fresh_start=fresh_start, keep_on_restart=keep_on_restart,
                            settings=settings)
        except (ValueError, OSError, RuntimeError) as caught:
            error = caught
    if distribute.any_worker(strategy, error is not None):
        raise error or RuntimeError(f"the chief could not prepare model_dir ({model_dir}): "
                                    "its log says why")
    return lock


def _prepare(model_dir, *, fresh_start, keep_on_restart, settings) -> run_directory.RunLock:
    lock = run_directory.RunLock(model_dir)
    lock.acquire()  # Before anything else: another process may be training there.
    try:
        if fresh_start and keep_on_restart:
            logging.warning("--fresh_start ignored: the job was restarted (%d time(s)), so it "
                            "resumes the run in %s", keep_on_restart, model_dir)
        elif fresh_start:
            lock.release()  # It would move with the old run.
            old_run = run_directory.set_aside(model_dir)
            lock.acquire()
            if old_run:
                logging.info("--fresh_start: the previous run in %s is now %s", model_dir, old_run)
        run_directory.check_settings(model_dir, settings)
    except BaseException:
        lock.release()
        raise
    return lock


def fit_test_and_export(fitter: trainer.Trainer, module, datamodule, job: Job) -> dict:
    """Fits `module`, tests the run's model, exports it, predicts, writes the run's files;
    returns the results. Every worker runs it (the evaluation passes and the export take part
    in collectives); only the chief writes."""
    is_chief = fitter.is_chief
    results = dict(job.results)
    try:
        fitter.setup(module, datamodule)  # Builds the module and restores the checkpoint.
        if job.writes_files and is_chief:  # The run has started: its records are written now.
            run_directory.record_settings(job.model_dir, job.settings)
            run_files.write_flagfile(job.model_dir, job.flags_text)
        results.update(fitter.fit(module, datamodule))
        testing = datamodule.has_stage("test") and fitter.loop_config.limit_test_batches != 0
        if testing and job.live_test:  # The live weights at the last step, for comparison.
            results.update(fitter.test(module, datamodule, live_weights=True))
        # From here on the run's model is the best ranked one (trainer/model_weights.py): the
        # test, the export and the predictions all get it.
        best = fitter.restore_best()
        if fitter.best_models:
            logging.info("the best validation by %s: %s", fitter.best_models.monitor, best)
        if testing:
            results.update(fitter.test(module, datamodule))
    except trainer.TrainingDiverged as error:
        if job.writes_files and is_chief:  # A sweep reads why the run ended; nothing exported.
            run_files.write_outputs(job.model_dir, {**results, "steps": fitter.global_step,
                                                    "stop_reason": "diverged",
                                                    "error": str(error)}, fitter.history,
                                    job.tracker)
        raise
    except (tf.errors.DataLossError, tf.errors.FailedPreconditionError) as error:
        damaged = datamodule.damage_report(error)  # A truncated or corrupt file of the dataset?
        if damaged is None:
            raise
        raise damaged from None
    if not job.writes_files:
        return results
    which = "best" if best else "last"
    _export(fitter, module, datamodule, job, which)
    if job.predict_split:
        path = os.path.join(job.model_dir, "predictions.csv")
        rows = predictions.write_predictions(fitter, module, datamodule, path)
        if is_chief:
            logging.info("wrote %s: the %s model's predictions of the %d examples of %r", path,
                         which, rows, job.predict_split)
    if job.predict_files and is_chief:  # The export alone: no collective.
        _predict_files(job, datamodule.class_names, which)
    if is_chief:
        faults.reached("results")
        run_files.write_outputs(job.model_dir, results, fitter.history, job.tracker)
    return results


def ending(error: BaseException, latest_checkpoint) -> tuple[int, str] | None:
    """The exit status and the one line a run that raised `error` ends with, without a
    traceback; None for an error that is not the user's to read (a bug: its traceback is shown).
    `latest_checkpoint()` names the run's latest checkpoint, for the lines that say it is kept."""
    if isinstance(error, trainer.TrainingInterrupted):
        return 128 + error.signal_number, f"stopped: {error}"  # The shell's "killed by".
    if isinstance(error, KeyboardInterrupt):  # A second Ctrl-C, outside a save: stop at once.
        return 128 + signal.SIGINT, ("stopped: interrupted by a second Ctrl-C; the latest "
                                     f"checkpoint is {latest_checkpoint()}")
    if isinstance(error, tf.errors.UnavailableError):  # Multi-worker: another worker died.
        return 1, (f"error: a worker of the cluster is unreachable "
                   f"({str(error).splitlines()[0]}). Restart every worker with the same "
                   "command: the run resumes from the latest checkpoint")
    if run_directory.is_disk_full(error):
        return 1, f"error: {run_directory.disk_full_message(error, latest_checkpoint())}"
    return None if isinstance(error, tf.errors.OpError) else (1, f"error: {error}")


def _export(fitter, module, datamodule, job, which):
    """Exports the run's model for serving, unless its weights hold NaN or Inf."""
    with fitter.model_weights.in_module():
        if not export.all_finite(module):  # Every worker decides alike: the same weights.
            logging.warning("nothing exported: the model's weights hold NaN or Inf and no "
                            "validation scored a finite %s", job.monitor)
            return
        export_dir = export.export_for_serving(module, datamodule.input_shape,
                                               os.path.join(job.model_dir, "export"),
                                               is_chief=fitter.is_chief)
    logging.info("exported the %s model for serving to %s", which, export_dir)
    if fitter.is_chief:  # The names of the export's classes, for clients and --predict_files.
        file_predictions.write_labels(job.model_dir, datamodule.class_names)


def _predict_files(job, class_names, which):
    """--predict_files: the exported model's class of each file, into predictions.csv."""
    export_dir = os.path.join(job.model_dir, "export")
    if not tf.io.gfile.exists(export_dir):
        logging.warning("--predict_files: no predictions, since nothing was exported")
        return
    path = os.path.join(job.model_dir, "predictions.csv")
    rows = file_predictions.write_file_predictions(export_dir, job.predict_files, path,
                                                   class_names=class_names)
    logging.info("wrote %s: the %s model's predictions of the %d image files of %r", path,
                 which, rows, job.predict_files)
