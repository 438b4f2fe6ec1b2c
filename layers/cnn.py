"""The tutorial's two CIFAR-10 CNNs, written as `tf.keras.Model` subclasses.

The names "sequential" and "functional" name the tutorial's two architectures, not the Keras APIs
it built them with. Both return logits (no softmax): the loss applies it.

| name         | parameters on 32x32x3, 10 classes                          |
|--------------|------------------------------------------------------------|
| `sequential` | 225,034                                                    |
| `functional` | 1,512,074 (1,511,626 trainable, 448 BatchNorm statistics)  |

Two knobs for the tutorial's exercises leave those counts unchanged at their defaults:
`width_multiplier` scales every layer's channels, `dropout` adds Dropout before the dense layers.
"""

import tensorflow as tf

from layers import blocks


class _ImageCNN(tf.keras.Model):
    """Shared constructor arguments, the classifier head and the input-shape check."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 dropout: float = 0.0, width_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape ({input_shape}) must be (height, width, channels)")
        if num_classes < 2:
            raise ValueError(f"num_classes ({num_classes}) must be at least 2")
        if not 0 < width_multiplier < float("inf"):  # Written so that nan fails too.
            raise ValueError(f"width_multiplier ({width_multiplier}) must be a positive finite "
                             "number")
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.width_multiplier = width_multiplier
        self.head = blocks.ClassifierHead(self._width(64), num_classes, dropout=dropout)

    def _width(self, channels: int) -> int:
        return max(1, round(channels * self.width_multiplier))

    def _check_images(self, images):
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"{self.name} was built for images of shape {self.image_shape}, "
                             f"got a batch of shape {tuple(images.shape)}")


class SequentialCNN(_ImageCNN):
    """Conv(32,3)-Pool-Conv(64,3)-Pool-Conv(128,3)-Dense(64)-Dense(classes), ReLU, no BatchNorm."""

    def __init__(self, *, input_shape, num_classes, sync_batchnorm: bool = False, **kwargs):
        del sync_batchnorm  # This architecture has no BatchNorm; accepted so both CNNs share one signature.
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.conv1 = tf.keras.layers.Conv2D(self._width(32), 3, activation="relu")
        self.pool1 = tf.keras.layers.MaxPooling2D(2)
        self.conv2 = tf.keras.layers.Conv2D(self._width(64), 3, activation="relu")
        self.pool2 = tf.keras.layers.MaxPooling2D(2)
        self.conv3 = tf.keras.layers.Conv2D(self._width(128), 3, activation="relu")

    def call(self, images, training=False):
        self._check_images(images)
        x = self.pool1(self.conv1(images))
        x = self.pool2(self.conv2(x))
        return self.head(self.conv3(x), training=training)


class FunctionalCNN(_ImageCNN):
    """ConvBNReLU(32,3)-Pool-ConvBNReLU(64,5,same)-ConvBNReLU(128,3)-Dense(64)-Dense(classes)."""

    def __init__(self, *, input_shape, num_classes, sync_batchnorm: bool = False, **kwargs):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.block1 = blocks.ConvBNReLU(self._width(32), 3, sync_batchnorm=sync_batchnorm)
        self.pool1 = tf.keras.layers.MaxPooling2D(2)
        self.block2 = blocks.ConvBNReLU(self._width(64), 5, padding="same",
                                        sync_batchnorm=sync_batchnorm)
        self.block3 = blocks.ConvBNReLU(self._width(128), 3, sync_batchnorm=sync_batchnorm)

    def call(self, images, training=False):
        self._check_images(images)
        x = self.pool1(self.block1(images, training=training))
        x = self.block2(x, training=training)
        return self.head(self.block3(x, training=training), training=training)


CNNS = {"sequential": SequentialCNN, "functional": FunctionalCNN}


def build_cnn(name: str, *, input_shape: tuple[int, int, int], num_classes: int,
              sync_batchnorm: bool = False, dropout: float = 0.0,
              width_multiplier: float = 1.0) -> tf.keras.Model:
    """Returns the (unbuilt) CNN called `name`; its variables are created on its first call.

    Raises:
        ValueError: if `name` is not one of `CNNS`, or an argument is out of range.
    """
    if name not in CNNS:
        raise ValueError(f"model ({name!r}) must be one of {sorted(CNNS)}")
    return CNNS[name](input_shape=input_shape, num_classes=num_classes,
                      sync_batchnorm=sync_batchnorm, dropout=dropout,
                      width_multiplier=width_multiplier, name=f"{name}_cnn")
