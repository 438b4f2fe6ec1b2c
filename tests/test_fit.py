"""The Trainer on one device, in process: learning, logging, prediction, eager mode, errors."""

import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

import trainer
from trainer import checkpointing
from trainer import distribute
from conftest import quadrant_data as _quadrant_data
from conftest import quadrant_datamodule as _datamodule
from conftest import tiny_network as _tiny_network


class LoggingClassifier(trainer.ImageClassifier):
    """Logs one extra value per stage, to see it arrive in the results."""

    def training_step(self, batch):
        loss = super().training_step(batch)
        self.log("twice_accuracy", 2.0 * tf.ones_like(tf.cast(batch[1], tf.float32)))
        return loss

    def validation_step(self, batch):
        super().validation_step(batch)
        self.log("batch_count", 1.0)


def _fit(epochs=4, steps_per_loop=100, run_eagerly=False, module_cls=trainer.ImageClassifier,
         **trainer_kwargs):
    tf.keras.utils.set_random_seed(0)
    fitter = trainer.Trainer(epochs=epochs, steps_per_loop=steps_per_loop, run_eagerly=run_eagerly,
                             **trainer_kwargs)
    module = module_cls(_tiny_network(), learning_rate=1e-2)
    datamodule = _datamodule()
    return fitter, module, datamodule


def test_loss_falls_by_more_than_half():
    fitter, module, datamodule = _fit()
    before = fitter.validate(module, datamodule)
    after = fitter.fit(module, datamodule)
    assert after["val_loss"] < before["val_loss"] / 2
    assert after["val_accuracy"] > 0.9
    assert after["steps"] == 4 * 16 and int(fitter.optimizer.iterations) == 64
    assert len(fitter.history) == 4


def test_logged_values_reach_the_results():
    fitter, module, datamodule = _fit(epochs=1, module_cls=LoggingClassifier)
    logs = fitter.fit(module, datamodule)
    assert logs["train_twice_accuracy"] == pytest.approx(2.0)
    # A scalar counts once per call: 72 validation examples in batches of 16 make 5 calls.
    assert logs["val_batch_count"] == pytest.approx(1.0)
    assert set(logs) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "steps",
                         "epochs", "wall_time_s", "train_images_per_s"}


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_the_epoch_speed_counts_every_example_its_optimizer_steps_saw(micro_batches):
    fitter, module, datamodule = _fit(epochs=1, accumulate_grad_batches=micro_batches)
    logs = fitter.fit(module, datamodule)
    # 256 examples: 16 batches of 16, in 16 optimizer steps of one batch or 8 steps of two.
    assert logs["steps"] == 16 // micro_batches
    assert logs["train_images_per_s"] == pytest.approx(256 / logs["train_seconds"])


def test_evaluation_means_are_over_examples_not_batches():
    fitter, module, datamodule = _fit(epochs=1)
    fitter.fit(module, datamodule)
    logs = fitter.test(module, datamodule)
    images, labels = _quadrant_data(72, 1)
    logits = module(images.astype(np.float32) / 255.0)
    expected_loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    expected_accuracy = np.mean(np.argmax(logits, -1) == labels)
    assert logs["test_loss"] == pytest.approx(float(np.mean(expected_loss)), rel=1e-5)
    assert logs["test_accuracy"] == pytest.approx(expected_accuracy)


def test_predict_returns_probabilities_in_dataset_order():
    fitter, module, datamodule = _fit(epochs=1)
    fitter.fit(module, datamodule)
    probabilities = fitter.predict(module, datamodule)
    images, _ = _quadrant_data(72, 1)
    expected = tf.nn.softmax(module(images.astype(np.float32) / 255.0))
    assert probabilities.shape == (72, 4)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)


def test_steps_per_loop_and_eager_mode_do_not_change_the_result():
    results = []
    for steps_per_loop, run_eagerly in [(100, False), (3, False), (5, True)]:
        fitter, module, datamodule = _fit(epochs=1, steps_per_loop=steps_per_loop,
                                          run_eagerly=run_eagerly)
        fitter.fit(module, datamodule)
        results.append([v.numpy() for v in module.trainable_variables])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_step_must_return_the_loss():
    class NoLoss(trainer.ImageClassifier):
        def training_step(self, batch):
            super().training_step(batch)

    fitter, module, datamodule = _fit(epochs=1, module_cls=NoLoss)
    with pytest.raises(TypeError, match="training_step.*must return the loss"):
        fitter.fit(module, datamodule)


