"""The `Trainer`: runs a `Module` under a `tf.distribute` strategy. Its public API and host loop.

Read `fit` top to bottom: it is the host loop, plain Python, between calls of traced functions.
The math of a step, and everything else that runs inside a `tf.function`, is in trainer/steps.py.
"""

import contextlib
import functools
import signal
import time

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import checkpointing
from trainer import config as config_lib
from trainer import datasets
from trainer import distribute
from trainer import evaluation
from trainer import faults
from trainer import model_weights as model_weights_lib
from trainer import module as module_lib
from trainer import optimization
from trainer import precision as precision_lib
from trainer import reporting
from trainer import schedule as schedule_lib
from trainer import steps as steps_lib
from trainer import stopping
from trainer.callbacks import base as callbacks_base
from trainer.callbacks import console


def _telling_callbacks_of_exceptions(method):
    """Calls the callbacks' `on_exception(error)` when `method` raises, before the error goes on
    up: a tracker then records how the run ended (stopped by a signal, diverged, crashed)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException as error:
            self._call("on_exception", error)  # pylint: disable=protected-access
            raise
    return wrapper


class Trainer:
    """Fits, validates, tests and predicts with a `Module` under a `tf.distribute` strategy.

    `fit` in pseudocode; lines marked [traced] run inside a `tf.function`, the rest is Python:

        with strategy.scope():
            build the module's variables, its optimizer and its logged metrics
            restore the latest checkpoint, if any
        run num_sanity_val_steps validation batches         [traced]
        start_epoch, steps_done = divmod(optimizer.iterations, steps_per_epoch)
        train_iterator = iter(distributed training dataset)   # endless: epoch after epoch
        for epoch in range(start_epoch, epochs):
            reset the training metrics (unless resuming mid-epoch)
            while the epoch has steps left and nothing asked to stop:
                train_loop(train_iterator, n)    [traced] n times strategy.run(train_step)
                stop if the loss or a weight is NaN or Inf (nothing more is written)
                callbacks; validate, checkpoint when due  # the only host sync: once per n steps
            eval_loop(iter(validation dataset))  [traced] strategy.run(validation_step) per batch
            callbacks get the epoch's logs; rank the epoch; save a checkpoint

    The traced functions are `StepFunctions`' (trainer/steps.py). `RunSchedule`
    (trainer/schedule.py) decides when the host loop validates, logs, checkpoints and stops. The
    only step counter is `optimizer.iterations`: optimizer steps, not micro-batches.

    Settings come in two frozen configs (trainer/config.py): `LoopConfig` (how long, how much data,
    when to validate) and `StepConfig` (precision, clipping, accumulation, ...). Their fields can
    also be passed as flat keyword arguments: `Trainer(epochs=5, gradient_clip_val=1.0)` is
    `Trainer(loop_config=LoopConfig(epochs=5), step_config=StepConfig(gradient_clip_val=1.0))`.

    Args:
        strategy: the `tf.distribute.Strategy` to run under; default: TensorFlow's default
            strategy (one device). Create the module inside `strategy.scope()`.
        callbacks: `Callback`s, called in order at the points listed in trainer/callbacks/base.py.
        checkpointer: saves the run's full state at its cadence, at epoch ends and when the run
            is stopped; restores the latest (or `resume_from`) at set-up. None: no checkpoints.
        resume_from: a checkpoint path to restore instead of the checkpointer's latest.
        best_models: ranks every validated epoch by a monitored metric and keeps the best weights.
        enable_progress_bar: add a `ProgressBar` (drawn by the chief only).
        enable_model_summary: add a `ModelSummary`, printed when training begins.
        loop_config, step_config: the settings; default: the configs' defaults.
        **options: fields of `LoopConfig` or `StepConfig`, applied on top of the configs.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy | None = None, callbacks=(),
                 checkpointer: checkpointing.Checkpointer | None = None, resume_from=None,
                 best_models: checkpointing.BestModels | None = None,
                 enable_progress_bar: bool = True, enable_model_summary: bool = True,
                 loop_config: config_lib.LoopConfig | None = None,
                 step_config: config_lib.StepConfig | None = None, **options):
        self.loop_config, self.step_config = config_lib.split_options(loop_config, step_config,
                                                                      options)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief = distribute.is_chief(self.strategy)
        if self.loop_config.fast_dev_run:  # One batch of everything; nothing written.
            self.loop_config = self.loop_config.for_fast_dev_run()
            checkpointer, best_models = None, None
            callbacks = [c for c in callbacks if not getattr(c, "writes_files", False)]
        self.checkpointer, self.best_models = checkpointer, best_models
        self.resume_from = resume_from
        self.callbacks = callbacks_base.with_defaults(callbacks, {
            console.ProgressBar: enable_progress_bar, console.ModelSummary: enable_model_summary})
        for callback in self.callbacks:
            callback.set_trainer(self)
        self.should_stop = False  # Set by callbacks (and signals) to end `fit` after this call.
        self.stop_reason: str | None = None
        self.steps_per_epoch: int | None = None
        self.schedule: schedule_lib.RunSchedule | None = None
        self.module = self.optimizer = self.datamodule = self.model_weights = None
        self.record = checkpointing.RunRecord()  # The per-epoch history; checkpointed.
        self._stop_signal = None
        self._saved_step = None

    def request_stop(self, reason: str) -> None:
        """Ends `fit` after the current loop call (with a checkpoint); `reason` reaches the logs."""
        self.should_stop, self.stop_reason = True, reason

    @property
    def history(self) -> list[dict]:
        """One entry per epoch trained, resumed runs included: its `epoch`, `step` and logs."""
        return self.record.history

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, read from the device: a host sync."""
        return int(self.optimizer.iterations.numpy())

    # ---- Public entry points (eager) ---------------------------------------------------------

    @_telling_callbacks_of_exceptions
    def fit(self, module, datamodule) -> dict[str, float]:
        """Trains `module` on `datamodule` for `epochs` epochs (or `max_steps`), validating as set.

        A module that was already trained (its optimizer has taken steps) continues from the epoch
        its step count is in, rather than starting over.

        Returns:
            The last epoch's logs (`train_loss`, `val_accuracy`, ...) plus `steps`, `epochs`,
            `stop_reason` and `wall_time_s`.
        """
        start_time = time.perf_counter()
        self.setup(module, datamodule)
        self.schedule = self._make_schedule()  # Once per fit: the settings may change between fits.
        for line in reporting.plan_lines(self):
            self._print(line)
        if (self.best_models and self.best_models.monitor.startswith("val_")
                and not self.data.has("val")):
            self._print(f"no validation data: nothing is ranked by {self.best_models.monitor}; "
                        "the last model is the run's model")
        self.should_stop, self.stop_reason = False, None
        self._stop_signal = None  # A signal that stopped an earlier fit is spent.
        self._call("on_train_begin", {})  # A restored callback may stop the run at once.
        # Where to start follows from the step count alone (> 0 after a restore or an earlier
        # fit): the data of any epoch can be rebuilt from its number.
        start_epoch, steps_done = divmod(self.global_step, self.steps_per_epoch)
        if self.should_stop or self.schedule.finished(start_epoch, self.global_step):
            self._print(f"training had already finished at step {self.global_step}; "
                        "completing the end phase")
        else:
            self._train(start_epoch, steps_done, start_time)
        self.evaluator.average_replica_copies()
        last_epoch_logs = self.record.last_logs()
        self.stop_reason = self.stop_reason or self.schedule.end_reason(self.global_step)
        self._call("on_train_end", dict(last_epoch_logs))
        return {**last_epoch_logs, "steps": self.global_step, "epochs": self.loop_config.epochs,
                "stop_reason": self.stop_reason, "wall_time_s": time.perf_counter() - start_time}

    def validate(self, module, datamodule) -> dict[str, float]:
        """Runs `validation_step` over the validation set with the run's model (`model_weights`);
        returns `val_*` means."""
        self.setup(module, datamodule)
        self.data.require("val")
        return self._validate()

    @_telling_callbacks_of_exceptions
    def test(self, module, datamodule, *, live_weights: bool = False) -> dict[str, float]:
        """Runs `test_step` over the test set; returns `test_*` means.

        It tests the run's model (`model_weights`): with moving averages of the weights (EMA),
        the averages, as validation scores them. `live_weights=True` tests the module's live
        weights instead, as `live_test_*`, without telling the callbacks.
        """
        self.setup(module, datamodule)
        self.data.require("test")
        faults.reached("test")
        with contextlib.nullcontext() if live_weights else self.model_weights.in_module():
            logs = self.evaluator.evaluate("test", limit=self.loop_config.limit_test_batches)
        if live_weights:
            logs = {f"live_{name}": value for name, value in logs.items()}
        self._print(reporting.summary("test, live weights" if live_weights else "test", logs))
        if not live_weights:
            self._call("on_test_end", logs)
        return logs

    def predict(self, module, datamodule, *, stage: str = "predict") -> np.ndarray:
        """Returns the model's `predict_step` outputs over `datamodule.predict_dataset` (or the
        "val" or "test" dataset) in `strategy.gather`'s order: per batch, replica by replica,
        which is dataset order when batches are slices of global batches
        (data/image_classification.py)."""
        self.setup(module, datamodule)
        with self.model_weights.in_module():
            return self.evaluator.predict(stage)

    def restore_best(self) -> dict | None:
        """Makes the best ranked weights (`best_models`) the run's model, in the module and, with
        EMA, in the averages; returns the best entry (None: nothing ranked, nothing changes)."""
        if not self.best_models or not self.best_models.best:
            return None
        with self.strategy.scope():
            return self.best_models.restore_best(self.model_weights)

    # ---- Set-up: every variable is created inside strategy.scope() --------------------------

    def setup(self, module, datamodule) -> None:
        """Prepares `datamodule` and, the first time it sees `module`, creates the module's
        variables and optimizer inside the strategy's scope and restores the checkpoint.

        `fit`, `validate`, `test` and `predict` call it. A module this Trainer has seen before keeps
        its optimizer (step count, moments, moving averages) also with another DataModule.
        """
        if module is self.module and datamodule is self.datamodule:
            return
        datasets.prepare(datamodule, self.strategy,
                         overfit_batches=self.loop_config.overfit_batches)
        precision_lib.check_module(module, self.step_config.precision)
        micro_batches = self.step_config.accumulate_grad_batches
        self.steps_per_epoch = schedule_lib.optimizer_steps_per_epoch(
            datamodule.steps_per_epoch(), limit_train_batches=self.loop_config.limit_train_batches,
            accumulate_grad_batches=micro_batches)
        # The loss of each micro-batch is divided by everything one optimizer step sees.
        module.global_batch_size = datamodule.batch_size * micro_batches
        module.micro_batches_per_step = micro_batches
        module.total_steps = self._make_schedule().total_steps  # For learning-rate schedules.
        new_module = module is not self.module
        if new_module:
            with self.strategy.scope():  # Every variable is created here: a copy per replica.
                optimizer = module_lib.build_with_optimizer(module, datamodule.input_shape)
                distribute.check_created_in_scope(self.strategy, module.variables)
                distribute.warn_about_shared_random_draws(self.strategy, module)
                self.step_functions = steps_lib.StepFunctions(
                    strategy=self.strategy, module=module, optimizer=optimizer,
                    config=self.step_config)
            self.module, self.optimizer = module, optimizer
            self.model_weights = model_weights_lib.ModelWeights(module, optimizer)
        self.datamodule = datamodule
        self.data = datasets.DistributedData(self.strategy, datamodule, micro_batches=micro_batches,
                                             limits=self.loop_config.limit)
        self.evaluator = evaluation.Evaluator(self.strategy, module, datamodule, self.data,
                                              self.step_functions)
        module.logbook.create_for(self.strategy, "train", module.training_step,
                                  datamodule.train_dataset)
        if new_module and self.checkpointer:
            self._restore_checkpoint()

    def _make_schedule(self) -> schedule_lib.RunSchedule:
        return schedule_lib.RunSchedule.for_fit(
            self.loop_config, steps_per_epoch=self.steps_per_epoch,
            checkpoint_every_n_steps=self.checkpointer.every_n_steps if self.checkpointer else None,
            boundaries=tuple(step for c in self.callbacks for step in c.step_boundaries))

    # ---- Training: the host loop ---------------------------------------------------------------

    def _train(self, start_epoch, steps_done, start_time):
        """The epochs of `fit`, from `start_epoch` (its first `steps_done` steps already taken)."""
        batches = self.loop_config.num_sanity_val_steps
        if batches and self.data.has("val"):  # A broken validation_step fails now, not in an hour.
            logs = self.evaluator.sanity_check(batches)
            self._print(reporting.summary(f"sanity check: {batches} validation batches ran", logs))
        train_iterator = iter(self.data.training(  # Long-lived: its buffers stay warm.
            start_epoch=start_epoch, steps_done=steps_done, steps_per_epoch=self.steps_per_epoch))
        with stopping.on_signals(self):
            for epoch in range(start_epoch, self.loop_config.epochs):
                if self.should_stop or self.schedule.finished(epoch, self.global_step):
                    break
                self._call("on_epoch_begin", epoch, {})
                logs = self._train_epoch(train_iterator, epoch)
                step = self.global_step  # Read once: nothing below takes an optimizer step.
                if self.schedule.validate_at_epoch_end(epoch, step) and self.data.has("val"):
                    logs.update(self._validate(epoch))
                logs["elapsed_seconds"] = time.perf_counter() - start_time
                self.record.end_epoch(epoch, step, logs)
                self._print(reporting.epoch_line(epoch, self.loop_config.epochs, step, logs))
                self._rank(epoch, logs, validation=False)
                self._call("on_epoch_end", epoch, logs)
                # The epoch's checkpoint comes after its bookkeeping, so that it holds the
                # epoch's history entry; a signal during the validation or the callbacks stops
                # the run here, with that checkpoint.
                self._save_and_maybe_stop(step, epoch_end=True)
            # A signal during the last save still stops the run before the end phase.
            self._save_and_maybe_stop(self.global_step, epoch_end=True)

    def _train_epoch(self, iterator, epoch):
        """Runs one epoch of training steps, `steps_per_loop` per call; returns the epoch's logs."""
        train_loop = self.step_functions.traced("train", self.step_functions.train_loop)
        end_step = self.schedule.epoch_end(epoch)
        step = self.global_step
        if step == epoch * self.steps_per_epoch:  # (A run resumed mid-epoch keeps its means.)
            self.module.logbook.reset("train")
            self.record.epoch_validation = {}
        speed = reporting.Throughput(step, examples_per_step=self.module.global_batch_size)
        train_logs = None  # The training metrics' running means, as the last loop call read them.
        while step < end_step and not self.should_stop:
            out = train_loop(iterator, tf.constant(self.schedule.steps_in_next_loop(step, epoch)))
            # The call computed all of these: reading them waits for it once (one host sync per
            # call, never one per step), and the checks below make no further device calls.
            loss, previous_step, step = float(out["loss"]), step, int(out["step"])
            if self.step_config.detect_anomaly and not out["healthy"]:
                raise stopping.AnomalyDetected.at(step, loss, self.checkpointer)
            # Before anything is logged or saved: a diverged model must not overwrite a good one.
            stopping.stop_if_diverged(loss, weights_finite=bool(out["weights_finite"]),
                                      first_step=previous_step + 1, step=step,
                                      checkpointer=self.checkpointer)
            train_logs = {name: float(value) for name, value in out["metrics"].items()}
            self._call("on_train_batch_end", step, dict(train_logs, loss=loss,
                                                        images_per_s=speed.since(step)))
            if self.schedule.validate_after_loop(step) and self.data.has("val"):
                self.record.epoch_validation = self._validate(epoch)
            if step < end_step:  # The epoch's end is saved by fit, after its bookkeeping.
                self._save_and_maybe_stop(step)
            faults.reached("train_call")
        if train_logs is None:  # Stopped before the epoch's first call: the restored means.
            train_logs = self.module.logbook.results("train")
        return {**train_logs, **self.record.epoch_validation, **self.step_functions.logs(),
                **speed.epoch_logs(step)}

    # ---- Evaluation ----------------------------------------------------------------------------

    def _validate(self, epoch=None):
        """Validates the run's model; during fit (`epoch` given) it is ranked at once."""
        faults.reached("validation")
        with self.model_weights.in_module():  # The averages, with EMA: what every consumer gets.
            logs = self.evaluator.evaluate("val", limit=self.loop_config.limit_val_batches)
        if epoch is not None:
            self._rank(epoch, logs, validation=True)
        self._call("on_validation_end", logs)  # After ranking: a callback may change weights.
        return logs

    def _rank(self, epoch, logs, *, validation):
        """Ranks the run's model by `logs` before anything changes it: a `val_*` monitor right
        after each validation (mid-epoch ones included), any other monitor with the epoch's logs."""
        if self.best_models and self.best_models.monitor.startswith("val_") == validation:
            self.best_models.update(self.model_weights, epoch, self.global_step, logs)

    # ---- Checkpoints and stopping ----------------------------------------------------------------

    def _restore_checkpoint(self):
        """Tracks the run's state and restores the given or latest checkpoint, inside the scope."""
        # Callbacks may create variables to checkpoint. The learning rate is a setting, not
        # state: the configured one wins, unless a callback sets it (the finder's, with "auto").
        keeping = (contextlib.nullcontext() if any(c.sets_learning_rate for c in self.callbacks)
                   else optimization.keeping_learning_rate(self.optimizer, self._print))
        with self.strategy.scope(), keeping:
            self.checkpointer.track(
                module=self.module, optimizer=self.optimizer,
                train_metrics=self.module.logbook.variables("train"),
                untracked=checkpointing.untracked_variables(self.module),
                callbacks=callbacks_base.CallbackState(self.callbacks),
                callback_variables=callbacks_base.checkpointed_variables(self.callbacks),
                record=self.record,
                # Bookkeeping a flag may add on a resume (--detect_anomaly, --precision=16-mixed).
                optional=self.step_functions.checkpointed())
            restored = self.checkpointer.restore(self.resume_from)
        if restored:
            epoch, batch = divmod(self.global_step, self.steps_per_epoch)
            self._print(f"resumed from {restored}: step {self.global_step}, epoch {epoch + 1} at "
                        f"batch {batch}")

    def _save_and_maybe_stop(self, step, *, epoch_end=False):
        """Saves when the cadence says so (and at every epoch end); after a SIGTERM/SIGINT on any
        worker, saves and stops the run."""
        signalled = stopping.vote(self)  # Under multi-worker all workers stop at one step, or none.
        due = signalled or epoch_end or (self.checkpointer and self.checkpointer.due(step))
        if due and self.checkpointer and step != self._saved_step:  # At most once per step.
            self.evaluator.average_replica_copies()  # Every replica holds the same model first.
            self.module.logbook.even_out("train", self.strategy)  # As a restore would leave them.
            with stopping.held_back():  # A Ctrl-C now takes effect once the save is whole.
                faults.reached("saving")
                logging.debug("saved %s", self.checkpointer.save(step))
            self._saved_step = step
            faults.reached("saved")
        if signalled:
            signal_number = self._stop_signal or signal.SIGTERM  # SIGTERM: another worker's.
            raise stopping.TrainingInterrupted.after(signal_number, step, self.checkpointer)

    # ---- Callbacks and output (output: chief only) ---------------------------------------------

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _print(self, line):
        if self.is_chief:
            logging.info("%s", line)
