"""Loggers: callbacks that record a run for reading during and after it.

    LearningRateMonitor  adds the current learning rate to the logs the loggers see
    TensorBoardLogger    <model_dir>/tensorboard/{train,val,test}/  (`tensorboard --logdir ...`)
    CSVLogger            <model_dir>/metrics.csv                    (pandas, a spreadsheet)

Both loggers record the training metrics every `log_every_n_steps` optimizer steps and every
epoch, always against the optimizer step (`optimizer.iterations`), so a resumed run continues the
same curves. Put them after `LearningRateMonitor` to get its `learning_rate`. They write on the
chief only, and set `writes_files`, so the Trainer leaves them out of a `fast_dev_run`. The image
task adds its pictures (sample predictions, a confusion matrix) to the TensorBoard logger's runs:
see trainer/vision/loggers.py.
"""

import os

from absl import logging
import tensorflow as tf

import data
from trainer import files
from trainer.callbacks import base
from trainer.callbacks import summaries


class LearningRateMonitor(base.Callback):
    """Adds the optimizer's current `learning_rate` to the per-loop and per-epoch logs, so that
    loggers placed after it record the schedule."""

    def on_train_batch_end(self, step, logs):
        logs["learning_rate"] = self._learning_rate()

    def on_epoch_end(self, epoch, logs):
        logs["learning_rate"] = self._learning_rate()

    def _learning_rate(self) -> float:
        # A variable (a MirroredVariable under a strategy), or a schedule's value at `iterations`.
        return float(tf.convert_to_tensor(self.trainer.optimizer.learning_rate))


class TensorBoardLogger(base.Callback):
    """Writes the run's numbers and flags as TensorBoard summaries, one run per stage.

    One run per stage, so that a chart shows train, val and test under one tag:

        train/  step/<name>    every number of `on_train_batch_end`'s logs, every
                               `log_every_n_steps` steps: `loss` (that step's), the epoch's running
                               `train_loss` and `train_accuracy`, `images_per_s`, `learning_rate`
                epoch/<name>   the epoch's train_* metrics (prefix dropped), timings, learning rate
                flags          the run's flags (text), when training starts
        val/    epoch/<name>   the val_* metrics of every validation pass, at its step
        test/   epoch/<name>   the test_* metrics

    Other callbacks add summaries to the same runs through `writing(run)` (the image task's
    sample predictions and confusion matrix, trainer/vision/loggers.py).

    A resumed run logs again the steps between its checkpoint and the interruption; it first
    marks the restart in each run, and TensorBoard drops the killed run's events after that
    step. Likewise a test replaces an earlier test at the same step (a rerun of a finished run).
    Each run's events begin with a start marker: TensorBoard's Python loader reads a run's first
    marker as its start, and only the later ones as restarts.

    Args:
        logdir: the directory to write into, e.g. `<model_dir>/tensorboard`; created on the
            first write.
        log_every_n_steps: optimizer steps between per-step entries; pass the Trainer's
            `log_every_n_steps`, whose loop calls end at those steps.
        flags_text: the run's settings, shown in the Text tab, e.g. the flags as a flagfile
            ("" writes none).
    """

    writes_files = True

    def __init__(self, *, logdir: str, log_every_n_steps: int = 50, flags_text: str = ""):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps ({log_every_n_steps}) must be at least 1")
        self.logdir = logdir
        self.log_every_n_steps = log_every_n_steps
        self.flags_text = flags_text
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def on_train_begin(self, logs):
        if not self.trainer.is_chief:
            return
        step = self.trainer.global_step
        if step:  # A resumed run: what a killed run logged after its checkpoint is dropped.
            self._restart(("train", "val"), step + 1)
        if self.flags_text:
            with self.writing("train"):
                # Indented four spaces: Markdown shows it verbatim, one flag per line.
                summaries.text("flags", _code_block(self.flags_text), self.trainer.global_step)

    def on_train_batch_end(self, step, logs):
        if self.trainer.is_chief and step % self.log_every_n_steps == 0:
            with self.writing("train"):
                for name, value in logs.items():
                    summaries.scalar(f"step/{name}", value, step)

    def on_validation_end(self, logs):
        if self.trainer.is_chief:
            self._write_epoch_scalars(logs, self.trainer.global_step)

    def on_epoch_end(self, epoch, logs):
        if not self.trainer.is_chief:
            return
        # val_* entries were written by on_validation_end, at the step they were measured.
        train_logs = {name: value for name, value in logs.items() if _stage(name)[0] != "val"}
        self._write_epoch_scalars(train_logs, self.trainer.global_step)
        self.flush()  # An epoch's summaries reach the disk, and TensorBoard, now.

    def on_train_end(self, logs):
        if self.trainer.is_chief:  # The test that follows replaces any earlier test at this step.
            self._restart(("test",), self.trainer.global_step)
        self.close(keep=("test",))  # The test's events follow the marker in the same file.

    def on_test_end(self, logs):
        if self.trainer.is_chief:
            self._write_epoch_scalars(logs, self.trainer.global_step)
        self.close()

    def writing(self, run: str):
        """Makes the writer of `run` ("train", "val", "test"; "" for `logdir` itself) the default
        summary writer, as a context manager; the writer is created on first use, a new run's
        events beginning with a start marker. Write on the chief only."""
        if run not in self._writers:
            directory = os.path.join(self.logdir, run)
            new_run = not os.path.isdir(directory)
            self._writers[run] = tf.summary.create_file_writer(directory)
            if new_run:
                with self._writers[run].as_default():
                    summaries.start()
        return self._writers[run].as_default()

    def flush(self) -> None:
        """Writes what the event files buffer to disk, so that TensorBoard shows it now."""
        for writer in self._writers.values():
            writer.flush()

    def close(self, keep: tuple[str, ...] = ()) -> None:
        """Closes the event files of every run but `keep`; a later stage opens new ones."""
        for run in [run for run in self._writers if run not in keep]:
            self._writers.pop(run).close()

    def _restart(self, runs, first_dropped):
        """Marks a restart in each of `runs` that exists: TensorBoard then drops its earlier
        events from step `first_dropped` on."""
        for run in runs:
            if tf.io.gfile.isdir(os.path.join(self.logdir, run)):
                with self.writing(run):
                    summaries.restart(first_dropped)

    def _write_epoch_scalars(self, logs, step):
        """Writes `<stage>_<name>` entries as `epoch/<name>` in the stage's run (others: train)."""
        for name, value in logs.items():
            run, metric = _stage(name)
            with self.writing(run):
                summaries.scalar(f"epoch/{metric}", value, step)


