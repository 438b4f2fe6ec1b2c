"""The framework: `Module` (model + steps), `Trainer` (the distributed loop) and their helpers.

- `module.py`: `Module`, the LightningModule analogue, and the `LogBook` behind `Module.log`.
- `classifier.py`: `ImageClassifier`, the tutorial's task.
- `trainer.py`: `Trainer`, the hand-written `tf.function` loop; `schedule.py` (when things
  happen, in optimizer steps), `datasets.py` (the data per strategy), `evaluation.py` (hooks on
  replicas with empty batches), `reporting.py` (the printed lines).
- `distribute.py`: strategy selection and replica checks.
- `callbacks.py`, `progress.py`, `loggers.py` (+ `summaries.py`): the Callback hooks;
  EarlyStopping, Timer, ProgressBar, TensorBoard and CSV loggers, ...
- `optimization.py`: clipping, accumulation and fp16 loss scaling on all-reduced gradients.
- `stopping.py`: stopping on signals and on NaN/Inf, with clear messages.
- `checkpointing.py`: full-state checkpoints and exact resume.
- `precision.py`, `plots.py`: mixed-precision policies; PNG plots of a run.
- `selftest.py`, `explain.py`: `--selftest` (N replicas train like one device, checked) and
  `--explain` (the resolved plan, in words).
- `main.py`: the command line (`python -m trainer.main`).
"""

from trainer.classifier import ImageClassifier
from trainer.module import Module
from trainer.trainer import AnomalyDetected, Trainer, TrainingInterrupted

__all__ = ["AnomalyDetected", "ImageClassifier", "Module", "Trainer", "TrainingInterrupted"]
