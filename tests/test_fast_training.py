"""The parts of the fast recipe (recipes/functional_fast.flags): SGD with Nesterov momentum, the
linear (one-cycle) learning-rate schedule and test-time flip augmentation; and the recipe itself,
run through the command line on mocked data. The 2-replica check of the flip augmentation runs in
tests/paths_run.py's shared subprocess (tests/test_correct_paths.py)."""

import argparse
import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import data
import trainer
from conftest import (ROOT, input_context, quadrant_data, quadrant_datamodule, random_images,
                      run_main_mocked, tiny_network)

RECIPE = os.path.join(ROOT, "recipes", "functional_fast.flags")


def _quiet_trainer(**kwargs):
    return trainer.Trainer(enable_progress_bar=False, enable_model_summary=False,
                           num_sanity_val_steps=0, **kwargs)


# ---- SGD with Nesterov momentum ------------------------------------------------------------------

def test_sgd_is_nesterov_momentum_and_decays_kernels_only():
    module = trainer.ImageClassifier(tiny_network(), learning_rate=0.1, optimizer="sgd",
                                     weight_decay=5e-4)
    module(tf.zeros([1, 8, 8, 1]))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, tf.keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9)
    optimizer.build(module.trainable_variables)
    for variable in module.trainable_variables:  # The biases start at 0: move them.
        variable.assign(tf.random.normal(variable.shape))
    before = [v.numpy() for v in module.trainable_variables]
    # Zero gradients and no momentum yet: whatever changes is the weight decay, lr x wd x w.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in module.trainable_variables])
    for variable, start in zip(module.trainable_variables, before):
        expected = start * (1 - 0.1 * 5e-4) if len(variable.shape) > 1 else start
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


def test_sgd_learns_the_quadrants():
    tf.keras.utils.set_random_seed(0)
    module = trainer.ImageClassifier(tiny_network(), learning_rate=0.05, optimizer="sgd")
    logs = _quiet_trainer(epochs=3).fit(module, quadrant_datamodule())
    assert logs["val_accuracy"] > 0.9


def test_an_unknown_optimizer_is_refused_by_name():
    with pytest.raises(ValueError, match=r"optimizer \('rmsprop'\) must be one of \['adam', 'sgd'\]"):
        trainer.ImageClassifier(tiny_network(), optimizer="rmsprop")


# ---- The linear schedule: with a warmup, a one-cycle triangle ------------------------------------

def test_linear_schedule_rises_to_the_peak_then_falls_in_a_straight_line_to_zero():
    module = trainer.ImageClassifier(tiny_network(), learning_rate=0.1, lr_schedule="linear",
                                     warmup_steps=4)
    module.total_steps = 14
    schedule = module._learning_rate()  # What configure_optimizers gives the optimizer.
    rates = [float(schedule(step)) for step in range(14)]
    np.testing.assert_allclose(rates[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-6)
    # The 10 steps after the warmup: 0.1 x 10/11, ..., 0.1 x 1/11; the last step still learns.
    np.testing.assert_allclose(rates[4:], [0.1 * (11 - i) / 11 for i in range(10)], rtol=1e-5)


# ---- Test-time flip augmentation -----------------------------------------------------------------

def _mirror_sensitive_network():
    """Logits that differ between an image and its mirror: a dense layer on the raw pixels."""
    tf.keras.utils.set_random_seed(1)
    return tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])


def test_tta_flip_averages_the_logits_of_the_image_and_its_mirror_at_inference_only():
    network = _mirror_sensitive_network()
    module = trainer.ImageClassifier(network, tta_flip=True)
    images = tf.random.uniform([3, 8, 8, 1])
    expected = (network(images) + network(images[:, :, ::-1, :])) / 2
    np.testing.assert_allclose(module(images, training=False), expected, rtol=1e-6)
    assert not np.allclose(network(images), expected)  # The mirror changed something.
    np.testing.assert_array_equal(module(images, training=True), network(images, training=True))