class CSVLogger(base.Callback):
    """Appends one row per logged step, per epoch and per test to a CSV file.

    Columns: `kind` (step, epoch or test), `epoch` (1-based, as in the log lines), `step` (the
    optimizer step), then one column per metric in the order they first appeared. A step row
    holds `on_train_batch_end`'s logs (`loss` is that step's, `train_*` the epoch's running
    means), an epoch row the epoch's logs, a test row the `test_*` metrics.

    The header only grows, and every row matches it: when a row brings a metric the header lacks
    (the first epoch row after the step rows, a resumed run with more flags on), older rows get
    empty cells. The file is rewritten whole, through a temporary file, for every row: a kill
    leaves the old file or the new one, never half a row (a run writes a few hundred rows).

    Resuming: a run that was interrupted logged steps past the checkpoint it resumes from; they
    are trained and logged again. So when training starts, rows with a step greater than the
    restored step are removed, and the file holds each step once; a test row replaces an earlier
    test row at the same step (a rerun of a finished run tests again).

    Args:
        path: the CSV file, e.g. `<model_dir>/metrics.csv`; its directory is created on the
            first write.
        log_every_n_steps: optimizer steps between step rows; pass the Trainer's
            `log_every_n_steps`, whose loop calls end at those steps.
    """

    writes_files = True
    FIRST_COLUMNS = ("kind", "epoch", "step")

    def __init__(self, path: str, *, log_every_n_steps: int = 50):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps ({log_every_n_steps}) must be at least 1")
        self.path = path
        self.log_every_n_steps = log_every_n_steps
        self._epoch = 0  # 0-based, as the hooks count.

    def on_train_begin(self, logs):
        if not self.trainer.is_chief or not tf.io.gfile.exists(self.path):
            return
        step = self.trainer.global_step
        columns, rows = self._read()
        kept = [row for row in rows if int(row["step"]) <= step]
        if len(kept) < len(rows):
            logging.info("%s: removed %d row(s) after step %d, the step this run resumes from",
                         self.path, len(rows) - len(kept), step)
            self._rewrite(columns, kept)

    def on_epoch_begin(self, epoch, logs):
        self._epoch = epoch

    def on_train_batch_end(self, step, logs):
        if step % self.log_every_n_steps == 0:
            self._append("step", step, logs)

    def on_epoch_end(self, epoch, logs):
        self._append("epoch", self.trainer.global_step, logs)

    def on_test_end(self, logs):
        if self.trainer.is_chief:  # A test replaces an earlier test at this step (a rerun).
            step = self.trainer.global_step
            columns, rows = self._read()
            self._rewrite(columns, [row for row in rows if not (
                row["kind"] == "test" and int(row["step"]) == step)])
        self._append("test", self.trainer.global_step, logs)

    def _append(self, kind, step, logs):
        """Adds one row (chief only), widening the header first if the row has new metrics."""
        if not self.trainer.is_chief:
            return
        row = {"kind": kind, "epoch": self._epoch + 1, "step": step, **logs}
        columns, rows = self._read()
        columns += [name for name in row if name not in columns]
        self._rewrite(columns, rows + [row])  # Whole and atomic: a kill leaves no half a row.

    def _read(self) -> tuple[list[str], list[dict]]:
        """The file's header and rows; a missing file has the first columns and no rows."""
        if not tf.io.gfile.exists(self.path):
            return list(self.FIRST_COLUMNS), []
        columns, rows = files.read_csv(self.path)
        return columns or list(self.FIRST_COLUMNS), rows

    def _rewrite(self, columns, rows):
        """Writes the whole file anew, atomically: a kill leaves the old one whole."""
        files.write_csv(self.path, columns, rows)


def _stage(name: str) -> tuple[str, str]:
    """Splits a log name into its stage's run and the metric: "val_loss" -> ("val", "loss").

    Names without a stage prefix ("learning_rate", "elapsed_seconds") belong to the train run.
    """
    stage, _, metric = name.partition("_")
    return (stage, metric) if stage in data.STAGES and metric else ("train", name)


def _code_block(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())
