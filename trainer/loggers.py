"""Loggers: callbacks that record a run for reading during and after it.

    TensorBoardLogger   <model_dir>/tensorboard/{train,val,test}/  (`tensorboard --logdir ...`)
    CSVLogger           <model_dir>/metrics.csv                    (pandas, a spreadsheet)

Both log the training metrics every `log_every_n_steps` optimizer steps and every epoch, always
against the optimizer step (`optimizer.iterations`), so a resumed run continues the same curves.
Put them after `LearningRateMonitor` to get its `learning_rate`. They write on the chief only,
and set `writes_files`, so the Trainer leaves them out of a `fast_dev_run`.
"""

import csv
import os

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import callbacks
from trainer import distribute
from trainer import summaries

_STAGES = ("train", "val", "test")


class TensorBoardLogger(callbacks.Callback):
    """Writes metrics, the run's flags, sample predictions and a test confusion matrix.

    One TensorBoard run per stage, so that a chart shows train, val and test under one tag:

        train/  step/<name>    every number of `on_train_batch_end`'s logs, every
                               `log_every_n_steps` steps: `loss` (that step's), the epoch's running
                               `train_loss` and `train_accuracy`, `images_per_s`, `learning_rate`
                epoch/<name>   the epoch's train_* metrics (prefix dropped), timings, learning rate
                flags          the run's flags (text), when training starts
        val/    epoch/<name>   the val_* metrics of every validation pass, at its step
                samples/images the first `num_samples` validation images, framed green where the
                               module is right and red where it is wrong
                samples/labels their true and predicted classes (text)
        test/   epoch/<name>   the test_* metrics
                confusion_matrix/heat_map  rows: true class, each row as fractions of its class
                confusion_matrix/counts    the counts, as a Markdown table

    An image and a text summary get different tags: TensorBoard shows a tag in one tab only.

    After a resume, the steps between the last checkpoint and the interruption are logged again;
    the event files keep both, so a chart may show those steps twice.

    Args:
        logdir: the directory to write into, e.g. `<model_dir>/tensorboard`; created on the
            first write.
        log_every_n_steps: optimizer steps between per-step entries; pass the Trainer's
            `log_every_n_steps`, whose loop calls end at those steps.
        flags_text: the run's settings, shown in the Text tab, e.g. the flags as a flagfile
            ("" writes none).
        num_samples: validation images to show with their predictions (0: none).
    """

    writes_files = True

    def __init__(self, *, logdir: str, log_every_n_steps: int = 50, flags_text: str = "",
                 num_samples: int = 8):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps ({log_every_n_steps}) must be at least 1")
        if num_samples < 0:
            raise ValueError(f"num_samples ({num_samples}) must be >= 0")
        self.logdir = logdir
        self.log_every_n_steps = log_every_n_steps
        self.flags_text = flags_text
        self.num_samples = num_samples
        self._writers: dict[str, tf.summary.SummaryWriter] = {}
        self._samples = None  # The same validation images every time: their predictions change.

    def on_train_begin(self, logs):
        if self.trainer.is_chief and self.flags_text:
            with self._writing("train"):
                # Indented four spaces: Markdown shows it verbatim, one flag per line.
                summaries.text("flags", _code_block(self.flags_text), self.trainer.global_step)

    def on_train_batch_end(self, step, logs):
        if self.trainer.is_chief and step % self.log_every_n_steps == 0:
            with self._writing("train"):
                for name, value in logs.items():
                    summaries.scalar(f"step/{name}", value, step)

    def on_validation_end(self, logs):
        if not self.trainer.is_chief:
            return
        step = self.trainer.global_step
        self._write_epoch_scalars(logs, step)
        if self.num_samples:
            self._write_samples(step)

    def on_epoch_end(self, epoch, logs):
        if not self.trainer.is_chief:
            return
        # val_* entries were written by on_validation_end, at the step they were measured.
        train_logs = {name: value for name, value in logs.items() if _stage(name)[0] != "val"}
        self._write_epoch_scalars(train_logs, self.trainer.global_step)
        for writer in self._writers.values():
            writer.flush()  # An epoch's summaries reach the disk, and TensorBoard, now.

    def on_train_end(self, logs):
        self._close()

    def on_test_end(self, logs):
        # Every worker predicts and gathers the labels (collectives under multi-worker training);
        # the labels travel the same distributed path, so they pair with the predictions.
        probabilities = self.trainer.predict(self.trainer.module, self.trainer.datamodule)
        labels = distribute.gathered_labels(self.trainer.strategy,
                                            self.trainer.datamodule.predict_dataset)
        if self.trainer.is_chief:
            step = self.trainer.global_step
            self._write_epoch_scalars(logs, step)
            self._write_confusion_matrix(labels, probabilities.argmax(axis=-1), step)
        self._close()

    # ---- Helpers: only the chief writes ----------------------------------------------------------

    def _writing(self, run: str):
        """Makes the writer of `run` (one of _STAGES) the default, creating it on first use."""
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.logdir, run))
        return self._writers[run].as_default()

    def _write_epoch_scalars(self, logs, step):
        """Writes `<stage>_<name>` entries as `epoch/<name>` in the stage's run (others: train)."""
        for name, value in logs.items():
            run, metric = _stage(name)
            with self._writing(run):
                summaries.scalar(f"epoch/{metric}", value, step)

    def _write_samples(self, step):
        """Frames sample validation images by whether the module classifies them correctly."""
        images, labels = self._sample_batch()
        # An eager call, on this process only: no collective, so only the chief needs to run it.
        probabilities = self.trainer.module.predict_step((images, labels))
        predicted, true = np.argmax(probabilities, axis=-1), labels.numpy()
        names = self.trainer.datamodule.class_names
        lines = [f"{i + 1}. true {names[label]} / predicted {names[guess]}"
                 f"{'' if label == guess else ' (wrong)'}"
                 for i, (label, guess) in enumerate(zip(true, predicted))]
        with self._writing("val"):
            summaries.images("samples/images", summaries.framed(images, predicted == true), step)
            summaries.text("samples/labels", "\n".join(lines), step)

    def _sample_batch(self):
        """The first `num_samples` examples of the validation set (taken once, then kept)."""
        if self._samples is None:
            dataset = self.trainer.datamodule.val_dataset(tf.distribute.InputContext())
            images, labels = next(iter(dataset))
            self._samples = images[:self.num_samples], labels[:self.num_samples]
        return self._samples

    def _write_confusion_matrix(self, labels, predicted, step):
        """Counts (true, predicted) pairs over the predicted (test) set; draws and lists them."""
        datamodule = self.trainer.datamodule
        num_classes = len(datamodule.class_names)
        matrix = tf.math.confusion_matrix(labels, predicted, num_classes=num_classes).numpy()
        with self._writing("test"):
            summaries.images("confusion_matrix/heat_map", summaries.heat_map(matrix), step)
            summaries.text("confusion_matrix/counts",
                           summaries.confusion_table(matrix, datamodule.class_names), step)

    def _close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}  # A later stage (the test after fit) opens new event files.


