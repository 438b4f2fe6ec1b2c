"""Flags that choose how the work is spread over devices."""

from absl import flags

from trainer import distribute

STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(distribute.STRATEGIES),
    "tf.distribute strategy: 'auto' (MirroredStrategy when there are several GPUs or "
    "--cpu_devices > 1, else 'default'), 'default' (one device, no distribution), 'one_device' "
    "(first GPU, else CPU), 'mirrored' (one replica per GPU, or per logical CPU device).")
CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1,
    "Split the CPU into this many logical devices (>= 1) before TensorFlow starts, so "
    "MirroredStrategy can run N replicas without GPUs (for testing distribution).", lower_bound=1)
