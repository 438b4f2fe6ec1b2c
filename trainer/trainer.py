"""The `Trainer`: a hand-written training loop that runs a `Module` under a `tf.distribute` strategy.

Read it top to bottom: `fit` is the host loop (plain Python), `_train_step` is the math of one
optimizer step (traced), and the `_..._loop` methods are the glue that runs many traced steps per
call. ../shared/PITFALLS.md explains each rule the comments cite.
"""

import contextlib
import signal
import threading
import time

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import checkpointing
from trainer import distribute

_UNLIMITED = 2**31 - 1  # "until the data ends", as a step bound for tf.range
_TIMINGS = ("_seconds", "_per_s")  # Suffixes of the logs' timing entries.


class TrainingInterrupted(Exception):
    """Raised by `fit` after a SIGTERM or SIGINT, once the state is saved in a checkpoint."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class Trainer:
    """Fits, validates, tests and predicts with a `Module` under a `tf.distribute` strategy.

    `fit` in pseudocode; lines marked [traced] run inside a `tf.function`, the rest is Python:

        with strategy.scope():
            build the module's variables, its optimizer and its logged metrics
            restore the latest checkpoint, if any
        start_epoch, steps_done = divmod(optimizer.iterations, steps_per_epoch)
        train_iterator = iter(distributed training dataset)   # endless: epoch after epoch
        for epoch in range(start_epoch, epochs):
            reset the training metrics (unless resuming mid-epoch)
            while optimizer.iterations < (epoch + 1) * steps_per_epoch:
                train_loop(train_iterator, n)    [traced] n times strategy.run(train_step)
                log progress; checkpoint when due  # the only host sync: once per n steps
            average the replicas' BatchNorm statistics         [traced]
            eval_loop(iter(validation dataset))  [traced] strategy.run(validation_step) per batch
            log the epoch line; rank the epoch; save a checkpoint

    Traced (with `tf.function`, unless `run_eagerly`): `_train_loop` (with `_train_step`),
    `_eval_loop`, `_predict_step`, `_average_replica_copies`. Everything else is eager Python.
    The only step counter is `optimizer.iterations`.

    Args:
        strategy: the `tf.distribute.Strategy` to run under; default: TensorFlow's default
            strategy (one device). Create the module inside `strategy.scope()`.
        epochs: passes over the training data.
        steps_per_loop: training steps per `tf.function` call; more steps per call means fewer
            Python->graph dispatches and host syncs, but coarser progress lines.
        run_eagerly: run the step functions as plain Python (no `tf.function`), so that a
            debugger can stop inside `training_step`. Much slower.
        jit_compile: compile the per-replica training step with XLA. Off by default: XLA made
            both CNNs 20-50% slower on a 2-core CPU, and Keras' `fit` turns it off under a
            strategy because of known crashes (../shared/PITFALLS.md items 16, 21). Measure first.
        progress_every_s: seconds between progress lines inside an epoch.
        enable_model_summary: print the module's layer summary when it is built.
        checkpointer: saves the run's full state at its cadence, at every epoch end and when
            the run is stopped by SIGTERM/SIGINT; the latest checkpoint (or `resume_from`) is
            restored when the module is built. None: no checkpoints.
        resume_from: a checkpoint path to restore instead of the checkpointer's latest.
        best_models: ranks every epoch by a monitored metric and keeps the best weights.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy | None = None, epochs: int = 10,
                 steps_per_loop: int = 100, run_eagerly: bool = False, jit_compile: bool = False,
                 progress_every_s: float = 20.0, enable_model_summary: bool = True,
                 checkpointer: checkpointing.Checkpointer | None = None,
                 resume_from: str | None = None,
                 best_models: checkpointing.BestModels | None = None):
        if epochs < 1:
            raise ValueError(f"epochs ({epochs}) must be at least 1")
        if steps_per_loop < 1:
            raise ValueError(f"steps_per_loop ({steps_per_loop}) must be at least 1")
        self.strategy = strategy or tf.distribute.get_strategy()
        self.epochs = epochs
        self.steps_per_loop = steps_per_loop
        self.run_eagerly = run_eagerly
        self.jit_compile = jit_compile
        self.progress_every_s = progress_every_s
        self.enable_model_summary = enable_model_summary
        self.checkpointer = checkpointer
        self.resume_from = resume_from
        self.best_models = best_models
        self._stop_signal = None
        self._saved_step = None
        self.is_chief = distribute.is_chief(self.strategy)
        self.module = None
        self.optimizer = None
        self.datamodule = None
        self.history: list[dict[str, float]] = []

    # ---- Public entry points (eager) ---------------------------------------------------------

    def fit(self, module, datamodule) -> dict[str, float]:
        """Trains `module` on `datamodule` until `epochs` epochs are done, validating after each.

        A module that was already trained (its optimizer has taken steps) continues from the epoch
        its step count is in, rather than starting over.

        Returns:
            The last epoch's logs (`train_loss`, `val_accuracy`, ...) plus `steps`, `epochs` and
            `wall_time_s`.
        """
        start_time = time.perf_counter()
        self._setup(module, datamodule)
        steps_per_epoch = datamodule.steps_per_epoch()
        self._log_plan(steps_per_epoch)
        # Where to start follows from the step count alone (> 0 after a restore or an earlier
        # fit): the data of any epoch can be rebuilt from its number.
        start_epoch, steps_done = divmod(self._step(), steps_per_epoch)
        train_data = self.strategy.distribute_datasets_from_function(
            lambda ctx: datamodule.train_dataset(ctx, start_epoch=start_epoch,
                                                 skip_steps=steps_done))
        train_iterator = iter(train_data)  # long-lived: tf.data keeps its buffers warm across epochs
        if start_epoch >= self.epochs:
            self._print(f"nothing to train: the module has already done {start_epoch} epochs")

        with self._graceful_stop():
            for epoch in range(start_epoch, self.epochs):
                logs = self._train_epoch(train_iterator, epoch, steps_per_epoch)
                if self._distributed_dataset("val") is not None:
                    logs.update(self._evaluate("val"))
                logs["elapsed_seconds"] = time.perf_counter() - start_time
                self.history.append(logs)
                self._print(self._epoch_line(epoch, logs))
                if self.best_models:
                    self.best_models.update(self.module, epoch, self._step(), logs)
                self._save_checkpoint()

        self._average_replica_copies()
        last_epoch_logs = self.history[-1] if self.history else {}
        return {**last_epoch_logs, "steps": self._step(),
                "epochs": self.epochs, "wall_time_s": time.perf_counter() - start_time}

    def validate(self, module, datamodule) -> dict[str, float]:
        """Runs `validation_step` over the whole validation set; returns `val_*` means."""
        self._setup(module, datamodule)
        return self._evaluate_or_raise("val")

    def test(self, module, datamodule) -> dict[str, float]:
        """Runs `test_step` over the whole test set; returns `test_*` means."""
        self._setup(module, datamodule)
        logs = self._evaluate_or_raise("test")
        self._print("test | " + _format(_metrics_only(logs)))
        return logs

    def predict(self, module, datamodule) -> np.ndarray:
        """Returns `predict_step`'s outputs over `datamodule.predict_dataset`, in dataset order."""
        self._setup(module, datamodule)
        dataset = self._distributed_dataset("predict")
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
        replicas = self.strategy.num_replicas_in_sync
        if datamodule.batch_size % replicas:
            raise ValueError(f"batch_size ({datamodule.batch_size}) must be divisible by the "
                             f"number of replicas ({replicas})")
        module.global_batch_size = datamodule.batch_size
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
        self._functions: dict[str, object] = {}
        self._datasets: dict[str, object] = {}
        self._create_logged_metrics("train", module.training_step, datamodule.train_dataset)
        if self.checkpointer:
            self._restore_checkpoint()
        if self.is_chief and self.enable_model_summary:
            module.summary(expand_nested=True)

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

    def _distributed_dataset(self, stage):
        """The datamodule's dataset for `stage`, distributed across replicas (None if it has none)."""
        if stage not in self._datasets:
            make = {"val": self.datamodule.val_dataset, "test": self.datamodule.test_dataset,
                    "predict": self.datamodule.predict_dataset}[stage]
            has_data = make(tf.distribute.InputContext()) is not None
            self._datasets[stage] = (self.strategy.distribute_datasets_from_function(make)
                                     if has_data else None)
        return self._datasets[stage]

    # ---- Training ----------------------------------------------------------------------------

    def _step(self) -> int:
        """The optimizer step count, read from the device: a host sync."""
        return int(self.optimizer.iterations.numpy())

    def _train_epoch(self, iterator, epoch, steps_per_epoch):
        """Runs one epoch of training steps, `steps_per_loop` per call; returns the epoch's logs."""
        train_loop = self._compiled("train", self._train_loop)
        end_step = (epoch + 1) * steps_per_epoch
        step = first_step = self._step()
        if step == epoch * steps_per_epoch:  # (A run resumed mid-epoch keeps its restored means.)
            self.module.logbook.reset("train")
        start_time = last_print = time.perf_counter()
        while step < end_step:
            train_loop(iterator, tf.constant(self._steps_in_next_loop(step, end_step)))
            step = self._step()  # Once per loop, never per step.
            self._checkpoint_if_due_or_stopping(step)
            # Reading the metrics is a collective under multi-worker: all workers print or none.
            if distribute.any_worker(self.strategy,
                                     time.perf_counter() - last_print > self.progress_every_s):
                last_print = time.perf_counter()
                self._print(f"epoch {epoch + 1}/{self.epochs} | step {step}/{end_step} | "
                            + _format(self.module.logbook.results("train")))
        seconds = time.perf_counter() - start_time
        images = (step - first_step) * self.datamodule.batch_size
        return {**self.module.logbook.results("train"), "train_seconds": seconds,
                "train_images_per_s": images / seconds}

    def _steps_in_next_loop(self, step, end_step):
        """Steps for the next call: `steps_per_loop`, cut so that a call ends exactly at the epoch
        end and at the next checkpoint step (cadences stay exact in optimizer steps)."""
        steps = min(self.steps_per_loop, end_step - step)
        if self.checkpointer and self.checkpointer.every_n_steps:
            every = self.checkpointer.every_n_steps
            steps = min(steps, every - step % every)
        return steps

    def _train_loop(self, iterator, num_steps):
        """Runs `num_steps` training steps in one call: one dispatch and host sync per call."""
        with self.module.logbook.recording("train"):
            for _ in tf.range(num_steps):  # A tensor bound: a graph loop, traced once for any n.
                self.strategy.run(self._replica_train_step(), args=(next(iterator),))

    def _replica_train_step(self):
        """`_train_step`, or its XLA-compiled version: XLA compiles the per-replica step only,
        because the loop around it reads the input iterator, which XLA cannot compile."""
        if not self.jit_compile or self.run_eagerly:
            return self._train_step
        return self._compiled("xla_train_step",
                              tf.function(self._train_step, jit_compile=True))

    def _train_step(self, batch):
        """One optimizer step on this replica's slice of the global batch; runs on every replica."""
        variables = self.module.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.module.training_step(batch)  # forward + loss / global batch size
        grads = tape.gradient(loss, variables)
        # In replica context, apply_gradients first all-reduces: it SUMS every replica's grads,
        # then each replica applies the same update to its own copy of the variables.
        self.optimizer.apply_gradients(zip(grads, variables))

    # ---- Evaluation and prediction -------------------------------------------------------------

    def _evaluate_or_raise(self, stage):
        if self._distributed_dataset(stage) is None:
            raise ValueError(f"the datamodule has no {stage} dataset (its {stage}_split is empty)")
        return self._evaluate(stage)

    def _evaluate(self, stage):
        """Runs the stage's step hook over its whole dataset; returns the `<stage>_*` means."""
        hook = {"val": self.module.validation_step, "test": self.module.test_step}[stage]
        dataset = self._distributed_dataset(stage)
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
                self.strategy.run(_skip_if_empty(hook), args=(batch.get_value(),))

    def _predict_step(self, batch):
        """Runs `predict_step` on every replica and gathers the outputs in dataset order."""
        outputs = self.strategy.run(_pad_by_one(self.module.predict_step), args=(batch,))
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
        self.checkpointer.track(module=self.module, optimizer=self.optimizer,
                                train_metrics=list(self.module.logbook.metrics["train"].values()),
                                untracked=checkpointing.untracked_variables(self.module))
        with self.strategy.scope():
            restored = self.checkpointer.restore(self.resume_from)
        if restored:
            step = self._step()
            steps_per_epoch = self.datamodule.steps_per_epoch()
            self._print(f"resumed from {restored}: step {step}, epoch {step // steps_per_epoch + 1}"
                        f" at batch {step % steps_per_epoch}")

    def _checkpoint_if_due_or_stopping(self, step):
        """Saves when the cadence says so; after a SIGTERM/SIGINT, saves and stops the run."""
        # A signal to any worker stops all of them at this same step, as saving is a collective.
        # Decided once: a signal that lands during the save below counts at the next call.
        stopping = distribute.any_worker(self.strategy, self._stop_signal is not None)
        if stopping or (self.checkpointer and self.checkpointer.due(step)):
            self._save_checkpoint()
        if stopping:
            signal_number = self._stop_signal or signal.SIGTERM  # SIGTERM: another worker's.
            saved = self.checkpointer.latest if self.checkpointer else "no checkpoint"
            raise TrainingInterrupted(f"interrupted by {signal.Signals(signal_number).name} "
                                      f"at step {step}; state saved in {saved}", signal_number)

    def _save_checkpoint(self):
        """Saves the run's state (every replica holds the same model first); once per step."""
        step = self._step()
        if not self.checkpointer or self._saved_step == step:
            return
        self._average_replica_copies()
        path = self.checkpointer.save(step)
        self._saved_step = step
        logging.debug("saved %s", path)

    @contextlib.contextmanager
    def _graceful_stop(self):
        """SIGTERM or a first SIGINT ask the host loop to save and stop after the current call;
        a second SIGINT interrupts at once. Only the main thread can install signal handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signal_number, frame):
            del frame
            self._stop_signal = signal_number
            signal.signal(signal.SIGINT, signal.default_int_handler)
            logging.warning("%s received: saving a checkpoint after the current steps "
                            "(Ctrl-C again to stop at once)", signal.Signals(signal_number).name)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ---- Output (chief only) -------------------------------------------------------------------

    def _print(self, line):
        if self.is_chief:
            logging.info("%s", line)

    def _log_plan(self, steps_per_epoch):
        replicas = self.strategy.num_replicas_in_sync
        workers = distribute.num_workers(self.strategy)
        batch_size = self.datamodule.batch_size
        self._print(distribute.describe(self.strategy))
        self._print(f"global batch {batch_size} = {replicas} replica(s) x {batch_size // replicas} "
                    f"per replica, on {workers} worker(s) | {steps_per_epoch} steps per epoch | "
                    f"{self.epochs} epochs")
        dropped = getattr(self.datamodule, "dropped_per_epoch", lambda: 0)()
        if dropped:
            self._print(f"{dropped} training examples per epoch do not fill a global batch and "
                        "are left out of that epoch (a different few each epoch: the order is "
                        "reshuffled)")

    def _epoch_line(self, epoch, logs):
        return (f"epoch {epoch + 1}/{self.epochs} | step {self._step()} | "
                f"{_format(_metrics_only(logs))} | {logs['train_seconds']:.1f} s | "
                f"{logs['train_images_per_s']:.0f} img/s")


# At the end of the evaluation data some replicas receive an empty batch (fewer examples than
# replicas are left). Hooks never see one: an empty batch breaks oneDNN convolutions on CPU, which
# return their input unchanged, and a hook's metrics gain nothing from it anyway.

def _batch_size(batch):
    return tf.shape(tf.nest.flatten(batch)[0])[0]


def _skip_if_empty(hook):
    """Wraps an evaluation hook so that a replica with an empty batch does nothing."""
    def run_unless_empty(batch):
        if _batch_size(batch) > 0:
            hook(batch)
    return run_unless_empty


def _pad_by_one(hook):
    """Wraps a prediction hook: runs it on the batch plus one zero example, then drops that one.

    The extra example keeps every replica's batch non-empty without a branch, so the outputs of
    all replicas keep one structure for `strategy.gather`.
    """
    def run_padded(batch):
        size = _batch_size(batch)
        padded = tf.nest.map_structure(
            lambda t: tf.concat([t, tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)], 0),
            batch)
        return tf.nest.map_structure(lambda output: output[:size], hook(padded))
    return run_padded


def _metrics_only(logs: dict[str, float]) -> dict[str, float]:
    """The logs without their timing entries."""
    return {name: value for name, value in logs.items() if not name.endswith(_TIMINGS)}


def _format(logs: dict[str, float]) -> str:
    return " | ".join(f"{name} {value:.4f}" for name, value in logs.items())
