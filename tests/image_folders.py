"""Small image folders written on the fly, for the tests of the image folder source."""

import os

import numpy as np
import tensorflow as tf

CLASSES = ("cat", "dog", "fox")


def class_image(label: int, size=(8, 8), channels=3, seed=0) -> np.ndarray:
    """A uint8 image whose bright quadrant (or its whole left half, for class 2) is its class:
    easy to learn at any size and in gray or colour."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = rng.integers(0, 60, (height, width, channels)).astype(np.uint8)
    rows = slice(0, height // 2) if label != 1 else slice(height // 2, height)
    cols = slice(0, width // 2) if label != 2 else slice(0, width)
    image[rows, cols] += 150
    return image


def write_image(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if path.endswith(".jpg") else tf.io.encode_png
    tf.io.write_file(path, encode(image))


def make_folder(root: str, per_class: int = 12, sizes=((8, 8), (12, 10)), gray_every: int = 0,
                seed: int = 0) -> list[str]:
    """Writes root/<class>/<n>.png|jpg: PNG and JPEG alternating, sizes cycling through `sizes`,
    every `gray_every`-th image grayscale (0: none). Returns the paths written."""
    paths = []
    for label, name in enumerate(CLASSES):
        for index in range(per_class):
            number = label * per_class + index
            channels = 1 if gray_every and number % gray_every == 0 else 3
            image = class_image(label, sizes[number % len(sizes)], channels, seed + number)
            path = os.path.join(root, name, f"{index:03d}.{'jpg' if index % 2 else 'png'}")
            write_image(path, image)
            paths.append(path)
    return paths
