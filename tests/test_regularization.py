"""The tutorial's loose ends: dropout, weight decay, label smoothing, width, datasets, GPUs."""

import numpy as np
import pytest
import tensorflow as tf

import layers
import trainer
from conftest import main_runs_mocked
from trainer import distribute


def test_dropout_is_active_only_in_training():
    network = layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=10, dropout=0.5)
    images = tf.random.uniform([4, 32, 32, 3])
    inference = network(images, training=False)
    np.testing.assert_array_equal(inference, network(images, training=False))
    assert not np.allclose(network(images, training=True), inference)
    assert not np.allclose(network(images, training=True), network(images, training=True))


@pytest.mark.parametrize("name", ["sequential", "functional"])
def test_dropout_adds_no_parameters_and_width_scales_channels(name):
    def count(**kwargs):
        network = layers.build_cnn(name, input_shape=(32, 32, 3), num_classes=10, **kwargs)
        network(tf.zeros([1, 32, 32, 3]))
        return network.count_params(), network

    base, _ = count()
    assert count(dropout=0.3)[0] == base
    wider, network = count(width_multiplier=2.0)
    assert wider > 2 * base
    conv_widths = [l.filters for l in network._flatten_layers() if isinstance(l, tf.keras.layers.Conv2D)]
    assert conv_widths == [64, 128, 256]


def test_weight_decay_shrinks_weights_as_adamw_specifies():
    images = tf.random.uniform([8, 32, 32, 3])
    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])

    def one_step(weight_decay):
        tf.keras.utils.set_random_seed(0)
        module = trainer.ImageClassifier(
            layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=10),
            learning_rate=1e-3, weight_decay=weight_decay)
        module(images[:1])
        before = [v.numpy() for v in module.trainable_variables]
        optimizer = module.configure_optimizers()
        with tf.GradientTape() as tape:
            logits = module(images, training=True)
            loss = tf.reduce_mean(module._per_example_loss(labels, logits))
        grads = tape.gradient(loss, module.trainable_variables)
        optimizer.apply_gradients(zip(grads, module.trainable_variables))
        return optimizer, before, [v.numpy() for v in module.trainable_variables]

    adam, start, plain = one_step(0.0)
    adamw, start_again, decayed = one_step(0.1)
    assert isinstance(adamw, tf.keras.optimizers.AdamW) and not isinstance(adam, tf.keras.optimizers.AdamW)
    for w0, w0_again, w_plain, w_decayed in zip(start, start_again, plain, decayed):
        np.testing.assert_array_equal(w0, w0_again)
        # Decoupled: the same Adam step, plus w -= learning_rate * weight_decay * w.
        np.testing.assert_allclose(w_plain - w_decayed, 1e-3 * 0.1 * w0, atol=1e-7)


def test_label_smoothing_trains_on_smoothed_targets():
    module = trainer.ImageClassifier(tf.keras.Sequential(), label_smoothing=0.2)
    logits = tf.constant([[2.0, 0.0, -1.0]])
    smoothed = module._per_example_loss(tf.constant([0]), logits, 0.2)
    targets = np.array([[0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3]])
    expected = -np.sum(targets * tf.nn.log_softmax(logits).numpy(), axis=-1)
    np.testing.assert_allclose(smoothed.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"label_smoothing \(1.5\)"):
        trainer.ImageClassifier(tf.keras.Sequential(), label_smoothing=1.5)


def test_missing_gpu_index_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gpus \(3\) names GPU\(s\) \[3\], but this machine has 0"):
        distribute.configure_gpus([3])
    distribute.configure_gpus(None, memory_growth=True)  # No GPUs here: a no-op.


def test_every_dataset_runs_a_step_through_main(tmp_path):
    cases = [("mnist", "sequential"), ("fashion_mnist", "functional"), ("cifar100", "sequential"),
             ("cifar10", "functional")]
    outcomes = main_runs_mocked([  # One process for the four runs.
        [f"--dataset={dataset}", f"--model={model}", "--epochs=1", "--batch_size=32",
         "--augment", "--dropout=0.2", "--weight_decay=0.01", "--label_smoothing=0.1",
         f"--model_dir={tmp_path / dataset}", "--strategy=default"]
        for dataset, model in cases], num_examples=32)
    for (dataset, model), outcome in zip(cases, outcomes):
        assert outcome["results"]["steps"] == 1, (dataset, outcome)
        assert outcome["results"]["model"] == model and outcome["results"]["dataset"] == dataset
