"""`--selftest`: proof, in seconds, that this strategy's N replicas train exactly like one device.

It trains the project's `sequential` CNN for a few SGD steps with the real `Trainer` on synthetic
images that every worker generates from the same seed, and trains a copy of the same model on the
same global batches on one device, in the same process, under TensorFlow's default strategy (not
a second MirroredStrategy: docs/pitfalls.md#15). Then it checks:

    (c) the loss denominator: the replicas' losses, summed, equal the one-device mean loss of the
        global batch; dividing by the per-replica batch would make them N times too large
    (b) the training loss and the weights after the steps equal the one-device run's
    (a) every replica's copy of every variable is identical, on all workers: the copies are
        all-gathered, because each worker only sees its own replicas' copies

What legitimately differs between N replicas and one device is left out, so that tight tolerances
hold: no BatchNorm (per-replica batch statistics), no dropout (per-replica random masks), float32,
and SGD, whose update is a fixed multiple of the gradient (Adam's division by a running magnitude
turns float noise in a near-zero gradient into a full-size step).
"""

import dataclasses

import numpy as np
import tensorflow as tf

import data
import layers
from trainer import distribute
from trainer import trainer as trainer_lib
from trainer.vision import classifier

STEPS = 3
LEARNING_RATE = 0.05
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
PERTURBATION = 1e-3
# Summing per-replica partial results changes the order of float32 additions: measured
# differences were below 4e-6 (weights after 8 steps, 2 replicas), the tolerances allow 5x that.
LOSS_TOLERANCE = 2e-5
WEIGHT_TOLERANCE = 2e-5


@dataclasses.dataclass(frozen=True)
class Check:
    """One row of the self-test table: what was measured, against which rule."""

    what: str
    measured: float
    rule: str          # "<=" (a difference within tolerance) or ">=" (a minimum)
    bound: float
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.rule == "<=":
            return self.measured <= self.bound
        return self.measured >= self.bound


class SGDClassifier(classifier.ImageClassifier):
    """The ImageClassifier with plain SGD, so that N replicas and one device can match closely."""

    def configure_optimizers(self):
        return tf.keras.optimizers.SGD(learning_rate=self.learning_rate)


def run(strategy: tf.distribute.Strategy, *, global_batch_size: int, seed: int = 0,
        perturb_replica: int | None = None) -> list[Check]:
    """Runs the self-test under `strategy`; every worker must call it (it runs collectives).

    Args:
        global_batch_size: examples per step over all replicas; divisible by the replica count.
        seed: seeds the synthetic data and the initial weights.
        perturb_replica: if given, adds PERTURBATION to this replica's copy of one weight after
            training, which the replica check must report (it tests the self-test).

    Returns:
        The checks, in the order they ran.

    Raises:
        ValueError: if `perturb_replica` names no replica, or the batch does not divide.
    """
    replicas = strategy.num_replicas_in_sync
    if perturb_replica is not None and not 0 <= perturb_replica < replicas:
        raise ValueError(f"selftest_perturb_replica ({perturb_replica}) must name one of the "
                         f"{replicas} replica(s): 0 to {replicas - 1}")
    datamodule = _synthetic_data(global_batch_size, seed)
    tf.keras.utils.set_random_seed(seed)
    with strategy.scope():
        module = _build_module(global_batch_size)
    reference = _build_module(global_batch_size)  # Outside any scope: the default strategy.
    reference.set_weights(module.get_weights())   # The same start on every worker and device.

    checks = [_loss_denominator_check(strategy, module, reference, datamodule)]
    initial_weights = reference.get_weights()
    logs = _train(strategy, module, datamodule)
    reference_logs = _train(tf.distribute.get_strategy(), reference, datamodule)
    checks += _same_training_checks(replicas, module, reference, initial_weights,
                                    logs, reference_logs)
    if perturb_replica is not None:
        _perturb(strategy, module.trainable_variables[0], perturb_replica)
    checks.append(_replica_copies_check(strategy, module.variables))
    return checks


def report(checks: list[Check], strategy: tf.distribute.Strategy) -> bool:
    """Prints the table on the chief; returns whether every check passed."""
    if distribute.is_chief(strategy):
        print(format_table(checks, strategy), flush=True)
    return all(check.passed for check in checks)


def format_table(checks: list[Check], strategy: tf.distribute.Strategy) -> str:
    """The checks as a table a newcomer can read: result, what was checked, measured, rule."""
    header = (f"self-test of {distribute.describe(strategy)}: {STEPS} SGD steps "
              f"(learning rate {LEARNING_RATE}) on synthetic {IMAGE_SHAPE} images, float32")
    lines = [header, f"{'result':6}  {'measured':>10}  {'rule':>11}  what was checked",
             "-" * 100]
    for check in checks:
        lines.append(f"{'PASS' if check.passed else 'FAIL':6}  {check.measured:10.3g}  "
                     f"{check.rule} {check.bound:8.3g}  {check.what}")
        if check.note:
            lines.append(f"{'':33}{check.note}")
    failed = sum(not check.passed for check in checks)
    lines.append("-" * 100)
    lines.append(f"self-test {'PASSED' if not failed else 'FAILED'}: "
                 f"{len(checks) - failed} of {len(checks)} checks passed")
    return "\n".join(lines)