def test_configure_optimizers_must_return_an_optimizer():
    class NoOptimizer(trainer.ImageClassifier):
        def configure_optimizers(self):
            return None

    fitter, module, datamodule = _fit(epochs=1, module_cls=NoOptimizer)
    with pytest.raises(TypeError, match="configure_optimizers"):
        fitter.fit(module, datamodule)


def test_bad_trainer_arguments_are_named():
    with pytest.raises(ValueError, match=r"epochs \(0\) must be at least 1"):
        trainer.Trainer(epochs=0)
    with pytest.raises(ValueError, match=r"steps_per_loop \(0\)"):
        trainer.Trainer(steps_per_loop=0)


@pytest.mark.parametrize("argument", ["learning_rate", "weight_decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_classifier_arguments_are_named(argument, value):
    with pytest.raises(ValueError, match=rf"{argument} \({value}\) must be a .*finite number"):
        trainer.ImageClassifier(_tiny_network(), **{argument: value})


def test_fit_again_continues_until_the_new_epoch_count():
    fitter, module, datamodule = _fit(epochs=1)
    fitter.fit(module, datamodule)
    fitter.loop_config = dataclasses.replace(fitter.loop_config, epochs=2)
    logs = fitter.fit(module, datamodule)
    assert logs["steps"] == 2 * 16 and len(fitter.history) == 2


def test_step_functions_are_traced_once():
    # steps_per_loop=3 over 16 steps per epoch calls the loop with n = 3 and n = 1: n is a
    # tensor, so neither value nor the epoch boundary may cause a retrace.
    fitter, module, datamodule = _fit(epochs=3, steps_per_loop=3)
    fitter.fit(module, datamodule)
    fitter.test(module, datamodule)
    assert fitter.step_functions.compiled["train"].experimental_get_tracing_count() == 1
    assert fitter.step_functions.compiled["val"].experimental_get_tracing_count() == 1
    assert fitter.step_functions.compiled["test"].experimental_get_tracing_count() == 1


def test_bf16_mixed_precision_learns_with_float32_logits():
    from trainer import precision
    precision.set_precision("bf16-mixed")
    try:
        fitter, _, datamodule = _fit(epochs=4, precision="bf16-mixed")
        module = trainer.ImageClassifier(tf.keras.Sequential([
            tf.keras.layers.Flatten(), tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(4, dtype="float32")]), learning_rate=1e-2)
        before = fitter.validate(module, datamodule)
        after = fitter.fit(module, datamodule)
        assert module.network.layers[1].compute_dtype == "bfloat16"
        assert module(tf.zeros([1, 8, 8, 1])).dtype == tf.float32
        assert all(v.dtype == "float32" for v in module.trainable_variables)
        assert after["val_loss"] < before["val_loss"] / 2
    finally:
        precision.set_precision("32")


def test_module_built_under_another_precision_is_refused():
    fitter, module, datamodule = _fit(epochs=1, precision="bf16-mixed")  # Module built in float32.
    with pytest.raises(ValueError, match=r"precision \('bf16-mixed'\) needs a module built under "
                                         r"the 'mixed_bfloat16' Keras policy"):
        fitter.fit(module, datamodule)


def test_unknown_precision_is_named():
    from trainer import precision
    with pytest.raises(ValueError, match=r"precision \('fp8'\) must be one of"):
        precision.set_precision("fp8")


def test_xla_step_trains_like_the_plain_step():
    results = []
    for jit_compile in (False, True):
        tf.keras.utils.set_random_seed(0)
        fitter = trainer.Trainer(epochs=1, jit_compile=jit_compile)
        module = trainer.ImageClassifier(_tiny_network(), learning_rate=1e-2)
        results.append(fitter.fit(module, _datamodule())["train_loss"])
        assert ("xla_train_step" in fitter.step_functions.compiled) == jit_compile
    assert results[1] == pytest.approx(results[0], rel=1e-3)


def test_validation_test_and_prediction_use_the_averaged_weights():
    tf.keras.utils.set_random_seed(0)
    fitter = trainer.Trainer(epochs=2, enable_progress_bar=False, enable_model_summary=False)
    module = trainer.ImageClassifier(_tiny_network(), learning_rate=1e-2, ema_decay=0.9)
    datamodule = _datamodule()
    fitter.fit(module, datamodule)
    images, labels = _quadrant_data(72, 1)

    def loss_of_current_weights():
        logits = module(images.astype(np.float32) / 255.0)
        return float(np.mean(tf.keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)))

    live = loss_of_current_weights()
    with fitter.model_weights.in_module():
        averaged = loss_of_current_weights()
        averaged_probabilities = tf.nn.softmax(module(images.astype(np.float32) / 255.0))
    assert abs(averaged - live) > 1e-4  # The two models differ,
    assert loss_of_current_weights() == live  # and the live weights are back after the block.
    assert fitter.validate(module, datamodule)["val_loss"] == pytest.approx(averaged, rel=1e-5)
    assert fitter.test(module, datamodule)["test_loss"] == pytest.approx(averaged, rel=1e-5)
    live_test = fitter.test(module, datamodule, live_weights=True)
    assert live_test["live_test_loss"] == pytest.approx(live, rel=1e-5)
    np.testing.assert_allclose(fitter.predict(module, datamodule), averaged_probabilities,
                               rtol=1e-5, atol=1e-6)


def test_a_resumed_run_trains_on_the_learning_rate_it_is_configured_with(tmp_path):
    # The checkpoint holds the optimizer's state (moments, step count) and, in Keras, its learning
    # rate variable too; the rate is a setting, so the resumed run's configure_optimizers wins.
    def run(epochs, learning_rate):
        tf.keras.utils.set_random_seed(0)
        rates = []
        fitter = trainer.Trainer(epochs=epochs, steps_per_loop=4, enable_progress_bar=False,
                                 enable_model_summary=False, num_sanity_val_steps=0,
                                 callbacks=[_RateAtEachLoopCall(rates)],
                                 checkpointer=checkpointing.Checkpointer(str(tmp_path / "ckpt")))
        module = trainer.ImageClassifier(_tiny_network(), learning_rate=learning_rate)
        fitter.fit(module, _datamodule())
        return fitter.global_step, rates

    steps, rates = run(epochs=1, learning_rate=1e-2)
    assert steps == 16 and len(rates) == 4
    np.testing.assert_allclose(rates, 1e-2)
    steps, rates = run(epochs=2, learning_rate=3e-3)
    assert steps == 32 and len(rates) == 4  # Resumed at step 16: one more epoch, not two.
    np.testing.assert_allclose(rates, 3e-3)


class _RateAtEachLoopCall(trainer.callbacks.Callback):
    def __init__(self, rates):
        super().__init__()
        self.rates = rates

    def on_train_batch_end(self, step, logs):
        self.rates.append(float(self.trainer.optimizer.learning_rate))


@pytest.mark.parametrize("chief", [True, False])
def test_only_the_chief_says_that_a_resumed_run_keeps_its_learning_rate(tmp_path, caplog,
                                                                       monkeypatch, chief):
    def run(learning_rate):
        fitter = trainer.Trainer(epochs=1, enable_progress_bar=False, enable_model_summary=False,
                                 num_sanity_val_steps=0, max_steps=2,
                                 checkpointer=checkpointing.Checkpointer(str(tmp_path / "ckpt")))
        fitter.fit(trainer.ImageClassifier(_tiny_network(), learning_rate=learning_rate),
                   _datamodule())

    run(1e-2)
    monkeypatch.setattr(distribute, "is_chief", lambda strategy: chief)
    caplog.set_level(logging.INFO, logger="absl")
    run(3e-3)  # Restores the step-2 checkpoint, trained on 1e-2; trains on 3e-3.
    said = [r.getMessage() for r in caplog.records if "as configured" in r.getMessage()]
    assert said == (["learning rate 0.003, as configured (the checkpoint's run trained on 0.01)"]
                    if chief else [])
