"""The traced half of the loop: every function the Trainer runs inside a `tf.function`.

Two words first. In *cross-replica context* code runs once, for all replicas: the loop over
steps, reading the iterator. `strategy.run(fn, args)` switches to *replica context*: `fn` runs
once on every replica, each on its own slice of the global batch, and returns a per-replica
value that `strategy.reduce` sums (or averages) back into one. An *all-reduce* is that sum
computed inside replica context, so that every replica receives the total.

    train_loop(iterator, n)        n optimizer steps in one call                [cross-replica]
      train_step(batch)              forward, backward, apply: the plain step     [every replica]
      reduced_train_step(iterator)   micro-batches, one all-reduce, check, clip,  [cross-replica]
                                     apply (for clipping, accumulation, fp16, anomaly checks)
    eval_loop(stage, hook, iterator) a step hook on every batch until the data ends
    predict_step(batch)            every replica's predictions, gathered in dataset order
    average_replica_copies()       every replica gets the mean of the replicas' BatchNorm
                                   statistics (they drift apart without synchronized BatchNorm)
"""

import tensorflow as tf

from trainer import config as config_lib
from trainer import optimization

_UNLIMITED = 2**31 - 1  # "until the data ends", as a step bound for tf.range
SUM = tf.distribute.ReduceOp.SUM