class CSVLogger(callbacks.Callback):
    """Appends one row per logged step, per epoch and per test to a CSV file.

    Columns: `kind` (step, epoch or test), `epoch` (1-based, as in the log lines), `step` (the
    optimizer step), then one column per metric in the order they first appeared. A step row
    holds `on_train_batch_end`'s logs (`loss` is that step's, `train_*` the epoch's running
    means), an epoch row the epoch's logs, a test row the `test_*` metrics.

    The header only grows, and every row matches it: when a row brings a metric the header lacks
    (the first epoch row after the step rows, a resumed run with more flags on), the file is
    rewritten once with the wider header and empty cells in the older rows. Nothing is dropped.

    Resuming: a run that was interrupted logged steps past the checkpoint it resumes from; they
    are trained and logged again. So when training starts, rows with a step greater than the
    restored step are removed, and the file holds each step once.

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
        if not self.trainer.is_chief or not os.path.exists(self.path):
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
        self._append("test", self.trainer.global_step, logs)

    def _append(self, kind, step, logs):
        """Adds one row (chief only), widening the header first if the row has new metrics."""
        if not self.trainer.is_chief:
            return
        row = {"kind": kind, "epoch": self._epoch + 1, "step": step, **logs}
        columns, _ = self._read(header_only=True)
        new_columns = [name for name in row if name not in columns]
        if new_columns:
            _, rows = self._read()
            columns = columns + new_columns
            self._rewrite(columns, rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, columns).writerow(row)

    def _read(self, header_only=False) -> tuple[list[str], list[dict]]:
        """The file's header and rows; a missing file has the first columns and no rows."""
        if not os.path.exists(self.path):
            return list(self.FIRST_COLUMNS), []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or self.FIRST_COLUMNS)
            return columns, [] if header_only else list(reader)

    def _rewrite(self, columns, rows):
        """Writes the whole file anew, through a temporary file: a kill leaves the old one whole."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.path)


def _stage(name: str) -> tuple[str, str]:
    """Splits a log name into its stage's run and the metric: "val_loss" -> ("val", "loss").

    Names without a stage prefix ("learning_rate", "elapsed_seconds") belong to the train run.
    """
    stage, _, metric = name.partition("_")
    return (stage, metric) if stage in _STAGES and metric else ("train", name)


def _code_block(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())
