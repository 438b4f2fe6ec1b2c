"""Callbacks: code that runs at fixed points of the Trainer's host loop, in Keras' vocabulary.

    on_train_begin(logs)                       once, before the first training step
      on_epoch_begin(epoch, logs)              every epoch (0-based `epoch`)
        on_train_batch_end(step, logs)         after each traced loop call, not after every step
        on_validation_end(logs)                after each validation pass
      on_epoch_end(epoch, logs)                the epoch's logs: train_*, val_*, timings
    on_train_end(logs)                         once, also after an early stop
    on_test_end(logs)                          after `Trainer.test`

`on_train_batch_end` runs at host-loop boundaries: a traced call runs many steps, and the host
sees the run only between calls. `step` is the optimizer step count at that point. Callbacks get
what they need through `logs`; to stop the run they call `trainer.request_stop(reason)` (the
Trainer stops after the current loop call, saves a checkpoint and reports the reason).

State that a resumed run needs (early-stopping counters, best scores, time used) goes into the
run's checkpoints through `state_dict`/`load_state_dict`.
"""

import json
import re
import time

from absl import logging
import tensorflow as tf


class Callback:
    """Base class: override the hooks you need. `self.trainer` is set before `on_train_begin`."""

    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict) -> None:
        """Runs once when `fit` starts, after the module is built and any checkpoint restored."""

    def on_train_end(self, logs: dict) -> None:
        """Runs once when `fit` ends, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        """Runs before each epoch's first training step."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Runs after each epoch's training and validation, with the epoch's logs."""

    def on_train_batch_end(self, step: int, logs: dict) -> None:
        """Runs after each traced training loop call, with the epoch's running train metrics,
        the last step's `loss` and the `images_per_s` since the previous call."""

    def on_validation_end(self, logs: dict) -> None:
        """Runs after each validation pass with its `val_*` logs."""

    def on_test_end(self, logs: dict) -> None:
        """Runs after `Trainer.test` with its `test_*` logs."""

    @property
    def state_key(self) -> str:
        """The name this callback's state is saved under; unique among a Trainer's callbacks."""
        return type(self).__name__

    def state_dict(self) -> dict:
        """JSON-serializable state to save in checkpoints (empty: nothing to save)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned."""


def with_defaults(callbacks, defaults: dict) -> list[Callback]:
    """`callbacks` after the enabled defaults ({class: enabled}) whose class it does not hold:
    a ProgressBar among `callbacks` replaces the default one."""
    given = {type(callback) for callback in callbacks}
    return [default() for default, enabled in defaults.items()
            if enabled and default not in given] + list(callbacks)


class CallbackState(tf.train.experimental.PythonState):
    """Puts every callback's `state_dict` into the run's `tf.train.Checkpoint`, as one JSON string."""

    def __init__(self, callbacks: list[Callback]):
        self._callbacks = callbacks
        keys = [callback.state_key for callback in callbacks]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"callbacks ({duplicates}) share a state_key; give each its own "
                             "state_key so their checkpointed state does not collide")

    def serialize(self) -> str:
        return json.dumps({c.state_key: c.state_dict() for c in self._callbacks})

    def deserialize(self, string_value) -> None:
        saved = json.loads(string_value)
        for callback in self._callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])


class EarlyStopping(Callback):
    """Stops training when a monitored metric has stopped improving.

    Checked after every validation pass (after every epoch if the metric is a training metric).

    Args:
        monitor: the logged metric to watch, e.g. "val_loss" or "val_accuracy".
        min_delta: an improvement must exceed this much to count.
        patience: checks without improvement before stopping.
        mode: "min", "max", or "auto" (max for names containing "acc", else min).
        restore_best_weights: when stopping, put back the weights of the best check.
    """

    def __init__(self, *, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 3,
                 mode: str = "auto", restore_best_weights: bool = False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode ({mode!r}) must be one of ['auto', 'min', 'max']")
        if patience < 1:
            raise ValueError(f"patience ({patience}) must be at least 1")
        if min_delta < 0:
            raise ValueError(f"min_delta ({min_delta}) must be >= 0")
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.higher_is_better = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.wait = 0  # Checks since the last improvement.
        self.stopped_at_step: int | None = None
        self._best_weights = None
        self._fitting = False

    def on_train_begin(self, logs):
        self._fitting = True

    def on_train_end(self, logs):
        self._fitting = False

    def on_validation_end(self, logs):
        if self._fitting and self.monitor.startswith("val_"):  # Not for `Trainer.validate`.
            self._check(logs)

    def on_epoch_end(self, epoch, logs):
        if not self.monitor.startswith("val_"):
            self._check(logs)

    def _check(self, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitor ({self.monitor!r}) is not a logged metric; "
                             f"the logs have {sorted(logs)}")
        score = float(logs[self.monitor])
        if self._improved(score):
            self.best, self.wait = score, 0
            if self.restore_best_weights:
                self._best_weights = self.trainer.module.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_at_step = self.trainer.global_step
            self.trainer.request_stop("early_stopping")
            logging.info("early stopping: %s has not improved on %.4f for %d check(s)",
                         self.monitor, self.best, self.wait)
            if self._best_weights is not None:
                self.trainer.module.set_weights(self._best_weights)
                logging.info("early stopping: restored the weights of the best check")

    def _improved(self, score):
        if self.best is None:
            return True
        if self.higher_is_better:
            return score > self.best + self.min_delta
        return score < self.best - self.min_delta

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "stopped_at_step": self.stopped_at_step}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]
        self.stopped_at_step = state["stopped_at_step"]