class StepFunctions:
    """The traced functions of one module under one strategy, and the state they keep.

    Create it inside `strategy.scope()` after the module's variables and optimizer exist.

    Args:
        strategy: the Trainer's strategy.
        module: the `Module`, built.
        optimizer: its built optimizer.
        config: how a step is computed (`StepConfig`).
    """

    def __init__(self, *, strategy, module, optimizer, config: config_lib.StepConfig):
        self.strategy, self.module, self.optimizer, self.config = strategy, module, optimizer, config
        self.compiled: dict[str, object] = {}  # name -> tf.function, traced on first call
        # BatchNorm's moving statistics: each replica updates its own copy from its own slice.
        self.averaged_variables = [v for v in module.non_trainable_variables if "float" in v.dtype]
        self.loss_scale = None
        self.skipped_steps = None
        if config.reduces_gradients_itself:
            optimization.check_applies_reduced_gradients(optimizer)
            self.accumulator = optimization.GradientAccumulator(module.trainable_variables)
            if config.precision == "16-mixed":
                self.loss_scale = optimization.DynamicLossScale()
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                             name="skipped_steps",
                                             aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def traced(self, name: str, function):
        """`function` wrapped in `tf.function` once and cached (Keras' make_train_function does
        the same); with `run_eagerly`, the plain Python function, so pdb can stop inside."""
        if name not in self.compiled:
            self.compiled[name] = function if self.config.run_eagerly else tf.function(function)
        return self.compiled[name]

    def checkpointed(self) -> dict:
        """The state a resumed run needs besides the module and optimizer."""
        state = {"skipped_steps": self.skipped_steps} if self.skipped_steps is not None else {}
        if self.loss_scale:
            state["loss_scale"] = [self.loss_scale.scale, self.loss_scale.finite_steps]
        return state

    def logs(self) -> dict[str, int]:
        """`skipped_steps` (fp16 overflows, non-finite gradients) when a step can be skipped."""
        return {} if self.skipped_steps is None else {"skipped_steps": int(self.skipped_steps.numpy())}

    # ---- Training ----------------------------------------------------------------------------

    def train_loop(self, iterator, num_steps):
        """Runs `num_steps` optimizer steps in one call: one dispatch and one host sync per call.

        Returns everything the host loop reads after the call, computed here so that the host
        makes no other device call per loop call (each would cost a dispatch and a sync):

            loss            the last step's loss (mean over its global batch, float32)
            healthy         whether that step was (see `reduced_train_step`); with
                            `detect_anomaly` an unhealthy step ends the call early
            step            the optimizer's step count after the call
            weights_finite  whether every trainable weight is still finite
            metrics         the running means of the training metrics, `train_<name>`
        """
        loss, healthy = tf.constant(0.0), tf.constant(True)
        with self.module.logbook.recording("train"):
            for _ in tf.range(num_steps):  # A tensor bound: a graph loop, traced once for any n.
                if self.config.reduces_gradients_itself:
                    loss, healthy = self.reduced_train_step(iterator)
                else:
                    per_replica = self.strategy.run(self._maybe_xla(self.train_step),
                                                    args=(next(iterator),))
                    loss = _as_float32(self.strategy.reduce(SUM, per_replica, axis=None))
                if self.config.detect_anomaly and not healthy:
                    break
        return {"loss": loss, "healthy": healthy,
                "step": tf.convert_to_tensor(self.optimizer.iterations),
                "weights_finite": optimization.all_finite(self.module.trainable_variables),
                "metrics": self.module.logbook.result_tensors("train")}

    def train_step(self, batch):
        """One optimizer step on this replica's slice of the global batch; runs on every replica."""
        variables = self.module.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.module.training_step(batch)  # forward + loss / global batch size
        grads = tape.gradient(loss, variables)
        # In replica context, apply_gradients first all-reduces: it SUMS every replica's grads,
        # then each replica applies the same update to its own copy of the variables.
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss

    def reduced_train_step(self, iterator):
        """One optimizer step whose gradients are summed over replicas before anything uses them:

            for each micro-batch:          [every replica] forward, backward, add to its sums
            all-reduce the sums once       [every replica] unscale, check, clip
            if the total is finite:        [every replica] apply it, without a second all-reduce
            else: skip the step (counted)  an fp16 overflow: the loss scale shrinks

        Returns the step's loss (mean over everything it saw) and whether the step was healthy.
        Unhealthy is a non-finite loss or non-finite gradients; under fp16 non-finite gradients
        are the loss scale's routine signal to shrink, and unhealthy only at the minimum scale.
        """
        loss = tf.constant(0.0)
        for _ in tf.range(self.config.accumulate_grad_batches):
            per_replica = self.strategy.run(self._maybe_xla(self.accumulate_gradients),
                                            args=(next(iterator),))
            loss += _as_float32(self.strategy.reduce(SUM, per_replica, axis=None))
        grads, grads_finite = self.strategy.run(self.reduce_gradients)
        # Every replica computed the same flag from the same all-reduced numbers: read one.
        grads_finite = self.strategy.experimental_local_results(grads_finite)[0]
        healthy = tf.math.is_finite(loss) & grads_finite
        if self.loss_scale:
            healthy = tf.math.is_finite(loss) & (grads_finite | ~self.loss_scale.at_minimum())
        if tf.math.is_finite(loss) & grads_finite:
            self.strategy.run(self.apply_reduced_gradients, args=(grads,))
        else:
            self.optimizer.iterations.assign_add(1)  # Skipped, but counted: the data moved on.
            self.skipped_steps.assign_add(1)
        if self.loss_scale:
            self.loss_scale.update(grads_finite)
        return loss, healthy

    def accumulate_gradients(self, batch):
        """Adds one micro-batch's gradients to this replica's sums; runs on every replica."""
        with tf.GradientTape() as tape:
            loss = self.module.training_step(batch)
            scaled_loss = self.loss_scale.scale_loss(loss) if self.loss_scale else loss
        self.accumulator.add(tape.gradient(scaled_loss, self.module.trainable_variables))
        return loss

    def reduce_gradients(self):
        """All-reduces this step's gradients, then unscales, checks and clips them (per replica)."""
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(SUM, self.accumulator.take())  # The step's one all-reduce.
        if self.loss_scale:
            grads = self.loss_scale.unscale(grads)
        finite = optimization.all_finite(grads)
        if self.config.gradient_clip_val is not None:  # On the sum, as one device would.
            grads = optimization.clip(grads, self.config.gradient_clip_val,
                                      self.config.gradient_clip_algorithm)
        return grads, finite

    def apply_reduced_gradients(self, grads):
        """Applies this replica's copy of the all-reduced gradients; runs on every replica.

        In replica context Keras' optimizer SUMS the gradients it is given over the replicas
        (`_all_reduce_sum_gradients`) before it applies them. These are already the sums, so that
        second all-reduce would only double the traffic; it is switched off while this call is
        traced, and the optimizer applies the sums as they are.
        """
        with optimization.gradients_already_reduced(self.optimizer):
            self.optimizer.apply_gradients(zip(grads, self.module.trainable_variables))

    def _maybe_xla(self, replica_function):
        """`replica_function`, XLA-compiled with `jit_compile`. XLA compiles the per-replica step
        only: the loop around it reads the input iterator, which XLA cannot compile."""
        if not self.config.jit_compile or self.config.run_eagerly:
            return replica_function
        return self.traced(f"xla_{replica_function.__name__}",
                           tf.function(replica_function, jit_compile=True))

    # ---- Evaluation and prediction -------------------------------------------------------------

    def eval_loop(self, stage, hook, iterator):
        """Runs `hook` on every remaining batch of `iterator`, all in one call."""
        with self.module.logbook.recording(stage):
            for _ in tf.range(_UNLIMITED):
                # get_next_as_optional, not next(): running out of data must end this loop,
                # not raise OutOfRange through the whole traced call.
                batch = iterator.get_next_as_optional()
                if not batch.has_value():
                    break
                self.strategy.run(_skip_if_empty(hook), args=(batch.get_value(),))

    def predict_step(self, batch):
        """Runs `predict_step` on every replica and gathers the outputs in dataset order."""
        outputs = self.strategy.run(_pad_by_one(self.module.predict_step), args=(batch,))
        return self.strategy.gather(outputs, axis=0)

    def average_replica_copies(self):
        """Gives every replica the mean of the replicas' copies of `averaged_variables`."""
        def replica_means():
            context = tf.distribute.get_replica_context()
            return [context.all_reduce(tf.distribute.ReduceOp.MEAN, v.value)
                    for v in self.averaged_variables]
        means = self.strategy.run(replica_means)
        for variable, mean in zip(self.averaged_variables, means):
            variable.value.assign(mean)  # Each replica's copy gets its (identical) mean.


# At the end of the evaluation data some replicas receive an empty batch (fewer examples than
# replicas are left). Hooks never see one: on CPU, oneDNN's convolution returns an empty batch's
# input unchanged or fails ("input depth must be evenly divisible by filter depth"), depending on
# the processor; and a hook's metrics gain nothing from an empty batch anyway.

def _as_float32(loss):
    """The loss as float32, whatever the policy computed it in: the loop's running values keep one
    dtype (a bfloat16 loss after a float32 start would change a loop variable's dtype)."""
    return tf.cast(loss, tf.float32)


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
    Prediction cannot skip a replica: every replica's outputs must have one structure for
    `strategy.gather`; the extra example keeps every batch non-empty without a branch."""
    def run_padded(batch):
        size = _batch_size(batch)
        padded = tf.nest.map_structure(
            lambda t: tf.concat([t, tf.zeros(tf.concat([[1], tf.shape(t)[1:]], 0), t.dtype)], 0),
            batch)
        return tf.nest.map_structure(lambda output: output[:size], hook(padded))
    return run_padded
