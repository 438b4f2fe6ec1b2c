"""`Callback`: code that runs at fixed points of the Trainer's host loop, in Keras' vocabulary.

    on_train_begin(logs)                       once, before the first training step
      on_epoch_begin(epoch, logs)              every epoch (0-based `epoch`)
        on_train_batch_end(step, logs)         after each traced loop call, not after every step
        on_validation_end(logs)                after each validation pass
      on_epoch_end(epoch, logs)                the epoch's logs: train_*, val_*, timings
    on_train_end(logs)                         once, also after an early stop
    on_test_end(logs)                          after `Trainer.test`
    on_exception(error)                        when `fit` or `test` raises, before the error
                                               goes on up (a stop signal, divergence, a crash)

`on_train_batch_end` runs at host-loop boundaries: a traced call runs many steps, and the host
sees the run only between calls. `step` is the optimizer step count at that point. Callbacks get
the run's numbers through `logs`; some also use the Trainer's objects through `self.trainer`,
always between calls, never inside the graph (SamplePredictions runs the model on a few images,
EarlyStopping copies and restores the weights, LearningRateMonitor reads the optimizer). To stop
the run they call `trainer.request_stop(reason)` (the Trainer stops after the current loop call,
saves a checkpoint and reports the reason).

State that a resumed run needs (early-stopping counters, best scores, time used) goes into the
run's checkpoints through `state_dict`/`load_state_dict`; larger state (a copy of the weights)
through `checkpointed_variables`.
"""

import json

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

    def on_exception(self, error: BaseException) -> None:
        """Runs when `fit` or `test` raises `error` (`TrainingInterrupted`, `TrainingDiverged`,
        any other exception), before it goes on up: e.g. a tracker marks its run failed."""

    @property
    def state_key(self) -> str:
        """The name this callback's state is saved under; unique among a Trainer's callbacks."""
        return type(self).__name__

    def state_dict(self) -> dict:
        """JSON-serializable state to save in checkpoints (empty: nothing to save)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned."""

    def checkpointed_variables(self) -> list:
        """TensorFlow variables this callback keeps in the run's checkpoints (empty: none), for
        state too large for `state_dict`, such as a copy of the weights. Called once, inside
        the strategy's scope, after the module is built and before a checkpoint is restored."""
        return []

    @property
    def sets_learning_rate(self) -> bool:
        """Whether this callback decides the learning rate a run trains on (e.g. the rate found
        by `--lr_find` with `--learning_rate=auto`): a resumed run then keeps the checkpoint's
        rate for it to set, instead of the configured one."""
        return False

    @property
    def step_boundaries(self) -> tuple[int, ...]:
        """Optimizer steps at which a traced loop call must end, so that `on_train_batch_end`
        sees exactly these steps (e.g. where a profiler trace starts and stops)."""
        return ()


def with_defaults(callbacks, defaults: dict) -> list[Callback]:
    """`callbacks` after the enabled defaults ({class: enabled}) whose class it does not hold:
    a ProgressBar among `callbacks` replaces the default one."""
    given = {type(callback) for callback in callbacks}
    return [default() for default, enabled in defaults.items()
            if enabled and default not in given] + list(callbacks)


def checkpointed_variables(callbacks: list[Callback]) -> dict[str, list]:
    """{state_key: variables} of the callbacks that keep variables in the run's checkpoints."""
    found = {callback.state_key: callback.checkpointed_variables() for callback in callbacks}
    return {key: variables for key, variables in found.items() if variables}


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
