"""The paths beside the default one: mid-epoch ranking, randomness across replicas, fp16 with
anomaly checks, mixed precision with any network, repeated fits, one all-reduce per step, weight
decay, warmup, test-time flips. The 2-replica checks share one subprocess (tests/paths_run.py)."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

import data
import layers
import trainer
from conftest import TESTS, quadrant_datamodule, run_python, tiny_network
from trainer import callbacks
from trainer import checkpointing
from trainer import optimization
from trainer import precision


@pytest.fixture(scope="module")
def two_replicas():
    result = run_python([os.path.join(TESTS, "paths_run.py")])
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _quiet_trainer(**kwargs):
    return trainer.Trainer(enable_progress_bar=False, enable_model_summary=False, **kwargs)


# ---- 1. The ranked weights are the validated weights ------------------------------------------

def test_best_weights_are_the_weights_that_scored(tmp_path):
    tf.keras.utils.set_random_seed(0)
    best = checkpointing.BestModels(str(tmp_path), monitor="val_loss", top_k=4)
    fitter = _quiet_trainer(epochs=2, val_check_interval=10, num_sanity_val_steps=0,
                            best_models=best)
    module = trainer.ImageClassifier(tiny_network(), learning_rate=1e-2)
    datamodule = quadrant_datamodule()  # 16 steps per epoch: validations at 10, 20, 30 and 32
    fitter.fit(module, datamodule)
    assert sorted(entry["step"] for entry in best.ranking) == [10, 20, 30, 32]
    for entry in best.ranking:
        tf.train.Checkpoint(module=module).read(best.path_of(entry)).assert_existing_objects_matched()
        assert fitter.validate(module, datamodule)["val_loss"] == pytest.approx(entry["score"],
                                                                                 rel=1e-6)


def test_best_weights_on_two_replicas_hold_the_averaged_batchnorm_statistics(two_replicas):
    assert [step for step, _, _ in two_replicas["ranking"]] != []
    for step, recorded, revalidated in two_replicas["ranking"]:
        assert revalidated == pytest.approx(recorded, rel=1e-5), step


# ---- 2. Every replica and every input pipeline draws its own random numbers -----------------

def test_each_replica_draws_its_own_dropout_mask(two_replicas):
    replica0, replica1 = (np.array(mask) for mask in two_replicas["dropout"])
    assert 0.3 < np.mean(replica0 == 0) < 0.7  # Dropout(0.5) did drop about half.
    assert not np.array_equal(replica0, replica1)


def test_each_input_pipeline_augments_differently():
    images = np.tile(np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1), (32, 1, 1, 1))
    datamodule = data.ArrayImageData(train=(images, np.zeros(32, np.int64)), num_classes=2,
                                     batch_size=16, seed=0, shuffle_buffer_size=1, augment=True)

    def first_batch(pipeline):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        return next(iter(datamodule.train_dataset(context)))[0].numpy()

    # Both pipelines hold identical images (every example is the same): only the draws differ.
    assert not np.array_equal(first_batch(0), first_batch(1))
    np.testing.assert_array_equal(first_batch(1), first_batch(1))  # Still a pure function.


# ---- 3. fp16: a loss-scale overflow is not an anomaly -------------------------------------------

def _inf_gradient_at_first_call(loss, calls):
    """The loss unchanged, with an Inf gradient on the first call only: a float16 overflow."""
    @tf.custom_gradient
    def identity(x):
        return tf.identity(x), lambda dy: dy * tf.where(calls == 1, np.inf, 1.0)
    return identity(loss)


class OverflowsOnce(trainer.ImageClassifier):
    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self.calls = tf.Variable(0, trainable=False)

    def training_step(self, batch):
        loss = super().training_step(batch)
        self.calls.assign_add(1)
        return _inf_gradient_at_first_call(loss, self.calls)


def test_fp16_overflow_is_not_an_anomaly():
    precision.set_precision("16-mixed")
    try:
        tf.keras.utils.set_random_seed(0)
        fitter = _quiet_trainer(epochs=1, precision="16-mixed", detect_anomaly=True,
                                num_sanity_val_steps=0)
        module = OverflowsOnce(tiny_network(), learning_rate=1e-2)
        logs = fitter.fit(module, quadrant_datamodule())
    finally:
        precision.set_precision("32")
    assert logs["steps"] == 16 and logs["skipped_steps"] == 1  # Skipped, then trained on.
    assert float(fitter.step_functions.loss_scale.scale.numpy()) == 2.0**14


def test_fp16_non_finite_loss_is_still_an_anomaly():
    class NaNLoss(trainer.ImageClassifier):
        def training_step(self, batch):
            return super().training_step(batch) * np.nan

    precision.set_precision("16-mixed")
    try:
        fitter = _quiet_trainer(epochs=1, precision="16-mixed", detect_anomaly=True,
                                num_sanity_val_steps=0)
        module = NaNLoss(tiny_network(), learning_rate=1e-2)
        with pytest.raises(trainer.AnomalyDetected, match="step 1 "):
            fitter.fit(module, quadrant_datamodule())
    finally:
        precision.set_precision("32")


def test_loss_scale_has_a_floor_and_a_ceiling():
    scale = optimization.DynamicLossScale(initial_scale=2.0**23, growth_interval=1)
    for _ in range(3):
        scale.update(tf.constant(True))
    assert float(scale.scale.numpy()) == optimization.DynamicLossScale.MAX_SCALE == 2.0**24
    at_floor = optimization.DynamicLossScale(initial_scale=1.0)
    assert bool(at_floor.at_minimum())
    at_floor.update(tf.constant(False))
    assert float(at_floor.scale.numpy()) == 1.0


# ---- 4. Mixed precision with a network whose last layer is not float32 ------------------------

def test_bf16_with_a_bfloat16_last_layer_trains_with_float32_logits_and_loss():
    precision.set_precision("bf16-mixed")
    try:
        network = tf.keras.Sequential([tf.keras.layers.Flatten(),
                                       tf.keras.layers.Dense(16, activation="relu"),
                                       tf.keras.layers.Dense(4)])  # bfloat16 logits
        module = trainer.ImageClassifier(network, learning_rate=1e-2)
        fitter = _quiet_trainer(epochs=2, precision="bf16-mixed", num_sanity_val_steps=0)
        logs = fitter.fit(module, quadrant_datamodule())
    finally:
        precision.set_precision("32")
    assert network.layers[-1].compute_dtype == "bfloat16"
    assert module(tf.zeros([1, 8, 8, 1])).dtype == tf.float32
    assert logs["val_accuracy"] > 0.5


# ---- 5. A Ctrl-C ends one fit, not every later one ----------------------------------------------

class InterruptOnce(callbacks.Callback):
    def __init__(self):
        self.sent = False

    def on_train_batch_end(self, step, logs):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupt_stops_one_fit_and_the_next_fit_trains_on():
    fitter = _quiet_trainer(epochs=1, steps_per_loop=4, num_sanity_val_steps=0,
                            callbacks=[InterruptOnce()])
    module = trainer.ImageClassifier(tiny_network(), learning_rate=1e-2)
    datamodule = quadrant_datamodule()
    with pytest.raises(trainer.TrainingInterrupted, match="SIGINT at step 4"):
        fitter.fit(module, datamodule)
    fitter.loop_config = trainer.LoopConfig(epochs=2, steps_per_loop=4, num_sanity_val_steps=0)
    logs = fitter.fit(module, datamodule)
    assert logs["steps"] == 32 and logs["stop_reason"] == "epochs"


# ---- 6. One gradient all-reduce per optimizer step ---------------------------------------------

def test_one_gradient_all_reduce_per_optimizer_step(two_replicas):
    assert two_replicas["all_reduces_plain"] == 1
    assert two_replicas["all_reduces_clip_accumulate"] == 1
    assert two_replicas["all_reduces_reduced"] == 1  # clipping + accumulation + fp16


# ---- 7. Weight decay spares biases and normalization parameters ---------------------------------

def test_weight_decay_applies_to_kernels_only():
    tf.keras.utils.set_random_seed(0)
    module = trainer.ImageClassifier(
        layers.build_cnn("functional", input_shape=(8, 8, 1), num_classes=4),
        learning_rate=1e-2, weight_decay=0.1)
    module(tf.zeros([1, 8, 8, 1]))
    for variable in module.trainable_variables:  # Biases and betas start at 0: move them.
        variable.assign(tf.random.normal(variable.shape))
    optimizer = module.configure_optimizers()
    optimizer.build(module.trainable_variables)
    before = [v.numpy() for v in module.trainable_variables]
    # Zero gradients: Adam's own update is 0, so whatever changes is the weight decay.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in module.trainable_variables])
    decayed = {v.path for v, w in zip(module.trainable_variables, before)
               if not np.array_equal(v.numpy(), w)}
    kernels = {v.path for v in module.trainable_variables if len(v.shape) > 1}
    assert decayed == kernels, sorted(decayed ^ kernels)
    assert any("gamma" in v.path for v in module.trainable_variables)


# ---- 8. The first warmup step learns --------------------------------------------------------------

def test_warmup_starts_above_zero_and_reaches_the_peak():
    module = trainer.ImageClassifier(tiny_network(), learning_rate=1e-2, lr_schedule="cosine",
                                     warmup_steps=4)
    module.total_steps = 12
    schedule = module._learning_rate()  # What configure_optimizers gives the optimizer.
    rates = [float(schedule(step)) for step in range(12)]
    assert rates[0] == pytest.approx(0.25e-2)  # 1/4 of the way up: the first step learns.
    assert rates[3] == pytest.approx(1e-2)     # The peak, at the last warmup step.
    assert rates[4] == pytest.approx(1e-2)     # The cosine starts at the peak.
    assert rates[-1] > 0 and all(a >= b for a, b in zip(rates[3:], rates[4:]))


# ---- 9. Test-time flips score every example once, on any number of replicas ---------------------

def test_flip_averaged_validation_on_two_replicas_scores_every_example_once(two_replicas):
    validated, expected = two_replicas["tta"]
    assert validated == pytest.approx(expected, abs=1e-6)
