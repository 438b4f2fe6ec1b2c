"""The parts of an optimizer step that must see the gradients summed over all replicas.

`optimizer.apply_gradients` all-reduces (sums) the replicas' gradients itself, which is all the
plain step needs. Clipping, fp16 loss scaling and gradient accumulation need more, and done per
replica they are wrong (../shared/PITFALLS.md items 5-7):

    clipping        each replica would clip its own partial gradient: clip the SUM instead;
    fp16 scaling    Keras decides "finite" from replica 0 only: decide from the SUM instead,
                    so every replica applies or skips together;
    accumulation    Keras' `gradient_accumulation_steps` fails under MirroredStrategy: keep
                    per-replica sums in ON_READ variables and reduce them once per step.

So the Trainer's general step is: accumulate each micro-batch's gradients locally, all-reduce
once, unscale, check, clip, then apply. The classes here hold that state and math.
"""

import dataclasses

import tensorflow as tf

CLIP_ALGORITHMS = ("norm", "value")


@dataclasses.dataclass(frozen=True)
class GradientClipping:
    """Clips the (all-reduced) gradients by their global norm or element-wise by value.

    Args:
        value: the largest global norm ("norm") or absolute element value ("value"), > 0.
        algorithm: "norm" (`tf.clip_by_global_norm`) or "value" (`tf.clip_by_value`).
    """

    value: float
    algorithm: str = "norm"

    def __post_init__(self):
        if self.value <= 0:
            raise ValueError(f"gradient_clip_val ({self.value}) must be positive")
        if self.algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"gradient_clip_algorithm ({self.algorithm!r}) must be one of "
                             f"{list(CLIP_ALGORITHMS)}")

    def __call__(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        if self.algorithm == "norm":
            return tf.clip_by_global_norm(grads, self.value)[0]
        return [tf.clip_by_value(g, -self.value, self.value) for g in grads]


class GradientAccumulator:
    """Each replica's running sum of gradients over the micro-batches of one optimizer step.

    The sums are ON_READ variables: every replica adds to its own copy without communication
    (the all-reduce happens once per optimizer step, in `take`'s caller). Create it inside
    `strategy.scope()`.
    """

    def __init__(self, variables):
        self._sums = [
            tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.SUM, name="grad_sum")
            for v in variables]

    def add(self, grads) -> None:
        """Adds one micro-batch's gradients to this replica's sums (replica context)."""
        for total, grad in zip(self._sums, grads):
            total.assign_add(grad if grad is not None else tf.zeros_like(total))

    def take(self) -> list[tf.Tensor]:
        """Returns this replica's sums and resets them to zero (replica context)."""
        sums = [total.read_value() for total in self._sums]
        with tf.control_dependencies(sums):
            for total in self._sums:
                total.assign(tf.zeros_like(total))
        return sums


class DynamicLossScale:
    """Dynamic loss scaling for float16: scale the loss up so small gradients do not flush to 0.

    The scale halves after a step with non-finite gradients (that step is skipped) and doubles
    after `growth_interval` finite steps in a row. Its variables are checkpointed with the run.
    Create it inside `strategy.scope()`; `update` runs in cross-replica context.
    """

    def __init__(self, *, initial_scale: float = 2.0**15, growth_interval: int = 2000):
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA  # Identical on every replica.
        self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False,
                                 aggregation=aggregation, name="loss_scale")
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                        aggregation=aggregation, name="finite_steps")
        self.growth_interval = growth_interval

    def scale_loss(self, loss):
        return loss * tf.cast(self.scale, loss.dtype)

    def unscale(self, grads):
        return [g / self.scale for g in grads]

    def update(self, finite) -> None:
        """Grows the scale after `growth_interval` finite steps; halves it after an overflow."""
        grow = finite & (self.finite_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.finite_steps.assign(tf.where(finite & ~grow, self.finite_steps + 1, 0))


def all_finite(tensors) -> tf.Tensor:
    """True when no tensor holds an Inf or NaN."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


class ReducedGradientStep:
    """One optimizer step whose gradients are summed over replicas before anything uses them.

    Called in cross-replica context (inside the Trainer's traced loop) with the training iterator:

        for each of the step's micro-batches:      [every replica] forward, backward, add to sums
        all-reduce the sums once                   [every replica] unscale, check, clip, / replicas
        if the gradients are finite:               [every replica] apply_gradients
        else: skip the step (it still counts)      fp16 overflow; shrink the loss scale

    Create it inside `strategy.scope()`.

    Args:
        strategy: the Trainer's strategy.
        module: the `Module`; its `training_step` returns loss / (global batch x micro-batches).
        optimizer: the module's built optimizer.
        micro_batches: batches whose gradients add up to one optimizer step (>= 1).
        clipping: a `GradientClipping`, or None.
        loss_scale: a `DynamicLossScale` for float16, or None.
        replica: wraps a per-replica function before `strategy.run` (e.g. to XLA-compile it).
    """

    def __init__(self, *, strategy, module, optimizer, micro_batches: int = 1,
                 clipping: GradientClipping | None = None,
                 loss_scale: DynamicLossScale | None = None, replica=lambda function: function):
        self.strategy = strategy
        self.module = module
        self.optimizer = optimizer
        self.micro_batches = micro_batches
        self.clipping = clipping
        self.loss_scale = loss_scale
        self.replica = replica
        self.accumulator = GradientAccumulator(module.trainable_variables)
        self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def __call__(self, iterator):
        """Runs one optimizer step; returns its loss (mean over everything it saw) and whether
        its gradients were finite."""
        loss = tf.constant(0.0)
        for _ in tf.range(self.micro_batches):
            per_replica = self.strategy.run(self.replica(self._accumulate), args=(next(iterator),))
            loss += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        grads, finite = self.strategy.run(self._reduce_gradients)
        finite = self.strategy.experimental_local_results(finite)[0] & tf.math.is_finite(loss)
        if finite:  # The same on every replica: it was computed from the all-reduced gradients.
            self.strategy.run(self._apply_gradients, args=(grads,))
        else:
            self.optimizer.iterations.assign_add(1)  # Skipped, but counted: the data moved on.
            self.skipped_steps.assign_add(1)
        if self.loss_scale:
            self.loss_scale.update(finite)
        return loss, finite

    def checkpointed(self) -> dict:
        """The state a resumed run needs: the skip count and the loss scale."""
        state = {"skipped_steps": self.skipped_steps}
        if self.loss_scale:
            state["loss_scale"] = [self.loss_scale.scale, self.loss_scale.finite_steps]
        return state

    def _accumulate(self, batch):
        """Adds one micro-batch's gradients to this replica's sums; runs on every replica."""
        variables = self.module.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.module.training_step(batch)
            scaled_loss = self.loss_scale.scale_loss(loss) if self.loss_scale else loss
        self.accumulator.add(tape.gradient(scaled_loss, variables))
        return loss

    def _reduce_gradients(self):
        """All-reduces this step's gradients, then unscales, checks and clips them (per replica)."""
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, self.accumulator.take())
        if self.loss_scale:
            grads = self.loss_scale.unscale(grads)
        finite = all_finite(grads)
        if self.clipping:
            grads = self.clipping(grads)  # On the sum, as one device would (PITFALLS item 5).
        # apply_gradients SUMS the replicas' gradients again: each replica passes its share.
        return [g / context.num_replicas_in_sync for g in grads], finite

    def _apply_gradients(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.module.trainable_variables))
