"""Choosing a `tf.distribute` strategy, and checks that its replicas agree.

    default      no distribution: TensorFlow's default strategy on the default device
    one_device   everything placed on one device (the first GPU, else the CPU)
    mirrored     MirroredStrategy: one replica per GPU of this host (or per logical CPU device)
    auto         mirrored when there are several GPUs or --cpu_devices > 1, else default
"""

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored")


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into `num_devices` logical devices (one replica each).

    Must run before TensorFlow initialises its devices, i.e. before the first op or device query.
    """
    if num_devices < 1:
        raise ValueError(f"cpu_devices ({num_devices}) must be at least 1")
    if num_devices == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        raise RuntimeError(f"cpu_devices ({num_devices}) must be applied before TensorFlow "
                           f"initialises its devices: {error}") from None


def configure_gpus(gpus: list[int] | None = None, *, memory_growth: bool = True) -> None:
    """Chooses the GPUs this process uses and lets their memory grow on demand.

    Must run before TensorFlow initialises its devices. Without GPUs it does nothing. Memory
    growth makes TensorFlow allocate GPU memory as needed instead of all of it at start, which
    avoids out-of-memory errors when other processes share the GPU.

    Args:
        gpus: indices of the physical GPUs to use (None: all of them).
        memory_growth: call `tf.config.experimental.set_memory_growth` on every used GPU.
    """
    physical = tf.config.list_physical_devices("GPU")
    if gpus is not None:
        missing = [index for index in gpus if not 0 <= index < len(physical)]
        if missing:
            raise ValueError(f"gpus ({','.join(map(str, gpus))}) names GPU(s) {missing}, but "
                             f"this machine has {len(physical)} GPU(s)")
        physical = [physical[index] for index in gpus]
        tf.config.set_visible_devices(physical, "GPU")
    if memory_growth:
        for gpu in physical:
            tf.config.experimental.set_memory_growth(gpu, True)


def create_strategy(name: str = "auto", *, cpu_devices: int = 1, gpus: list[int] | None = None,
                    gpu_memory_growth: bool = True) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (see the module docstring).

    Device set-up (`cpu_devices`, `gpus`, `gpu_memory_growth`, see `split_cpu` and
    `configure_gpus`) happens first, so call this before anything else touches TensorFlow.

    Raises:
        ValueError: if `name` is not one of STRATEGIES, or a device argument is out of range.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy ({name!r}) must be one of {list(STRATEGIES)}")
    configure_gpus(gpus, memory_growth=gpu_memory_growth)
    split_cpu(cpu_devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or cpu_devices > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    return tf.distribute.MirroredStrategy(gpus or cpus)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line naming the strategy and its replica devices."""
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # The default strategy has no device list: it uses the default device.
        devices = ["the default device"]
    return (f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s) on "
            f"{', '.join(devices)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes files (the only process outside multi-worker training)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def replica_mismatches(strategy: tf.distribute.Strategy, variables) -> dict[str, float]:
    """Returns {variable path: largest difference between its replica copies} where it is not 0."""
    mismatches = {}
    for variable in variables:
        copies = [np.asarray(c) for c in strategy.experimental_local_results(variable.value)]
        spread = max(float(np.max(np.abs(c - copies[0]))) for c in copies)
        if spread > 0:
            mismatches[variable.path] = spread
    return mismatches
