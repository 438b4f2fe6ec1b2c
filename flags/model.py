"""Flags that choose the network and its optimizer."""

from absl import flags

from layers import cnn

MODEL = flags.DEFINE_enum(
    "model", "functional", sorted(cnn.CNNS),
    "Network architecture: 'sequential' (3 convs, no BatchNorm, 225k parameters on CIFAR-10) or "
    "'functional' (3 Conv-BatchNorm-ReLU blocks, 1.5M parameters).")
LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 3e-4, "Adam learning rate (per optimizer step; > 0).", lower_bound=0.0)
SYNC_BATCHNORM = flags.DEFINE_boolean(
    "sync_batchnorm", False,
    "BatchNorm computes batch statistics over the global batch across replicas, so N replicas "
    "train exactly like one device (costs an all-reduce per BatchNorm layer per step). When off, "
    "each replica normalizes over its own slice and the replicas' moving statistics are averaged "
    "before every evaluation.")
