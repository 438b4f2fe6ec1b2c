"""Flags that choose the network, its regularization and its optimizer."""

import math

from absl import flags

from flags import checks
from layers import cnn
from trainer.vision import classifier

MODEL = flags.DEFINE_enum(
    "model", "functional", sorted(cnn.CNNS),
    "Network architecture: 'sequential' (3 convs, no BatchNorm, 225k parameters on CIFAR-10) or "
    "'functional' (3 Conv-BatchNorm-ReLU blocks, 1.5M parameters).")
LEARNING_RATE = flags.DEFINE_string(
    "learning_rate", "3e-4",
    "The optimizer's learning rate (per optimizer step; the peak with --lr_schedule): a number "
    "> 0, or 'auto' to train on the rate that --lr_find suggests (needs --lr_find).")
OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "adam", list(classifier.OPTIMIZERS),
    "'adam' (the tutorial's; AdamW with --weight_decay) or 'sgd' (SGD with Nesterov momentum "
    "0.9; usually wants a learning rate about 100x Adam's, e.g. 0.1 with --batch_size=128).")
SYNC_BATCHNORM = flags.DEFINE_boolean(
    "sync_batchnorm", False,
    "BatchNorm computes batch statistics over the global batch across replicas, so N replicas "
    "train exactly like one device (costs an all-reduce per BatchNorm layer per step). When off, "
    "each replica normalizes over its own slice and the replicas' moving statistics are averaged "
    "before every evaluation.")
DROPOUT = flags.DEFINE_float(
    "dropout", 0.0,
    "Fraction of features dropped before each of the classifier's two dense layers during "
    "training, in [0, 1); each replica draws its own mask. 0 (the tutorial's) adds no Dropout "
    "layer.", lower_bound=0.0, upper_bound=0.99)
WIDTH_MULTIPLIER = flags.DEFINE_float(
    "width_multiplier", 1.0,
    "Scales every layer's channels (convolution filters and the hidden dense layer); 2.0 is the "
    "tutorial's 'bigger model' exercise. Must be > 0.", lower_bound=0.01)
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.0,
    "Decoupled weight decay (AdamW's, also with --optimizer=sgd) per optimizer step, as a "
    "fraction of learning_rate x weight, applied to kernels only: biases and BatchNorm's scale "
    "and offset (every 1-D variable) do not decay. 0 (the tutorial's): no decay, plain Adam.",
    lower_bound=0.0)
LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing", 0.0,
    "Training targets give this much probability mass, spread evenly, to all classes, in [0, 1); "
    "evaluation uses hard labels.", lower_bound=0.0, upper_bound=0.99)

TTA_FLIP = flags.DEFINE_boolean(
    "tta_flip", False,
    "Test-time augmentation: validation, the test, predictions and the exported model average "
    "the logits of each image and of its mirror image (flipped left to right), at twice the "
    "inference cost. Training is unchanged.")

checks.require_finite(DROPOUT, WIDTH_MULTIPLIER, WEIGHT_DECAY, LABEL_SMOOTHING)


def _is_learning_rate(text: str) -> bool:
    if text == "auto":
        return True
    try:
        rate = float(text)
    except ValueError:
        return False
    return rate > 0 and math.isfinite(rate)


flags.register_validator(LEARNING_RATE, _is_learning_rate,
                         message="must be a finite number > 0, or 'auto' (with --lr_find)")
