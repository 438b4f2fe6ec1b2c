"""The two reference CNNs: exact parameter counts and shapes."""

import re

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

import layers
from trainer.callbacks import console


def _built(name, input_shape=(32, 32, 3), num_classes=10, **kwargs):
    model = layers.build_cnn(name, input_shape=input_shape, num_classes=num_classes, **kwargs)
    logits = model(tf.zeros([2, *input_shape]), training=False)
    return model, logits


class CNNTest(parameterized.TestCase):

    def test_sequential_matches_the_tutorial(self):
        model, logits = _built("sequential")
        self.assertEqual(model.count_params(), 225_034)
        self.assertEqual(logits.shape, (2, 10))

    def test_functional_matches_the_tutorial(self):
        model, logits = _built("functional")
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        self.assertEqual(model.count_params(), 1_512_074)
        self.assertEqual(trainable, 1_511_626)
        self.assertEqual(logits.shape, (2, 10))

    @parameterized.parameters("sequential", "functional")
    def test_input_shape_and_classes_come_from_arguments(self, name):
        model, logits = _built(name, input_shape=(28, 28, 1), num_classes=7)
        self.assertEqual(logits.shape, (2, 7))
        self.assertEqual(model.image_shape, (28, 28, 1))

    def test_sync_batchnorm_builds_synchronized_layers(self):
        model, _ = _built("functional", sync_batchnorm=True)
        norms = [l for l in model._flatten_layers() if isinstance(l, tf.keras.layers.BatchNormalization)]
        self.assertLen(norms, 3)
        self.assertTrue(all(n.synchronized for n in norms))

    def test_wrong_image_shape_names_both_shapes(self):
        model = layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=10)
        with pytest.raises(ValueError, match=r"\(32, 32, 3\).*\(1, 28, 28, 1\)"):
            model(tf.zeros([1, 28, 28, 1]))

    def test_unknown_model_name_lists_the_choices(self):
        with pytest.raises(ValueError, match=r"model \('resnet'\) must be one of \['functional', 'sequential'\]"):
            layers.build_cnn("resnet", input_shape=(32, 32, 3), num_classes=10)

    def test_summary_lists_layers_in_call_order_with_their_output_shapes(self):
        model, _ = _built("functional")
        lines = console.summary(model, (32, 32, 3)).splitlines()
        rows = [line.split(")", 1) for line in lines[2:] if line.startswith("  ")]
        # Keras numbers its automatic names per process (other tests build layers too): drop it.
        names = [re.sub(r"_\d+$", "", name.split()[0]) for name, _ in rows]
        self.assertEqual(names[:6], ["conv_bn_re_lu", "conv2d", "batch_normalization", "re_lu",
                                     "max_pooling2d", "conv_bn_re_lu"])  # Keras: creation order
        self.assertTrue(all("?" not in line for line in lines))
        self.assertIn("(None, 15, 15, 32)", rows[4][1])  # after the 2x2 pooling
        self.assertIn("Total params: 1,512,074", lines)
        self.assertIn("Non-trainable params: 448", lines)
        self.assertEqual(model.call.__func__, type(model).call)  # The wrapped calls are gone.
