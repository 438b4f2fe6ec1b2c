"""Image files on any file system TensorFlow knows: finding them, checking them, decoding them.

The image folder DataModule (data/image_folder.py) and the predictions on files
(trainer/vision/file_predictions.py) share these, so that an image is decoded, converted and
resized the same way in training and in prediction. Files are read through `tf.io.gfile` and
`tf.io.read_file`, so a folder may be local or on any file system TensorFlow has a plugin for
(`gs://...`).

    find_images(pattern)    the image files a folder (recursively) or a glob names
    check_images(paths)     decodes every file once: shapes, or an error naming a bad file
    decode(path, ...)       a file -> uint8 [height, width, channels] of a fixed size
"""

import os

import numpy as np
import tensorflow as tf

# What `tf.io.decode_image` reads; any other file is not an image (a GIF gives its first frame).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class UnreadableImageError(ValueError):
    """An image file cannot be read or decoded (corrupt, cut short, not what its name says)."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def images_under(directory: str) -> tuple[list[str], int]:
    """The image files under `directory` and its subfolders, sorted, and the number of other
    files there (skipped)."""
    images, skipped = [], 0
    for parent, _, names in tf.io.gfile.walk(directory):
        for name in names:
            if is_image_name(name):
                images.append(os.path.join(parent, name))
            else:
                skipped += 1
    return sorted(images), skipped


def find_images(pattern: str) -> tuple[list[str], int]:
    """The image files `pattern` names, sorted: a folder's (recursively) or a glob's matches; and
    the number of other files it names (skipped).

    Raises:
        ValueError: if `pattern` names no image file.
    """
    if tf.io.gfile.isdir(pattern):
        images, skipped = images_under(pattern)
    else:
        matches = [path for path in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(path)]
        images = sorted(path for path in matches if is_image_name(path))
        skipped = len(matches) - len(images)
    if not images:
        raise ValueError(f"{pattern!r} names no image files ({', '.join(IMAGE_EXTENSIONS)})"
                         + (f": {skipped} other files" if skipped else ""))
    return images, skipped


def check_images(paths: list[str]) -> np.ndarray:
    """Decodes every file once, in parallel, and returns their [height, width, channels].

    A run should not start training on a dataset that fails to decode in the middle of epoch 3:
    this pass finds every bad file first, at the cost of one decoding of each image.

    Raises:
        UnreadableImageError: naming the first file that cannot be read or decoded, and how many
            more cannot.
    """
    shapes = np.full((len(paths), 3), -1, np.int64)
    if not paths:
        return shapes
    files = tf.constant(paths)

    def shape_of(index):
        image = tf.io.decode_image(tf.io.read_file(files[index]), expand_animations=False)
        return index, tf.shape(image, out_type=tf.int64)

    # A file that fails to read or decode is dropped here and found below by its missing shape.
    shapes_read = (tf.data.Dataset.range(len(paths)).map(shape_of, tf.data.AUTOTUNE)
                   .ignore_errors().batch(1024))
    for indices, batch_shapes in shapes_read:
        shapes[indices.numpy()] = batch_shapes.numpy()
    bad = np.flatnonzero(shapes[:, 0] < 0)
    if bad.size:
        first = paths[bad[0]]
        more = f" (and {bad.size - 1} more files)" if bad.size > 1 else ""
        raise UnreadableImageError(
            f"image file {first} cannot be read as an image ({_reason(first)}){more}: "
            "replace or delete it")
    return shapes


def _reason(path: str) -> str:
    """What TensorFlow says about `path`, as one short line."""
    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError as error:
        return error.message.split("[Op:")[0].split("}}")[-1].strip() or type(error).__name__
    return "it decoded on a second try"


def decode(path: tf.Tensor, *, channels: int, size: tuple[int, int],
           resize_if_needed: bool = True) -> tf.Tensor:
    """The image in file `path` as uint8 [height, width, channels] of `size` (height, width).

    Grayscale images become RGB (the gray value in each channel) when `channels` is 3, and an
    alpha channel is dropped. An image of another size is resized to `size`, stretched, with
    antialiasing (a shrunk image keeps no aliasing artefacts); one of that size is not touched.
    `resize_if_needed=False` skips that check, for files known to have the size already.
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    if resize_if_needed:
        differs = tf.reduce_any(tf.shape(image)[:2] != tf.constant(size))
        image = tf.cond(differs, lambda: resize(image, size), lambda: image)
    return tf.ensure_shape(image, [*size, channels])


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 `image` resized to `size` (bilinear, antialiased), rounded back to uint8."""
    resized = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def parse_image_size(text: str) -> tuple[int, int]:
    """"32x48" -> (32, 48) (height x width); "32" -> (32, 32).

    Raises:
        ValueError: naming the value and the rule.
    """
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) in (1, 2) and all(part.isdigit() and int(part) > 0 for part in parts):
        height, width = int(parts[0]), int(parts[-1])
        return height, width
    raise ValueError(f"image_size ({text!r}) must be HEIGHTxWIDTH in pixels, e.g. 32x32, or one "
                     "number for square images")
