"""The framework: `Module` (model + steps), `Trainer` (the distributed loop) and their parts.

The loop, where `ls trainer/` shows it:

- `module.py`: `Module`, the LightningModule analogue, and the `LogBook` behind `Module.log`.
- `trainer.py`: `Trainer`, the public API and the host loop (plain Python).
- `steps.py`: every function the loop traces with `tf.function`: the math of a step.
- `evaluation.py`: validation, test and prediction passes, the host side.
- `config.py`: `LoopConfig` and `StepConfig`, the Trainer's settings.
- `schedule.py`: when things happen, in optimizer steps; `datasets.py`: the data per strategy.
- `optimization.py`: clipping, accumulation and fp16 loss scaling on all-reduced gradients.
- `distribute.py`: strategy selection and replica checks; `precision.py`: mixed precision.
- `gpu_check.py`: a warning when the machine's NVIDIA GPUs are invisible to TensorFlow.
- `checkpointing.py`: full-state checkpoints, exact resume, the best epochs.
- `stopping.py`: stopping on signals (voted across workers), on divergence and on NaN/Inf.
- `reporting.py`: the lines a run prints, and the training speed in them.
- `tuning.py`: the learning-rate finder (`--lr_find`).

Around it: `callbacks/` (callbacks, progress bar, loggers), `vision/` (the image classification
task: `ImageClassifier`, its pictures and its export), `cli/` (`--explain`, `--selftest`, the
evaluator task, the run's files) and `cluster/` (how the processes of a multi-worker run are
started: SLURM, the local launcher, Ray). `main.py` is the command line (`python -m trainer.main`,
or `trainer.main.run(argv)` from Python); `launch.py` starts it on N local workers
(`python -m trainer.launch`), `ray.py` on a Ray cluster (`python -m trainer.ray`), and
`runs.py` compares runs (`python -m trainer.runs runs/*`).
"""

# `python -m trainer.main` imports this package before trainer/main.py, and TensorFlow prints its
# C++ start-up lines when it is first imported (by the imports below): the command line's quiet
# log level must be in place before that. The programs of examples/ import it first for the same
# console; other programs that import `trainer` are left alone.
from trainer.cli import quiet

quiet.import_tensorflow()

# pylint: disable=wrong-import-position
from trainer import callbacks
from trainer.config import LoopConfig, StepConfig
from trainer.module import Module
from trainer.stopping import AnomalyDetected, TrainingDiverged, TrainingInterrupted
from trainer.trainer import Trainer
from trainer.vision.classifier import ImageClassifier

__all__ = ["AnomalyDetected", "ImageClassifier", "LoopConfig", "Module", "StepConfig", "Trainer",
           "TrainingDiverged", "TrainingInterrupted", "callbacks"]
