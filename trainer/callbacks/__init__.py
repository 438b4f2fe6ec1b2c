"""Callbacks and loggers: code that runs at fixed points of the Trainer's host loop.

- `base.py`: `Callback` (the hooks, in Keras' vocabulary) and `CallbackState` (their
  checkpointed state).
- `early_stopping.py`, `timer.py`, `profiler.py`: callbacks that stop or trace a run.
- `console.py`: `ProgressBar` and `ModelSummary`, what a run shows on the console.
- `loggers.py` (+ `summaries.py`): `LearningRateMonitor`, `TensorBoardLogger`, `CSVLogger`.
- `hparams.py`: `HParamsLogger`, the run's hyperparameters for TensorBoard's HParams dashboard.
- `mlflow_logger.py`: `MLflowLogger`, the run in MLflow (params, metrics, files, status);
  `background.py`: its calls to the store, made on a background thread.
"""

from trainer.callbacks.base import Callback, CallbackState
from trainer.callbacks.console import ModelSummary, ProgressBar
from trainer.callbacks.early_stopping import EarlyStopping
from trainer.callbacks.hparams import HParamsLogger
from trainer.callbacks.loggers import CSVLogger, LearningRateMonitor, TensorBoardLogger
from trainer.callbacks.mlflow_logger import MLflowLogger
from trainer.callbacks.profiler import Profiler
from trainer.callbacks.timer import Timer, parse_duration

__all__ = ["CSVLogger", "Callback", "CallbackState", "EarlyStopping", "HParamsLogger",
           "LearningRateMonitor", "MLflowLogger", "ModelSummary", "Profiler", "ProgressBar",
           "TensorBoardLogger", "Timer", "parse_duration"]
