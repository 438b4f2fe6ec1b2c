"""`HParamsLogger`: a run's hyperparameters for TensorBoard's HParams dashboard.

The HParams tab lists every run of a log directory side by side: one row per run, with its
hyperparameters and the last value of each of its scalar charts (`val/epoch/accuracy`,
`test/epoch/loss`, ...), to sort, filter and plot against each other. Point TensorBoard at the
parent of the runs' directories to compare them:

    tensorboard --logdir runs/

TensorBoard finds a run's hyperparameters in a summary written with its hparams API
(`tensorboard.plugins.hparams.api.hparams`) into the run's TensorBoard directory itself, beside its
`train/`, `val/` and `test/` runs, whose charts become its metrics. No experiment summary is
written: TensorBoard then builds the table from the runs it finds, so any number of runs, started
at any time, compare in one directory.

The hparams API is TensorBoard's code, not TensorFlow's: it needs the tensorboard package
(`pip install ".[tensorboard]"`). Without it nothing is written and the log says so, once.
"""

import os

from absl import logging

from trainer.callbacks import base
from trainer.callbacks import loggers

INSTALL = 'pip install ".[tensorboard]"'


class HParamsLogger(base.Callback):
    """Writes the run's hyperparameters into its TensorBoard directory when training begins.

    A resumed run writes them again; TensorBoard shows the first. Only the chief writes.

    Args:
        tensorboard: the run's `TensorBoardLogger`; the hyperparameters go into its `logdir`.
            Place this callback before it: the logger closes its files when training ends.
        hparams: {name: value}: bool, int, float or str; None (a setting that is off) leaves
            the run's cell empty; anything else is written as its string.
        trial_id: the run's name in the dashboard's table; default: the name of the directory
            that holds `tensorboard.logdir` (the model_dir of `<model_dir>/tensorboard`).
    """

    writes_files = True

    def __init__(self, tensorboard: loggers.TensorBoardLogger, *, hparams: dict,
                 trial_id: str | None = None):
        self.tensorboard = tensorboard
        self.hparams = {name: value if isinstance(value, (bool, int, float, str)) else str(value)
                        for name, value in hparams.items() if value is not None}
        self.trial_id = trial_id or os.path.basename(
            os.path.dirname(os.path.abspath(tensorboard.logdir)))

    def on_train_begin(self, logs):
        if not self.trainer.is_chief:
            return
        try:
            from tensorboard.plugins.hparams import api  # pylint: disable=import-outside-toplevel
        except ImportError:
            logging.info("HParams dashboard: no hyperparameters written, the tensorboard package "
                         "is not installed (%s)", INSTALL)
            return
        with self.tensorboard.writing(""):  # The run's TensorBoard directory itself.
            api.hparams(self.hparams, trial_id=self.trial_id)
        self.tensorboard.flush()
