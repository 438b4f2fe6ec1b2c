"""`EarlyStopping`: stop training when a monitored metric stops improving."""

from absl import logging
import tensorflow as tf

from trainer.callbacks import base


class EarlyStopping(base.Callback):
    """Stops training when a monitored metric has stopped improving.

    Checked after every validation pass (after every epoch if the metric is a training metric).

    Args:
        monitor: the logged metric to watch, e.g. "val_loss" or "val_accuracy".
        min_delta: an improvement must exceed this much to count.
        patience: checks without improvement before stopping.
        mode: "min", "max", or "auto" (max for names containing "acc", else min).
        restore_best_weights: when stopping, make the model of the best check the run's model
            again (trainer/model_weights.py: the moving averages, with EMA). Its copy is kept in
            the run's checkpoints, so this also works after a resume.
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
        self._best_weights: list[tf.Variable] | None = None  # Checkpointed with the run.
        self._fitting = False

    def checkpointed_variables(self):
        if self.restore_best_weights and self._best_weights is None:
            self._best_weights = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False)
                                  for w in self.trainer.module.weights]
        return self._best_weights or []

    def on_train_begin(self, logs):
        self._fitting = True
        if self.monitor.startswith("val_") and not self.trainer.data.has("val"):
            logging.warning("early stopping is off in this run: it watches %s, and there is no "
                            "validation data (no validation split, or limit_val_batches=0)",
                            self.monitor)
        if self.restore_best_weights and self._best_weights is None:
            with self.trainer.strategy.scope():  # Without checkpoints: created here.
                self.checkpointed_variables()
        if self.wait >= self.patience:  # Restored from a run that had already stopped.
            self.trainer.request_stop("early_stopping")

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
            if self.restore_best_weights:  # The model this check scored.
                for copy, value in zip(self._best_weights, self.trainer.model_weights.values()):
                    copy.assign(value)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_at_step = self.trainer.global_step
            self.trainer.request_stop("early_stopping")
            logging.info("early stopping: %s has not improved on %.4f for %d check(s)",
                         self.monitor, self.best, self.wait)
            if self.restore_best_weights:
                self.trainer.model_weights.assign([copy.value() for copy in self._best_weights])
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
