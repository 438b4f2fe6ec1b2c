"""fp16 on 2 replicas where only replica 1 overflows in the first step: prints a JSON report.

Run as a subprocess (one MirroredStrategy per process): `python tests/overflow_run.py`.
"""

import dataclasses
import json

import numpy as np

from trainer import distribute


def _inf_gradient_if(condition, loss):
    """The loss unchanged, but its gradient is Inf where `condition` holds, as when float16
    gradients overflow: the loss itself stays finite, so only the gradients can tell."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    @tf.custom_gradient
    def identity(x):
        return tf.identity(x), lambda dy: dy * tf.where(condition, np.inf, 1.0)

    return identity(loss)


def main():
    strategy = distribute.create_strategy("mirrored", cpu_devices=2)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel
    from conftest import quadrant_datamodule  # pylint: disable=import-outside-toplevel
    from trainer import precision  # pylint: disable=import-outside-toplevel

    class OverflowsOnReplica1(trainer.ImageClassifier):
        """Replica 1's gradients are Inf in the first step only; replica 0's are always fine."""

        def __init__(self, network, **kwargs):
            super().__init__(network, **kwargs)
            self.calls = tf.Variable(0, trainable=False,
                                     synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.SUM)

        def training_step(self, batch):
            loss = super().training_step(batch)
            self.calls.assign_add(1)
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            overflow = (replica == 1) & (self.calls == 1)
            return _inf_gradient_if(overflow, loss)

    tf.keras.utils.set_random_seed(0)
    precision.set_precision("16-mixed")
    fitter = trainer.Trainer(strategy=strategy, epochs=1, max_steps=1, precision="16-mixed",
                             num_sanity_val_steps=0, enable_progress_bar=False,
                             enable_model_summary=False)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.layers.Flatten(),
                                       tf.keras.layers.Dense(16, activation="relu"),
                                       tf.keras.layers.Dense(4, dtype="float32")])
        module = OverflowsOnReplica1(network, learning_rate=1e-2)
    datamodule = quadrant_datamodule()
    fitter.validate(module, datamodule)  # Builds the module.

    def replica_copies():
        return [[c.numpy().tolist() for c in strategy.experimental_local_results(v.value)]
                for v in module.trainable_variables]

    initial = replica_copies()
    fitter.fit(module, datamodule)  # Step 1: replica 1 overflows.
    after_overflow = replica_copies()
    scale_after_overflow = float(fitter.step_functions.loss_scale.scale.numpy())
    fitter.loop_config = dataclasses.replace(fitter.loop_config, max_steps=4)
    fitter.fit(module, datamodule)  # Steps 2-4: finite everywhere.
    print(json.dumps({
        "compute_dtype": network.layers[1].compute_dtype,
        "initial": initial, "after_overflow": after_overflow, "after_4_steps": replica_copies(),
        "steps": fitter.global_step,
        "skipped_steps": int(fitter.step_functions.skipped_steps.numpy()),
        "scale_after_overflow": scale_after_overflow,
        "scale_after_4_steps": float(fitter.step_functions.loss_scale.scale.numpy())}))


if __name__ == "__main__":
    main()
