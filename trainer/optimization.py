"""The parts of an optimizer step that must see the gradients summed over all replicas.

`optimizer.apply_gradients` all-reduces (sums) the replicas' gradients itself, which is all the
plain step needs. Clipping, fp16 loss scaling and gradient accumulation need more, and done per
replica they are wrong (docs/pitfalls.md#4, #5 and #7):

    clipping        each replica would clip its own partial gradient: clip the SUM instead;
    fp16 scaling    Keras decides "finite" from replica 0 only: decide from the SUM instead,
                    so every replica applies or skips together;
    accumulation    Keras' `gradient_accumulation_steps` fails under MirroredStrategy: keep
                    per-replica sums in ON_READ variables and reduce them once per step.

So the Trainer's general step (`StepFunctions.reduced_train_step` in trainer/steps.py) is:
accumulate each micro-batch's gradients locally, all-reduce once, unscale, check, clip, then
apply. This module holds that step's state and its small pieces of math.
"""

import contextlib

from absl import logging

import tensorflow as tf


def clip(grads: list[tf.Tensor], value: float, algorithm: str) -> list[tf.Tensor]:
    """Clips gradients by their global norm ("norm") or element-wise by value ("value")."""
    if algorithm == "norm":
        return tf.clip_by_global_norm(grads, value)[0]
    return [tf.clip_by_value(g, -value, value) for g in grads]


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
    after `growth_interval` finite steps in a row, between MIN_SCALE and MAX_SCALE. An overflow is
    the routine signal to shrink, not an error; only an overflow at MIN_SCALE means the gradients
    themselves are broken. The ceiling keeps a long run from growing the scale until every step
    overflows. Its variables are checkpointed with the run. Create it inside `strategy.scope()`;
    `update` runs in cross-replica context.
    """

    MIN_SCALE = 1.0
    MAX_SCALE = 2.0**24

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

    def at_minimum(self) -> tf.Tensor:
        """Whether the scale cannot shrink any further."""
        return self.scale <= self.MIN_SCALE

    def update(self, finite) -> None:
        """Grows the scale after `growth_interval` finite steps; halves it after an overflow."""
        grow = finite & (self.finite_steps + 1 >= self.growth_interval)
        grown = tf.minimum(self.scale * 2.0, self.MAX_SCALE)
        self.scale.assign(tf.where(finite, tf.where(grow, grown, self.scale),
                                   tf.maximum(self.scale / 2.0, self.MIN_SCALE)))
        self.finite_steps.assign(tf.where(finite & ~grow, self.finite_steps + 1, 0))


class WarmupSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup to `peak` over `warmup_steps` optimizer steps, then `after` (a rate or a
    schedule, counted from the end of the warmup).

    Step s < warmup_steps runs at peak x (s + 1) / warmup_steps: the first step already learns,
    and the last warmup step runs at the peak. (Keras' CosineDecay warms up from step 0 at rate
    0, a step that changes nothing but the optimizer's moments.)
    """

    def __init__(self, peak: float, warmup_steps: int, after):
        super().__init__()
        self.peak, self.warmup_steps, self.after = peak, warmup_steps, after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * (step + 1.0) / self.warmup_steps
        after = (self.after(step - self.warmup_steps) if callable(self.after)
                 else tf.constant(self.after, tf.float32))
        return tf.where(step < self.warmup_steps, warmup, after)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "after": self.after}


def check_applies_reduced_gradients(optimizer) -> None:
    """Raises TypeError unless `optimizer` can apply gradients already summed over the replicas
    (`gradients_already_reduced`): TensorFlow Keras optimizers can."""
    if not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise TypeError(f"the optimizer ({type(optimizer).__name__}) is not a TensorFlow Keras "
                        "optimizer, which clipping, accumulation, fp16 and anomaly checks need")


@contextlib.contextmanager
@tf.autograph.experimental.do_not_convert
def gradients_already_reduced(optimizer):
    """Within the block, `optimizer` applies the gradients it is given without all-reducing them.

    Keras' TensorFlow optimizer sums the gradients over the replicas in `apply_gradients`
    (`_all_reduce_sum_gradients`); the reduced step has summed them already, so that sum is
    replaced by the identity while the block runs (it is traced once, inside `tf.function`)."""
    original = optimizer._all_reduce_sum_gradients  # pylint: disable=protected-access
    object.__setattr__(optimizer, "_all_reduce_sum_gradients", lambda grads_and_vars: grads_and_vars)
    try:
        yield
    finally:
        object.__setattr__(optimizer, "_all_reduce_sum_gradients", original)


def all_finite(tensors) -> tf.Tensor:
    """True when no tensor holds an Inf or NaN."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


@contextlib.contextmanager
def keeping_learning_rate(optimizer, say=logging.info):
    """Within the block a checkpoint may be restored into `optimizer`; afterwards it trains on
    the learning rate it was configured with again, and `say(line)` tells when they differed.

    A checkpoint restores the optimizer's state (its step count, moments and averages) and,
    because Keras keeps a constant learning rate in a variable, that rate too. The rate is a
    setting, not state: a resumed run trains on the rate its `configure_optimizers` asked for,
    as it would on a schedule (schedules are code, never restored). Says so when they differ.
    """
    rate = optimizer._learning_rate  # pylint: disable=protected-access
    if not isinstance(rate, tf.keras.Variable):  # A schedule: nothing in the checkpoint.
        yield
        return
    configured = float(rate.numpy())
    yield
    restored = float(rate.numpy())
    if restored != configured:
        say(f"learning rate {configured:g}, as configured (the checkpoint's run trained on "
            f"{restored:g})")
        rate.assign(configured)