def test_tta_flip_scores_every_validation_example_once():
    """69 examples in batches of 16: the partial last batch counts each of its 5 examples once."""
    images, labels = quadrant_data(69, seed=2)
    datamodule = data.ArrayImageData(train=quadrant_data(64, 0), val=(images, labels),
                                     num_classes=4, batch_size=16, eval_batch_size=16)
    module = trainer.ImageClassifier(_mirror_sensitive_network(), tta_flip=True)
    logs = _quiet_trainer(epochs=1).validate(module, datamodule)
    pixels = data.scale_pixels(images)
    logits = (module.network(pixels) + module.network(pixels[:, :, ::-1, :])) / 2
    expected = np.mean(np.argmax(logits, axis=-1) == labels)
    assert logs["val_accuracy"] == pytest.approx(expected, abs=1e-6)


# ---- Flips without crops -------------------------------------------------------------------------

@pytest.mark.parametrize("crop_padding", [0, 2])
def test_crop_padding_zero_augments_with_flips_only(crop_padding):
    images, _ = random_images(64, shape=(8, 8, 3))
    datamodule = data.ArrayImageData(train=(images, np.arange(64)), batch_size=64, augment=True,
                                     crop_padding=crop_padding, seed=0)
    augmented, ids = next(iter(datamodule.train_dataset(input_context())))
    originals = data.scale_pixels(images[ids.numpy()]).numpy()
    same = np.all(augmented.numpy() == originals, axis=(1, 2, 3))
    mirrored = np.all(augmented.numpy() == originals[:, :, ::-1, :], axis=(1, 2, 3))
    if crop_padding == 0:
        assert np.all(same | mirrored) and same.any() and mirrored.any()
    else:  # Shifted by up to 2 pixels: most images are neither.
        assert np.mean(same | mirrored) < 0.5


# ---- The recipe, through the command line --------------------------------------------------------

@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """One epoch of the recipe on 256 mocked examples (its epochs and batch overridden)."""
    model_dir = str(tmp_path_factory.mktemp("recipe") / "run")
    result = run_main_mocked([f"--flagfile={RECIPE}", "--epochs=1", "--batch_size=32",
                              "--warmup_steps=2", "--progress_bar=false",
                              f"--model_dir={model_dir}"], num_examples=256)
    return result, model_dir


def test_the_recipe_is_plain_flags_that_a_later_flag_overrides(recipe_run):
    result, model_dir = recipe_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1 | step 8 |" in result.stderr  # 256 examples / 32: --batch_size won.
    recorded = _flags(os.path.join(model_dir, "flags.txt"))
    overridden = {"epochs": "1", "batch_size": "32", "warmup_steps": "2"}
    for name, value in {**_flags(RECIPE), **overridden}.items():
        assert _same(recorded[name], value), (name, recorded[name], value)
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["precision"] == "bf16-mixed" and "test_accuracy" in results


def test_the_time_to_accuracy_benchmark_ends_with_its_summary_line(capsys):
    path = os.path.join(ROOT, "benchmarks", "time_to_accuracy.py")
    spec = importlib.util.spec_from_file_location("time_to_accuracy", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    pairs = [{"tutorial": {"wall_s": 400.0, "test_accuracy": 0.69},
              "recipe": {"wall_s": 190.0, "test_accuracy": 0.81}},
             {"tutorial": {"wall_s": 420.0, "test_accuracy": 0.70},
              "recipe": {"wall_s": 230.0, "test_accuracy": 0.79}}]
    benchmark._report(argparse.Namespace(seeds=[0, 1]), pairs)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == ("1 of 2 runs reached test accuracy 0.8 in at most half the tutorial's "
                         "wall time")
    # Medians of the walls and accuracies; the ratio is the median of the paired ratios.
    assert lines[-1] == ("time_to_accuracy functional tutorial_s=410.0 recipe_s=210.0 "
                         "recipe_accuracy=0.8000 ratio=0.511")


def _flags(path):
    """{name: value} of a flagfile's `--name=value` lines (`--name` alone: "true")."""
    with open(path) as f:
        lines = [line.strip()[2:] for line in f if line.startswith("--")]
    return dict(line.split("=", 1) if "=" in line else (line, "true") for line in lines)


def _same(recorded, given):
    """Whether two spellings of a flag's value are one value (0.0005 and 5e-4 are)."""
    try:
        return float(recorded) == float(given)
    except ValueError:
        return recorded == given
