"""The tutorial's two CIFAR-10 CNNs, written as `tf.keras.Model` subclasses.

The names "sequential" and "functional" name the tutorial's two architectures, not the Keras APIs
it built them with. Both return logits (no softmax): the loss applies it.

| name         | parameters on 32x32x3, 10 classes                |
|--------------|--------------------------------------------------|
| `sequential` | 225,034                                          |
| `functional` | 1,512,074 (1,511,626 trainable, 448 BatchNorm statistics) |
"""

import tensorflow as tf

from layers import blocks


class _ImageCNN(tf.keras.Model):
    """Shared constructor arguments and the input-shape check of both CNNs."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, **kwargs):
        super().__init__(**kwargs)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape ({input_shape}) must be (height, width, channels)")
        if num_classes < 2:
            raise ValueError(f"num_classes ({num_classes}) must be at least 2")
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes

    def _check_images(self, images):
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"{self.name} was built for images of shape {self.image_shape}, "
                             f"got a batch of shape {tuple(images.shape)}")


class SequentialCNN(_ImageCNN):
    """Conv(32,3)-Pool-Conv(64,3)-Pool-Conv(128,3)-Dense(64)-Dense(classes), ReLU, no BatchNorm."""

    def __init__(self, *, input_shape, num_classes, sync_batchnorm: bool = False, **kwargs):
        del sync_batchnorm  # This architecture has no BatchNorm; accepted so both CNNs share one signature.
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.conv1 = tf.keras.layers.Conv2D(32, 3, activation="relu")
        self.pool1 = tf.keras.layers.MaxPooling2D(2)
        self.conv2 = tf.keras.layers.Conv2D(64, 3, activation="relu")
        self.pool2 = tf.keras.layers.MaxPooling2D(2)
        self.conv3 = tf.keras.layers.Conv2D(128, 3, activation="relu")
        self.flatten = tf.keras.layers.Flatten()
        self.hidden = tf.keras.layers.Dense(64, activation="relu")
        self.classifier = _logits_layer(num_classes)

    def call(self, images, training=False):
        self._check_images(images)
        x = self.pool1(self.conv1(images))
        x = self.pool2(self.conv2(x))
        x = self.flatten(self.conv3(x))
        return self.classifier(self.hidden(x))


class FunctionalCNN(_ImageCNN):
    """ConvBNReLU(32,3)-Pool-ConvBNReLU(64,5,same)-ConvBNReLU(128,3)-Dense(64)-Dense(classes)."""

    def __init__(self, *, input_shape, num_classes, sync_batchnorm: bool = False, **kwargs):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.block1 = blocks.ConvBNReLU(32, 3, sync_batchnorm=sync_batchnorm)
        self.pool1 = tf.keras.layers.MaxPooling2D(2)
        self.block2 = blocks.ConvBNReLU(64, 5, padding="same", sync_batchnorm=sync_batchnorm)
        self.block3 = blocks.ConvBNReLU(128, 3, sync_batchnorm=sync_batchnorm)
        self.flatten = tf.keras.layers.Flatten()
        self.hidden = tf.keras.layers.Dense(64, activation="relu")
        self.classifier = _logits_layer(num_classes)

    def call(self, images, training=False):
        self._check_images(images)
        x = self.pool1(self.block1(images, training=training))
        x = self.block2(x, training=training)
        x = self.flatten(self.block3(x, training=training))
        return self.classifier(self.hidden(x))


def _logits_layer(num_classes):
    """The last Dense layer computes in float32 under any mixed-precision policy: softmax and the
    loss need float32's precision."""
    return tf.keras.layers.Dense(num_classes, dtype="float32")


CNNS = {"sequential": SequentialCNN, "functional": FunctionalCNN}


def build_cnn(name: str, *, input_shape: tuple[int, int, int], num_classes: int,
              sync_batchnorm: bool = False) -> tf.keras.Model:
    """Returns the (unbuilt) CNN called `name`; its variables are created on its first call.

    Raises:
        ValueError: if `name` is not one of `CNNS`.
    """
    if name not in CNNS:
        raise ValueError(f"model ({name!r}) must be one of {sorted(CNNS)}")
    return CNNS[name](input_shape=input_shape, num_classes=num_classes,
                      sync_batchnorm=sync_batchnorm, name=f"{name}_cnn")
