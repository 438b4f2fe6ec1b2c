"""Flags that choose the data and how it is batched."""

from absl import flags

from data import image_classification
from data import image_files

DATASET = flags.DEFINE_string(
    "dataset", "cifar10",
    "A TFDS image classification dataset name (cifar10, cifar100, mnist, fashion_mnist, ...) or a "
    "folder of your own images: a value that names an existing folder (local or gs://...) is an "
    "image folder, <folder>/<class>/*.png|jpg|jpeg|bmp|gif, or with split folders "
    "<folder>/<split>/<class>/... (see docs/data.md).")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Directory where TFDS keeps prepared datasets (default: TFDS' ~/tensorflow_datasets). To train "
    "offline, point it at a directory holding the prepared dataset "
    "(<data_dir>/<dataset>/<version>/...), e.g. one copied from a machine that downloaded it.")
DOWNLOAD = flags.DEFINE_boolean(
    "download", True, "Download and prepare the dataset if it is not prepared in --data_dir.")
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 64,
    "Global batch size in examples: summed over all replicas, so each replica gets "
    "batch_size / replicas. Must be divisible by the number of replicas.", lower_bound=1)
EVAL_BATCH_SIZE = flags.DEFINE_integer(
    "eval_batch_size", None,
    "Global batch size of validation, test and prediction, summed over all replicas (default: 4 x "
    "--batch_size). Evaluation keeps no activations for gradients, so a larger batch costs little "
    "memory and takes fewer steps. Every example is evaluated exactly once, the partial last "
    "batch kept. Must be divisible by the number of replicas.", lower_bound=1)
TRAIN_SPLIT = flags.DEFINE_string(
    "train_split", "train[:90%]",
    "Split to train on: a TFDS split string such as 'train' or 'train[:90%]' (for an image folder, "
    "its split folders, or 'train' for all of it). The default leaves the last 10% of 'train' for "
    "validation: no decision of the run is taken on test data.")
VAL_SPLIT = flags.DEFINE_string(
    "val_split", "train[90%:]",
    "Split to validate on, which ranks the checkpoints (--monitor) and drives early stopping; "
    "'' for no validation. Default: the 10% of 'train' that --train_split leaves out. The "
    "tutorial validates on 'test' (--train_split=train --val_split=test --save_top_k=0 "
    "reproduces it), which makes those decisions on the test set.")
TEST_SPLIT = flags.DEFINE_string(
    "test_split", "test",
    "Split to test the run's model on, once, after training; '' to skip testing.")
PREDICT_SPLIT = flags.DEFINE_string(
    "predict_split", "",
    "TFDS split to predict after training, e.g. 'test' or 'train[:1000]': writes "
    "<model_dir>/predictions.csv, one row per example in split order (index, true label, predicted "
    "class and its probability), made by the exported model. '' (default): no predictions.")
DATA_ORDER = flags.DEFINE_enum(
    "data_order", "shard", list(image_classification.DATA_ORDERS),
    "Which examples each worker reads: 'shard' (its own 1/workers of each split; scales to any "
    "size, but the global batches depend on the number of workers) or 'global' (every worker "
    "reads, decodes and caches the whole split and keeps its replicas' slices of each global "
    "batch, so 1 device, N replicas and M workers train on identical global batches; for splits "
    "that fit in each worker's memory). The same on one worker.")
AUGMENT = flags.DEFINE_boolean(
    "augment", False,
    "Augment training batches: random horizontal flip and random crop after --crop_padding "
    "pixels of zero padding, seeded per epoch and batch (a resumed run sees the same batches). "
    "Off in evaluation.")
CROP_PADDING = flags.DEFINE_integer(
    "crop_padding", 4,
    "With --augment: pixels of zero padding on each side before the random crop, so an image "
    "shifts by up to this many pixels (>= 0); 0 augments with flips only.", lower_bound=0)
CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None,
    "Directory for a decoded-example cache that later runs reuse: the first run decodes each "
    "split once (PNG records for CIFAR-10) and saves the uint8 examples there; later runs load "
    "them, so epoch 1 trains at full speed. Keyed by dataset, version, split, input pipeline and "
    "the prepared files; a change builds a new entry. Default: no cache (decode every run).")
IMAGE_SIZE = flags.DEFINE_string(
    "image_size", None,
    "Image folders only: HEIGHTxWIDTH in pixels (or one number for square images) that every "
    "image is resized to. Default: the size all the folder's images share; an error asks for "
    "this flag when they differ.")
PREDICT_FILES = flags.DEFINE_string(
    "predict_files", None,
    "A glob ('new/*.jpg') or a folder (searched recursively) of image files to classify after "
    "training with the exported model: writes <model_dir>/predictions.csv (path, predicted class "
    "and its name, probability). Images are converted and resized to what the model was trained "
    "on. Not with --predict_split, which writes the same file.")
flags.register_validator(IMAGE_SIZE, lambda text: text is None or bool(_image_size(text)),
                         message="must be HEIGHTxWIDTH in pixels, e.g. 32x32, or one number")


def _image_size(text):
    try:
        return image_files.parse_image_size(text)
    except ValueError:
        return None