def parse_duration(text: str) -> float:
    """Parses "DD:HH:MM:SS", "HH:MM:SS" or "MM:SS" into seconds.

    Raises:
        ValueError: naming the value, if it is not one of those forms.
    """
    if not re.fullmatch(r"\d+(:\d+){1,3}", text or ""):
        raise ValueError(f"max_time ({text!r}) must be DD:HH:MM:SS, HH:MM:SS or MM:SS, "
                         "e.g. 00:12:00:00 for 12 hours")
    seconds = 0.0
    for part, unit in zip(reversed(text.split(":")), (1, 60, 3600, 86400)):
        seconds += int(part) * unit
    return seconds


class Timer(Callback):
    """Stops training once it has run for `max_seconds` (time before a resume counts too).

    The check runs after each traced loop call, so the run stops within one call of the limit;
    the Trainer then saves a checkpoint, and a rerun with a larger limit continues from it.
    """

    def __init__(self, max_seconds: float):
        if max_seconds <= 0:
            raise ValueError(f"max_time ({max_seconds} s) must be positive")
        self.max_seconds = max_seconds
        self.used_before = 0.0  # Training seconds of earlier runs that this one resumes.
        self._start = None

    def on_train_begin(self, logs):
        self._start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.used_before + (time.monotonic() - self._start if self._start else 0.0)

    def on_train_batch_end(self, step, logs):
        if self.elapsed >= self.max_seconds and not self.trainer.should_stop:
            self.trainer.request_stop("max_time")
            logging.info("max_time: stopping at step %d after %.0f s of training (limit %.0f s)",
                         step, self.elapsed, self.max_seconds)

    def state_dict(self):
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state):
        self.used_before = state["elapsed"]


class LearningRateMonitor(Callback):
    """Adds the optimizer's current `learning_rate` to the per-loop and per-epoch logs, so that
    loggers placed after it record the schedule."""

    def on_train_batch_end(self, step, logs):
        logs["learning_rate"] = self._learning_rate()

    def on_epoch_end(self, epoch, logs):
        logs["learning_rate"] = self._learning_rate()

    def _learning_rate(self) -> float:
        # A variable (a MirroredVariable under a strategy), or a schedule's value at `iterations`.
        return float(tf.convert_to_tensor(self.trainer.optimizer.learning_rate))


class ModelSummary(Callback):
    """Prints the module's layers and parameter counts when training begins (chief only)."""

    def on_train_begin(self, logs):
        if self.trainer.is_chief:
            self.trainer.module.summary(expand_nested=True)


class Profiler(Callback):
    """Records a TensorFlow profiler trace of the optimizer steps after `first` up to `last`.

    The Trainer ends its loop calls at both steps, so the trace covers exactly those steps.
    Open it in TensorBoard's Profile tab (the trace goes to `logdir/plugins/profile`).
    """

    def __init__(self, first: int, last: int, logdir: str):
        self.first, self.last, self.logdir = first, last, logdir
        self._running = False

    def on_train_begin(self, logs):
        self.on_train_batch_end(self.trainer.global_step, logs)

    def on_train_batch_end(self, step, logs):
        if not self.trainer.is_chief:
            return
        if step == self.first and not self._running:
            tf.profiler.experimental.start(self.logdir)
            self._running = True
        elif step >= self.last and self._running:
            self._stop()

    def on_train_end(self, logs):
        if self._running:
            self._stop()

    def _stop(self):
        tf.profiler.experimental.stop()
        self._running = False
        logging.info("profiler: traced steps %d-%d into %s", self.first + 1, self.last, self.logdir)
