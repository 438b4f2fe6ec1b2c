"""Flags that choose how the work is spread over devices."""

from absl import flags

from trainer import distribute

STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(distribute.STRATEGIES),
    "tf.distribute strategy: 'auto' (multi_worker when the TF_CONFIG environment variable names "
    "a cluster of several tasks, else MirroredStrategy when there are several GPUs or "
    "--cpu_devices > 1, else 'default'), 'default' (one device, no distribution), 'one_device' "
    "(first GPU, else CPU), 'mirrored' (one replica per GPU, or per logical CPU device), "
    "'multi_worker' (MultiWorkerMirroredStrategy: one process per host, the cluster read from "
    "TF_CONFIG; see docs/multi_worker.md).")
COMMUNICATION = flags.DEFINE_enum(
    "communication", "auto", list(distribute.COMMUNICATIONS),
    "How --strategy=multi_worker all-reduces gradients between workers: 'ring' (ring all-reduce "
    "over gRPC; works on CPUs), 'nccl' (NVIDIA NCCL; GPUs only) or 'auto' (TensorFlow chooses). "
    "Only multi_worker uses it.")
CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1,
    "Split the CPU into this many logical devices (>= 1) before TensorFlow starts, so "
    "MirroredStrategy can run N replicas without GPUs (for testing distribution).", lower_bound=1)
GPUS = flags.DEFINE_list(
    "gpus", None,
    "Comma-separated indices of the GPUs to use, e.g. 0,1 (default: all visible GPUs).")
GPU_MEMORY_GROWTH = flags.DEFINE_boolean(
    "gpu_memory_growth", True,
    "Let TensorFlow allocate GPU memory as it needs it instead of all at start, on every used GPU "
    "(the tutorial's fix for GPU out-of-memory errors). A no-op without GPUs.")
