"""The `Trainer`: a hand-written training loop that runs a `Module` under a `tf.distribute` strategy.

Read it top to bottom: `fit` is the host loop (plain Python), `_train_step` is the math of one
optimizer step (traced), and the `_..._loop` methods are the glue that runs many traced steps per
call. ../shared/PITFALLS.md explains each rule the comments cite.
"""

import signal
import time

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import callbacks as callbacks_lib
from trainer import checkpointing
from trainer import datasets
from trainer import distribute
from trainer import evaluation
from trainer import optimization
from trainer import precision as precision_lib
from trainer import progress
from trainer import reporting
from trainer import schedule as schedule_lib
from trainer import stopping

TrainingInterrupted = stopping.TrainingInterrupted
AnomalyDetected = stopping.AnomalyDetected
_UNLIMITED = 2**31 - 1  # "until the data ends", as a step bound for tf.range


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
                callbacks; validate, checkpoint when due  # the only host sync: once per n steps
            eval_loop(iter(validation dataset))  [traced] strategy.run(validation_step) per batch
            callbacks get the epoch's logs; rank the epoch; save a checkpoint

    Traced (with `tf.function`, unless `run_eagerly`): `_train_loop` (with `_train_step`, or with
    `optimization.ReducedGradientStep` when clipping, accumulation, fp16 or anomaly checks need
    the all-reduced gradients), `_eval_loop`, `_predict_step`, `_average_replica_copies`.
    Everything else is eager Python. `RunSchedule` (trainer/schedule.py) decides when the host
    loop validates, logs, checkpoints and stops. The only step counter is `optimizer.iterations`:
    optimizer steps, not micro-batches.

    Args:
        strategy: the `tf.distribute.Strategy` to run under; default: TensorFlow's default
            strategy (one device). Create the module inside `strategy.scope()`.
        epochs: passes over the training data.
        max_steps: stop after this many optimizer steps, even mid-epoch (None: no limit).
        callbacks: `Callback`s, called in order at the points listed in `trainer/callbacks.py`.
        enable_progress_bar: add a `ProgressBar` (drawn by the chief only).
        enable_model_summary: add a `ModelSummary`, printed when training begins.
        log_every_n_steps: traced loop calls end at multiples of this many steps, so that
            `on_train_batch_end` (and the loggers) see those steps.
        steps_per_loop: at most this many training steps per `tf.function` call; more steps per
            call means fewer Python->graph dispatches and host syncs.
        limit_train_batches / limit_val_batches / limit_test_batches: use at most this many
            global batches per epoch / validation / test (None: all; 0 turns validation off).
        val_check_interval: validate every this many optimizer steps, across epoch ends,
            instead of at epoch ends (None: at epoch ends).
        check_val_every_n_epoch: validate at the end of every n-th epoch (and at the last step).
        num_sanity_val_steps: validation batches run before training, to catch errors in
            `validation_step` before a long training run instead of after its first epoch.
        fast_dev_run: one training step, one validation and one test batch; no checkpoints,
            no callbacks that write files.
        overfit_batches: train and validate on the same first n training batches, unshuffled.
        gradient_clip_val: clip the gradients summed over replicas to this global norm or value.
        gradient_clip_algorithm: "norm" or "value".
        accumulate_grad_batches: micro-batches per optimizer step; each contributes its
            gradients, so one step sees `accumulate_grad_batches` x the global batch.
        precision: "32", "bf16-mixed" or "16-mixed"; must match the policy the module was built
            under (`precision.set_precision` before building it). "16-mixed" adds dynamic loss
            scaling that skips a step on every replica when the summed gradients overflow.
        detect_anomaly: stop with `AnomalyDetected`, naming the step, when the loss or the
            gradients hold NaN or Inf; that step is not applied and no checkpoint is written.
        profile_steps: (first, last) optimizer steps to trace with the TensorFlow profiler.
        profile_dir: where the profiler writes (e.g. the TensorBoard directory).
        run_eagerly: run the step functions as plain Python (no `tf.function`), so that a
            debugger can stop inside `training_step`. Much slower.
        jit_compile: compile the per-replica step with XLA. Off by default: XLA made both CNNs
            20-50% slower on a 2-core CPU, and Keras' `fit` turns it off under a strategy
            because of known crashes (../shared/PITFALLS.md items 16, 21). Measure first.
        checkpointer: saves the run's full state at its cadence, at every epoch end and when
            the run is stopped (SIGTERM/SIGINT, callbacks); the latest checkpoint (or
            `resume_from`) is restored when the module is built. None: no checkpoints.
        resume_from: a checkpoint path to restore instead of the checkpointer's latest.
        best_models: ranks every validated epoch by a monitored metric and keeps the best weights.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy | None = None, epochs: int = 10,
                 max_steps: int | None = None, callbacks: list | tuple = (),
                 enable_progress_bar: bool = True, enable_model_summary: bool = True,
                 log_every_n_steps: int = 50, steps_per_loop: int = 100,
                 limit_train_batches: int | None = None, limit_val_batches: int | None = None,
                 limit_test_batches: int | None = None, val_check_interval: int | None = None,
                 check_val_every_n_epoch: int = 1, num_sanity_val_steps: int = 2,
                 fast_dev_run: bool = False, overfit_batches: int = 0,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
                 accumulate_grad_batches: int = 1, precision: str = "32",
                 detect_anomaly: bool = False, profile_steps: tuple[int, int] | None = None,
                 profile_dir: str | None = None, run_eagerly: bool = False,
                 jit_compile: bool = False,
                 checkpointer: checkpointing.Checkpointer | None = None,
                 resume_from: str | None = None,
                 best_models: checkpointing.BestModels | None = None):
        _check_positive(epochs=epochs, steps_per_loop=steps_per_loop,
                        log_every_n_steps=log_every_n_steps,
                        check_val_every_n_epoch=check_val_every_n_epoch,
                        accumulate_grad_batches=accumulate_grad_batches,
                        max_steps=max_steps, limit_train_batches=limit_train_batches,
                        val_check_interval=val_check_interval)
        _check_non_negative(limit_val_batches=limit_val_batches,
                            limit_test_batches=limit_test_batches,
                            num_sanity_val_steps=num_sanity_val_steps,
                            overfit_batches=overfit_batches)
        if precision not in precision_lib.POLICIES:
            raise ValueError(f"precision ({precision!r}) must be one of "
                             f"{list(precision_lib.POLICIES)}")
        self.profile_steps = stopping.check_profile_steps(profile_steps, profile_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief = distribute.is_chief(self.strategy)
        if fast_dev_run:  # One batch of everything; nothing written.
            epochs, max_steps, limit_val_batches, limit_test_batches = 1, 1, 1, 1
            num_sanity_val_steps, checkpointer, best_models = 0, None, None
            callbacks = [c for c in callbacks if not getattr(c, "writes_files", False)]
        self.epochs = epochs
        self.max_steps = max_steps
        self.log_every_n_steps = log_every_n_steps
        self.steps_per_loop = steps_per_loop
        self.limits = {"train": limit_train_batches, "val": limit_val_batches,
                       "test": limit_test_batches}
        self.val_check_interval = val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = num_sanity_val_steps
        self.fast_dev_run = fast_dev_run
        self.overfit_batches = overfit_batches
        self.gradient_clipping = (optimization.GradientClipping(gradient_clip_val,
                                                                gradient_clip_algorithm)
                                  if gradient_clip_val is not None else None)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.precision = precision
        self.detect_anomaly = detect_anomaly
        self.profile_dir = profile_dir
        self.run_eagerly = run_eagerly
        self.jit_compile = jit_compile
        self.checkpointer = checkpointer
        self.resume_from = resume_from
        self.best_models = best_models
        defaults = {progress.ProgressBar: enable_progress_bar,
                    callbacks_lib.ModelSummary: enable_model_summary}
        self.callbacks = callbacks_lib.with_defaults(callbacks, defaults)
        if self.profile_steps and not fast_dev_run:
            self.callbacks.append(callbacks_lib.Profiler(*self.profile_steps, profile_dir))
        for callback in self.callbacks:
            callback.set_trainer(self)
        self.should_stop = False  # Set by callbacks (and signals) to end `fit` after this call.
        self.stop_reason: str | None = None
        self.steps_per_epoch: int | None = None
        self.module = None
        self.optimizer = None
        self.datamodule = None
        self.history: list[dict[str, float]] = []
        self._stop_signal = None
        self._saved_step = None

    def request_stop(self, reason: str) -> None:
        """Ends `fit` after the current loop call (with a checkpoint); `reason` reaches the logs."""
        self.should_stop, self.stop_reason = True, reason

    @property
    def schedule(self) -> schedule_lib.RunSchedule:
        """The step arithmetic of `fit`, from the current settings (they may change between fits)."""
        return schedule_lib.RunSchedule(
            steps_per_epoch=self.steps_per_epoch, epochs=self.epochs, max_steps=self.max_steps,
            steps_per_loop=self.steps_per_loop, val_check_interval=self.val_check_interval,
            check_val_every_n_epoch=self.check_val_every_n_epoch,
            cadences=(self.log_every_n_steps,
                      self.checkpointer.every_n_steps if self.checkpointer else None),
            boundaries=self.profile_steps or ())

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, read from the device: a host sync."""
        return int(self.optimizer.iterations.numpy())

    # ---- Public entry points (eager) ---------------------------------------------------------

    def fit(self, module, datamodule) -> dict[str, float]:
        """Trains `module` on `datamodule` for `epochs` epochs (or `max_steps`), validating as set.

        A module that was already trained (its optimizer has taken steps) continues from the epoch
        its step count is in, rather than starting over.

        Returns:
            The last epoch's logs (`train_loss`, `val_accuracy`, ...) plus `steps`, `epochs`,
            `stop_reason` and `wall_time_s`.
        """
        start_time = time.perf_counter()
        self._setup(module, datamodule)
        self._log_plan()
        self.should_stop, self.stop_reason = False, None
        self._call("on_train_begin", {})
        if self.num_sanity_val_steps and self.data.has("val"):
            self._sanity_check()
        # Where to start follows from the step count alone (> 0 after a restore or an earlier
        # fit): the data of any epoch can be rebuilt from its number.
        start_epoch, steps_done = divmod(self.global_step, self.steps_per_epoch)
        train_iterator = iter(self.data.training(  # Long-lived: its buffers stay warm.
            start_epoch=start_epoch, steps_done=steps_done, steps_per_epoch=self.steps_per_epoch))
        if self.schedule.finished(start_epoch, self.global_step):
            self._print(f"nothing to train: the module has already done {self.global_step} steps")

        with stopping.on_signals(self):
            for epoch in range(start_epoch, self.epochs):
                if self.should_stop or self.schedule.finished(epoch, self.global_step):
                    break
                self._call("on_epoch_begin", epoch, {})
                logs = self._train_epoch(train_iterator, epoch)
                if (self.schedule.validate_at_epoch_end(epoch, self.global_step)
                        and self.data.has("val")):
                    logs.update(self._validate())
                logs["elapsed_seconds"] = time.perf_counter() - start_time
                self.history.append(logs)
                self._print(reporting.epoch_line(epoch, self.epochs, self.global_step, logs))
                if self.best_models and self.best_models.monitor in logs:
                    self.best_models.update(self.module, epoch, self.global_step, logs)
                self._call("on_epoch_end", epoch, logs)
                self._save_checkpoint()

        self._average_replica_copies()
        last_epoch_logs = self.history[-1] if self.history else {}
        if not self.stop_reason:
            self.stop_reason = ("max_steps" if self.max_steps and self.global_step >= self.max_steps
                                else "epochs")
        self._call("on_train_end", dict(last_epoch_logs))
        return {**last_epoch_logs, "steps": self.global_step, "epochs": self.epochs,
                "stop_reason": self.stop_reason, "wall_time_s": time.perf_counter() - start_time}

    def validate(self, module, datamodule) -> dict[str, float]:
        """Runs `validation_step` over the validation set; returns `val_*` means."""
        self._setup(module, datamodule)
        self.data.require("val")
        return self._validate()

    def test(self, module, datamodule) -> dict[str, float]:
        """Runs `test_step` over the test set; returns `test_*` means."""
        self._setup(module, datamodule)
        self.data.require("test")
        logs = self._evaluate("test", limit=self.limits["test"])
        self._print("test | " + reporting.format_logs(reporting.metrics_only(logs)))
        self._call("on_test_end", logs)
        return logs

    def predict(self, module, datamodule) -> np.ndarray:
        """Returns `predict_step`'s outputs over `datamodule.predict_dataset`, in dataset order."""
        self._setup(module, datamodule)
        dataset = self.data.evaluation("predict")
        if dataset is None:
            raise ValueError("the datamodule has no predict_dataset (and no test_dataset)")
        predict_step = self._compiled("predict", self._predict_step)
        return np.concatenate([predict_step(batch).numpy() for batch in dataset])

    # ---- Set-up: every variable is created inside strategy.scope() --------------------------

    def _setup(self, module, datamodule):
        """Prepares the data and creates the module's variables and optimizer, once per module."""
        if module is self.module and datamodule is self.datamodule:
            return
        datamodule.prepare_data()
        datamodule.setup()
        if self.overfit_batches:
            datamodule.overfit(self.overfit_batches)
        replicas = self.strategy.num_replicas_in_sync
        if datamodule.batch_size % replicas:
            raise ValueError(f"batch_size ({datamodule.batch_size}) must be divisible by the "
                             f"number of replicas ({replicas})")
        precision_lib.check_module(module, self.precision)
        self.steps_per_epoch = self._optimizer_steps_per_epoch(datamodule)
        # The loss of each micro-batch is divided by everything one optimizer step sees.
        module.global_batch_size = datamodule.batch_size * self.accumulate_grad_batches
        module.micro_batches_per_step = self.accumulate_grad_batches
        module.total_steps = self.schedule.total_steps  # For learning-rate schedules.
        with self.strategy.scope():
            if not module.built:  # The first call creates the variables, mirrored on every replica.
                module(tf.zeros([1, *datamodule.input_shape]), training=False)
            self._check_variables_in_scope(module)
            optimizer = module.configure_optimizers()
            if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
                raise TypeError("configure_optimizers() must return a tf.keras optimizer, "
                                f"got {optimizer!r}")
            # Slots are built now, eagerly: created lazily inside the distributed step they
            # crash on Keras 3.15 (PITFALLS item 3).
            optimizer.build(module.trainable_variables)
        self.module, self.optimizer, self.datamodule = module, optimizer, datamodule
        self.reduced_step = self._reduced_gradient_step()
        self._functions: dict[str, object] = {}
        self.data = datasets.DistributedData(self.strategy, datamodule, limits=self.limits,
                                             micro_batches=self.accumulate_grad_batches)
        self._create_logged_metrics("train", module.training_step, datamodule.train_dataset)
        if self.checkpointer:
            self._restore_checkpoint()

    def _reduced_gradient_step(self):
        """The step for clipping, accumulation, fp16 or anomaly checks; None: the plain step."""
        if not (self.gradient_clipping or self.accumulate_grad_batches > 1
                or self.precision == "16-mixed" or self.detect_anomaly):
            return None
        with self.strategy.scope():
            return optimization.ReducedGradientStep(
                strategy=self.strategy, module=self.module, optimizer=self.optimizer,
                micro_batches=self.accumulate_grad_batches, clipping=self.gradient_clipping,
                loss_scale=(optimization.DynamicLossScale() if self.precision == "16-mixed"
                            else None),
                replica=self._replica)

    def _optimizer_steps_per_epoch(self, datamodule) -> int:
        batches = datamodule.steps_per_epoch()
        if self.limits["train"]:
            batches = min(batches, self.limits["train"])
        steps = batches // self.accumulate_grad_batches
        if steps < 1:
            raise ValueError(f"accumulate_grad_batches ({self.accumulate_grad_batches}) is more "
                             f"than the {batches} training batches of an epoch")
        return steps

    def _check_variables_in_scope(self, module):
        for variable in module.variables:
            if not self.strategy.extended.variable_created_in_scope(variable.value):
                raise ValueError(
                    f"variable {variable.path} was created outside this Trainer's strategy scope: "
                    "create the module inside `with trainer.strategy.scope():` and do not call it "
                    "before fit, so that the Trainer builds it there")

    def _create_logged_metrics(self, stage, hook, make_dataset):
        """Traces `hook` once, without running it, to learn what it logs; creates those metrics."""
        logbook = self.module.logbook
        replica_batch = make_dataset(tf.distribute.InputContext(
            num_replicas_in_sync=self.strategy.num_replicas_in_sync)).element_spec
        with logbook.discovering(stage) as names:
            traced = tf.function(lambda batch: self.strategy.run(hook, args=(batch,)))
            outputs = traced.get_concrete_function(replica_batch).structured_outputs
        if stage == "train" and outputs is None:
            raise TypeError("training_step(batch) must return the loss to minimize, got None")
        with self.strategy.scope():
            logbook.create(stage, names)

    def _compiled(self, name, function):
        """Wraps `function` in `tf.function` once and caches it (as Keras' make_train_function)."""
        if name not in self._functions:
            self._functions[name] = function if self.run_eagerly else tf.function(function)
        return self._functions[name]

    # ---- Training: the host loop ---------------------------------------------------------------

    def _train_epoch(self, iterator, epoch):
        """Runs one epoch of training steps, `steps_per_loop` per call; returns the epoch's logs."""
        train_loop = self._compiled("train", self._train_loop)
        end_step = self.schedule.epoch_end(epoch)
        step = first_step = self.global_step
        if step == epoch * self.steps_per_epoch:  # (A run resumed mid-epoch keeps its means.)
            self.module.logbook.reset("train")
        validation_logs = {}
        start_time = last_time = time.perf_counter()
        while step < end_step and not self.should_stop:
            loss, finite = train_loop(iterator,
                                      tf.constant(self.schedule.steps_in_next_loop(step, epoch)))
            previous_step, step = step, self.global_step  # Once per loop, never per step.
            if self.detect_anomaly and not finite:
                raise AnomalyDetected.at(step, float(loss), self.checkpointer)
            now = time.perf_counter()
            images = ((step - previous_step) * self.datamodule.batch_size
                      * self.accumulate_grad_batches)
            self._call("on_train_batch_end", step, {
                **self.module.logbook.results("train"), "loss": float(loss),
                "images_per_s": images / (now - last_time)})
            last_time = now
            if self.schedule.validate_after_loop(step) and self.data.has("val"):
                validation_logs = self._validate()
            self._checkpoint_if_due_or_stopping(step)
        seconds = time.perf_counter() - start_time
        images = (step - first_step) * self.datamodule.batch_size * self.accumulate_grad_batches
        return {**self.module.logbook.results("train"), **validation_logs,
                **self._skipped_steps_log(), "train_seconds": seconds,
                "train_images_per_s": images / seconds}

    def _skipped_steps_log(self) -> dict[str, int]:
        """`skipped_steps` (fp16 overflows, non-finite gradients) when the step can skip."""
        if not self.reduced_step:
            return {}
        return {"skipped_steps": int(self.reduced_step.skipped_steps.numpy())}

    # ---- Training: the traced steps ------------------------------------------------------------

    def _train_loop(self, iterator, num_steps):
        """Runs `num_steps` optimizer steps in one call: one dispatch and host sync per call.

        Returns the last step's loss (mean over its global batch) and whether its gradients were
        finite; with `detect_anomaly` a non-finite step ends the call early.
        """
        loss, finite = tf.constant(0.0), tf.constant(True)
        with self.module.logbook.recording("train"):
            for _ in tf.range(num_steps):  # A tensor bound: a graph loop, traced once for any n.
                if self.reduced_step:  # Clipping, accumulation, fp16 or anomaly checks.
                    loss, finite = self.reduced_step(iterator)
                else:
                    loss = self._sum(self.strategy.run(self._replica(self._train_step),
                                                       args=(next(iterator),)))
                if self.detect_anomaly and not finite:
                    break
        return loss, finite

    def _train_step(self, batch):
        """One optimizer step on this replica's slice of the global batch; runs on every replica."""
        variables = self.module.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.module.training_step(batch)  # forward + loss / global batch size
        grads = tape.gradient(loss, variables)
        # In replica context, apply_gradients first all-reduces: it SUMS every replica's grads,
        # then each replica applies the same update to its own copy of the variables.
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss

    def _replica(self, step_function):
        """`step_function`, or its XLA-compiled version: XLA compiles the per-replica step only,
        because the loop around it reads the input iterator, which XLA cannot compile."""
        if not self.jit_compile or self.run_eagerly:
            return step_function
        return self._compiled(f"xla{step_function.__name__}",  # e.g. xla_train_step
                              tf.function(step_function, jit_compile=True))

    def _sum(self, per_replica):
        """Sums a per-replica value over replicas, e.g. each replica's share of the loss."""
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    # ---- Evaluation and prediction -------------------------------------------------------------

    def _validate(self):
        logs = self._evaluate("val", limit=self.limits["val"])
        self._call("on_validation_end", logs)
        return logs

    def _sanity_check(self):
        """Runs a few validation batches before training, so a broken `validation_step` fails now."""
        logs = self._evaluate("val", limit=self.num_sanity_val_steps)
        self.module.logbook.reset("val")
        self._print(f"sanity check: {self.num_sanity_val_steps} validation batch(es) ran | "
                    + reporting.format_logs(reporting.metrics_only(logs)))

    def _evaluate(self, stage, limit=None):
        """Runs the stage's step hook over its dataset (at most `limit` batches); returns the
        `<stage>_*` means."""
        hook = {"val": self.module.validation_step, "test": self.module.test_step}[stage]
        dataset = self.data.evaluation(stage, limit)
        if not self.module.logbook.metrics[stage]:
            make_dataset = {"val": self.datamodule.val_dataset,
                            "test": self.datamodule.test_dataset}[stage]
            self._create_logged_metrics(stage, hook, make_dataset)
        self._average_replica_copies()
        self.module.logbook.reset(stage)
        eval_loop = self._compiled(stage, lambda iterator: self._eval_loop(stage, hook, iterator))
        start_time = time.perf_counter()
        eval_loop(iter(dataset))  # A fresh iterator: every example exactly once.
        return {**self.module.logbook.results(stage),
                f"{stage}_seconds": time.perf_counter() - start_time}
    def _eval_loop(self, stage, hook, iterator):
        """Runs `hook` on every remaining batch of `iterator`, all in one call."""
        with self.module.logbook.recording(stage):
            for _ in tf.range(_UNLIMITED):
                # get_next_as_optional, not next(): running out of data must end this loop,
                # not raise OutOfRange through the whole traced call.
                batch = iterator.get_next_as_optional()
                if not batch.has_value():
                    break
                self.strategy.run(evaluation.skip_if_empty(hook), args=(batch.get_value(),))

    def _predict_step(self, batch):
        """Runs `predict_step` on every replica and gathers the outputs in dataset order."""
        outputs = self.strategy.run(evaluation.pad_by_one(self.module.predict_step), args=(batch,))
        return self.strategy.gather(outputs, axis=0)

    def _average_replica_copies(self):
        """Gives every replica the mean of the replicas' copies of the non-trainable variables.

        BatchNorm's moving statistics are updated by each replica from its own slice of the batch,
        so without synchronized BatchNorm the copies drift apart, and only one copy would be
        evaluated or saved (PITFALLS item 8). A no-op on one replica.
        """
        variables = [v for v in self.module.non_trainable_variables if "float" in v.dtype]
        if self.strategy.num_replicas_in_sync == 1 or not variables:
            return

        def average():
            def replica_means():
                context = tf.distribute.get_replica_context()
                return [context.all_reduce(tf.distribute.ReduceOp.MEAN, v.value) for v in variables]
            means = self.strategy.run(replica_means)
            for variable, mean in zip(variables, means):
                variable.value.assign(mean)  # Each replica's copy gets its (identical) mean.

        self._compiled("average_replica_copies", average)()


    # ---- Checkpoints and stopping ----------------------------------------------------------------

    def _restore_checkpoint(self):
        """Tracks the run's state and restores the given or latest checkpoint, inside the scope."""
        state = {"module": self.module, "optimizer": self.optimizer,
                 "train_metrics": list(self.module.logbook.metrics["train"].values()),
                 "untracked": checkpointing.untracked_variables(self.module),
                 "callbacks": callbacks_lib.CallbackState(self.callbacks)}
        if self.reduced_step:
            state.update(self.reduced_step.checkpointed())
        self.checkpointer.track(**state)
        with self.strategy.scope():
            restored = self.checkpointer.restore(self.resume_from)
        if restored:
            step = self.global_step
            self._print(f"resumed from {restored}: step {step}, epoch "
                        f"{step // self.steps_per_epoch + 1} at batch {step % self.steps_per_epoch}")

    def _checkpoint_if_due_or_stopping(self, step):
        """Saves when the cadence says so; after a SIGTERM/SIGINT, saves and stops the run."""
        # Under multi-worker every worker must stop at the same step (saving is a collective), so
        # a signal or a stop request (e.g. Timer's, which reads each host's clock) on any worker
        # stops all. Voted once per call: a signal landing during the save counts at the next.
        signalled = distribute.any_worker(self.strategy, self._stop_signal is not None)
        if distribute.any_worker(self.strategy, self.should_stop) and not self.should_stop:
            self.request_stop("another worker's request")
        if signalled or (self.checkpointer and self.checkpointer.due(step)):
            self._save_checkpoint()
        if signalled:
            signal_number = self._stop_signal or signal.SIGTERM  # SIGTERM: another worker's.
            raise TrainingInterrupted.after(signal_number, step, self.checkpointer)

    def _save_checkpoint(self):
        """Saves the run's state (every replica holds the same model first); once per step."""
        step = self.global_step
        if not self.checkpointer or self._saved_step == step:
            return
        self._average_replica_copies()
        path = self.checkpointer.save(step)
        self._saved_step = step
        logging.debug("saved %s", path)

    # ---- Callbacks and output (output: chief only) --------------------------------------------------

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _print(self, line):
        if self.is_chief:
            logging.info("%s", line)

    def _log_plan(self):
        for line in reporting.plan_lines(
                self.strategy, self.datamodule, steps_per_epoch=self.steps_per_epoch,
                epochs=self.epochs, max_steps=self.max_steps,
                micro_batches=self.accumulate_grad_batches, limited=bool(self.limits["train"])):
            self._print(line)


def _check_positive(**arguments):
    for name, value in arguments.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} ({value}) must be at least 1")


def _check_non_negative(**arguments):
    for name, value in arguments.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} ({value}) must be >= 0")
