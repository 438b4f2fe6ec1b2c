"""Model building blocks and the tutorial's two CNNs, all as `tf.keras` subclasses.

`build_cnn(name, ...)` turns a `--model` name into a network; `CNNS` lists the names.
"""

from layers.blocks import ClassifierHead, ConvBNReLU, ReplicaDropout
from layers.cnn import CNNS, FunctionalCNN, SequentialCNN, build_cnn

__all__ = ["CNNS", "ClassifierHead", "ConvBNReLU", "FunctionalCNN", "ReplicaDropout",
           "SequentialCNN", "build_cnn"]