def _synthetic_data(global_batch_size, seed):
    """STEPS global batches of random images, unshuffled (shuffle blocks of one example).

    Unshuffled, global batch s is examples [s * B, (s + 1) * B) on one device, and also under any
    sharding: each worker reads every W-th example, and the union of its replicas' slices at step
    s is the same B examples. So every strategy trains on the same global batches.
    """
    rng = np.random.default_rng(seed)
    num_examples = STEPS * global_batch_size
    images = rng.integers(0, 256, size=(num_examples, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    datamodule = data.ArrayImageData(train=(images, labels), num_classes=NUM_CLASSES,
                                     batch_size=global_batch_size, seed=seed,
                                     shuffle_buffer_size=1)
    datamodule.setup()
    return datamodule


def _build_module(global_batch_size):
    """The sequential CNN (no BatchNorm, no dropout) with SGD, built: its variables exist."""
    network = layers.build_cnn("sequential", input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
    module = SGDClassifier(network, learning_rate=LEARNING_RATE)
    module(tf.zeros([1, *IMAGE_SHAPE]), training=False)
    module.global_batch_size = global_batch_size
    return module


def _train(strategy, module, datamodule):
    """STEPS steps (one epoch) with the project's Trainer; returns its logs."""
    fitter = trainer_lib.Trainer(strategy=strategy, epochs=1, steps_per_loop=STEPS,
                                 enable_model_summary=False)
    return fitter.fit(module, datamodule)


def _first_batch_loss(strategy, module, datamodule):
    """The loss of the first global batch as the gradients see it: each replica's
    `training_step` result (its summed loss / the global batch), summed over all replicas."""
    batch = next(iter(strategy.distribute_datasets_from_function(datamodule.train_dataset)))

    @tf.function
    def summed_loss(batch):
        per_replica = strategy.run(module.training_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    # Before the Trainer has created the logged metrics, `log` may only collect names.
    with module.logbook.discovering("train"):
        return float(summed_loss(batch))


def _loss_denominator_check(strategy, module, reference, datamodule):
    replicas = strategy.num_replicas_in_sync
    loss = _first_batch_loss(strategy, module, datamodule)
    mean_loss = _first_batch_loss(tf.distribute.get_strategy(), reference, datamodule)
    if replicas > 1:
        note = (f"(dividing by the per-replica batch, {datamodule.batch_size // replicas}, "
                f"would give {mean_loss * replicas:.4f}, {replicas}x the mean {mean_loss:.4f})")
    else:
        note = "(with one replica both denominators are the same: this cannot tell them apart)"
    return Check(f"loss denominator is the global batch ({datamodule.batch_size}): first batch's "
                 f"loss summed over {replicas} replica(s) vs one-device mean loss",
                 abs(loss - mean_loss), "<=", LOSS_TOLERANCE, note)


def _same_training_checks(replicas, module, reference, initial_weights, logs, reference_logs):
    """Loss and weights after training match the one-device run, and the weights did move."""
    moved = max(float(np.max(np.abs(w - r))) for w, r in
                zip(reference.get_weights(), initial_weights))
    weights_difference = max(float(np.max(np.abs(w - r))) for w, r in
                             zip(module.get_weights(), reference.get_weights()))
    return [
        Check(f"training loss (mean over {STEPS} steps): {replicas} replica(s) vs one device",
              abs(logs["train_loss"] - reference_logs["train_loss"]), "<=", LOSS_TOLERANCE),
        Check(f"weights after {STEPS} steps, largest difference: {replicas} replica(s) vs one "
              "device", weights_difference, "<=", WEIGHT_TOLERANCE),
        Check("largest weight change during training (must dwarf the tolerance above, or that "
              "check proves nothing)", moved, ">=", 50 * WEIGHT_TOLERANCE),
    ]


def _perturb(strategy, variable, replica):
    """Adds PERTURBATION to `replica`'s copy of `variable`, on whichever worker holds it."""
    ids = strategy.run(lambda: tf.distribute.get_replica_context().replica_id_in_sync_group)
    for replica_id, copy in zip(strategy.experimental_local_results(ids),
                                strategy.experimental_local_results(variable.value)):
        if int(replica_id) == replica:
            copy.assign_add(tf.fill(copy.shape, tf.constant(PERTURBATION, copy.dtype)))


def _replica_copies_check(strategy, variables):
    """The largest difference between any replica's copy of a variable and replica 0's copy,
    over all variables and all workers (each replica all-gathers every copy)."""
    replicas = strategy.num_replicas_in_sync
    what = f"replica copies of all {len(variables)} variables identical across all replicas"
    if replicas == 1:
        return Check(what, 0.0, "<=", 0.0, "(one replica: there is no other copy to compare)")

    @tf.function
    def largest_spread():
        def replica_spread():
            context = tf.distribute.get_replica_context()
            spreads = []
            for variable in variables:
                copies = context.all_gather(tf.reshape(variable.value, [1, -1]), axis=0)
                spreads.append(tf.reduce_max(tf.abs(copies - copies[:1])))
            return tf.reduce_max(tf.stack(spreads))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(replica_spread), axis=None)

    return Check(what + " (they apply the same summed gradient, so they must be bit-identical)",
                 float(largest_spread()), "<=", 0.0)
