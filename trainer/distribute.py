"""Choosing a `tf.distribute` strategy, and checks that its replicas agree.

    default      no distribution: TensorFlow's default strategy on the default device
    one_device   everything placed on one device (the first GPU, else the CPU)
    mirrored     MirroredStrategy: one replica per GPU of this host (or per logical CPU device)
    multi_worker MultiWorkerMirroredStrategy: one process per host ("worker"), each with one
                 replica per GPU (or one on its CPU); the cluster is read from TF_CONFIG, or
                 without it from a SLURM job step of several tasks (trainer/cluster/slurm.py)
    auto         multi_worker when TF_CONFIG names several training tasks (chief and workers) or,
                 without TF_CONFIG, inside a SLURM job step of several tasks; else mirrored when
                 there are several GPUs or --cpu_devices > 1, else default

Every worker runs the same program on its own shard of the data; gradients are all-reduced over
all replicas of all workers, so the workers hold identical copies of the model. A TF_CONFIG task
of type "evaluator" is not a worker: it follows the workers' checkpoints alone
(trainer/cli/evaluator.py), under the strategy `auto` would choose without a cluster.
"""

from collections.abc import Callable
import json
import os
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

import layers
from trainer import gpu_check
from trainer.cluster import slurm

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}
_TF_CONFIG_RULE = (
    'TF_CONFIG must be JSON naming every task of the cluster and this process\'s task, e.g. '
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
    '"index": 0}}, set before the program starts (see docs/multi_worker.md)')
# The TF_CONFIG task types that train; an "evaluator" only reads the checkpoints.
TRAINING_TASKS = ("chief", "worker")
EVALUATOR_TASK = "evaluator"


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


def tf_config_cluster() -> dict | None:
    """The cluster that the TF_CONFIG environment variable names, checked; None if it is unset.

    Returns:
        {"cluster": {job: [address, ...]}, "task": {"type": job, "index": i}}.

    Raises:
        ValueError: naming TF_CONFIG, its value and the rule, if it is set but not usable.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        addresses = cluster[task["type"]]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG ({text}) is not usable ({type(error).__name__}: {error}). "
                         f"{_TF_CONFIG_RULE}") from None
    if not 0 <= index < len(addresses):
        raise ValueError(f"TF_CONFIG ({text}) gives task index {index}, but the cluster has "
                         f"{len(addresses)} {task['type']!r} task(s). {_TF_CONFIG_RULE}")
    return config


def _training_tasks(config: dict | None) -> int:
    """How many training tasks (processes) the TF_CONFIG cluster has; 0 without TF_CONFIG."""
    if not config:
        return 0
    return sum(len(config["cluster"].get(job, ())) for job in TRAINING_TASKS)


def is_evaluator_task() -> bool:
    """Whether TF_CONFIG makes this process the cluster's evaluator (trainer/cli/evaluator.py)."""
    config = tf_config_cluster()
    return bool(config) and config["task"]["type"] == EVALUATOR_TASK


def cluster_source() -> str | None:
    """Where `multi_worker` reads the cluster from: "TF_CONFIG", the SLURM job step, or None."""
    if tf_config_cluster():
        return "TF_CONFIG"
    return slurm.describe_step() if slurm.multi_task_step() else None


def create_strategy(name: str = "auto", *, cpu_devices: int = 1, gpus: list[int] | None = None,
                    gpu_memory_growth: bool = True, communication: str = "auto",
                    slurm_port_base: int | None = None,
                    evaluator: bool = False) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (see the module docstring).

    Device set-up (`cpu_devices`, `gpus`, `gpu_memory_growth`, see `split_cpu` and
    `configure_gpus`) happens first, so call this before anything else touches TensorFlow. Under
    `multi_worker` that is a hard rule: collective ops must be configured at program startup.
    On a machine whose NVIDIA GPUs TensorFlow does not see, it first logs why and how to fix it
    (trainer/gpu_check.py).

    Args:
        communication: how `multi_worker` all-reduces between workers: "ring" (gRPC, works on
            CPUs), "nccl" (GPUs only) or "auto" (TensorFlow chooses).
        slurm_port_base: the first port of each node's tasks, for a cluster from SLURM (None:
            derived from the job id, see trainer/cluster/slurm.py).
        evaluator: this process only evaluates checkpoints, as a TF_CONFIG "evaluator" task
            does: it joins no cluster, and `auto` or `multi_worker` choose this host's devices.

    Raises:
        ValueError: if `name` is not one of STRATEGIES, a device argument is out of range, or
            `multi_worker` is asked for without a usable TF_CONFIG or SLURM job step, or a
            one-process strategy inside a TF_CONFIG cluster of several training tasks.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy ({name!r}) must be one of {list(STRATEGIES)}")
    if communication not in COMMUNICATIONS:
        raise ValueError(f"communication ({communication!r}) must be one of "
                         f"{list(COMMUNICATIONS)}")
    gpu_check.warn_if_gpus_unseen()  # Before a strategy settles for the CPU: say why.
    cluster = tf_config_cluster()
    evaluates = evaluator or is_evaluator_task()
    if evaluates and name in ("auto", "multi_worker"):
        logging.info("the evaluator joins none of the workers' collectives: it runs on this "
                     "host's devices alone")
        name, communication = "auto", "auto"
    elif name == "auto" and (_training_tasks(cluster) > 1
                             or (cluster is None and slurm.multi_task_step())):
        name = "multi_worker"
    elif name != "multi_worker" and not evaluates and _training_tasks(cluster) > 1:
        # Each process would train alone, and each would write the chief's files.
        raise ValueError(f"strategy ({name!r}) trains in this process alone, but TF_CONFIG "
                         f"names a cluster of {_training_tasks(cluster)} training tasks: use "
                         "--strategy=multi_worker (or auto) to train together, or unset "
                         "TF_CONFIG to train alone")
    if name == "multi_worker":
        return _multi_worker_strategy(cluster, cpu_devices, gpus, gpu_memory_growth, communication,
                                      slurm_port_base)
    if communication != "auto":
        raise ValueError(f"communication ({communication!r}) only applies to "
                         f"--strategy=multi_worker, not to {name!r}")
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


def _multi_worker_strategy(cluster, cpu_devices, gpus, gpu_memory_growth, communication,
                           slurm_port_base):
    """MultiWorkerMirroredStrategy over the TF_CONFIG or SLURM cluster: one replica per local GPU,
    or one on the CPU (it does not use logical CPU devices, hence the cpu_devices rule)."""
    from_slurm = cluster is None and slurm.multi_task_step()
    if cluster is None and not from_slurm:
        raise ValueError(f"strategy ('multi_worker') needs the TF_CONFIG environment variable, "
                         f"which is not set, or a SLURM job step of several tasks. "
                         f"{_TF_CONFIG_RULE}")
    if cpu_devices != 1:
        raise ValueError(f"cpu_devices ({cpu_devices}) must be 1 with --strategy=multi_worker: "
                         "MultiWorkerMirroredStrategy runs one replica per GPU, or one on the CPU, "
                         "of each worker")
    if from_slurm:  # First: it may choose this task's GPUs, before TensorFlow sees them.
        slurm_cluster, task_id = slurm.resolve_step(slurm_port_base)
    configure_gpus(gpus, memory_growth=gpu_memory_growth)
    resolver = None  # TensorFlow's default: TFConfigClusterResolver.
    if from_slurm:
        # Given any resolver but TF_CONFIG's, the strategy takes its GPU count from the resolver.
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            slurm_cluster, task_type="worker", task_id=task_id,
            num_accelerators={"GPU": len(tf.config.get_visible_devices("GPU"))}, rpc_layer="grpc")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=COMMUNICATIONS[communication])
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                     communication_options=options)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many processes (workers) the strategy spans: 1 unless it is multi-worker."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 1
    return sum(len(tasks) for job, tasks in resolver.cluster_spec().as_dict().items()
               if job in ("chief", "worker"))


def input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext:
    """The `InputContext` that `strategy.distribute_datasets_from_function` gives this process's
    input pipeline: one pipeline per worker."""
    return tf.distribute.InputContext(num_input_pipelines=num_workers(strategy),
                                      input_pipeline_id=worker_index(strategy),
                                      num_replicas_in_sync=strategy.num_replicas_in_sync)


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's input pipeline id (0 outside multi-worker training): the chief first."""
    resolver = strategy.cluster_resolver
    if num_workers(strategy) == 1:
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_id + (1 if has_chief and resolver.task_type == "worker" else 0)


def cluster_tasks(strategy: tf.distribute.Strategy) -> list[str]:
    """The tasks of the strategy's cluster, as "worker 1 at host:port", this process's marked;
    none outside multi-worker training."""
    resolver = strategy.cluster_resolver
    if resolver is None:
        return []
    tasks = []
    for job, addresses in sorted(resolver.cluster_spec().as_dict().items()):
        for index, address in enumerate(addresses):
            this = (job, index) == (resolver.task_type, resolver.task_id)
            tasks.append(f"{job} {index} at {address}" + (" (this process)" if this else ""))
    return tasks


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """The devices of this process's replicas."""
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # The default strategy has no device list: it uses the default device.
        return ["the default device"]


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line naming the strategy, its replicas and workers, and this process's devices."""
    devices = replica_devices(strategy)
    workers = num_workers(strategy)
    where = f"on {', '.join(devices)}"
    if workers > 1:
        role = "the chief, which writes the files" if is_chief(strategy) else "not the chief"
        where = (f"over {workers} worker(s); this process is worker {worker_index(strategy)} "
                 f"({role}) with {len(devices)} replica(s) {where}")
    return f"{strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s) {where}"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes files (the only process outside multi-worker training)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def check_created_in_scope(strategy: tf.distribute.Strategy, variables) -> None:
    """Raises ValueError, naming the variable and the fix, if one was created outside the scope."""
    for variable in variables:
        if not strategy.extended.variable_created_in_scope(variable.value):
            raise ValueError(
                f"variable {variable.path} was created outside this Trainer's strategy scope: "
                "create the module inside `with trainer.strategy.scope():` and do not call it "
                "before fit, so that the Trainer builds it there")


def warn_about_shared_random_draws(strategy: tf.distribute.Strategy, module) -> None:
    """Warns, naming them, about Keras Dropout layers under several replicas: their seed state is
    one mirrored variable, so every replica draws the same mask (`layers.ReplicaDropout` does not)."""
    if strategy.num_replicas_in_sync == 1:
        return
    shared = [layer.name for layer in module._flatten_layers()  # pylint: disable=protected-access
              if isinstance(layer, tf.keras.layers.Dropout)
              and not isinstance(layer, layers.ReplicaDropout)]
    if shared:
        logging.warning("%s: a Keras Dropout draws the same mask on every one of the %d replicas "
                        "(its seed state is mirrored); use layers.ReplicaDropout for independent "
                        "masks", ", ".join(shared), strategy.num_replicas_in_sync)


def replica_mismatches(strategy: tf.distribute.Strategy, variables) -> dict[str, float]:
    """Returns {variable path: largest difference between its replica copies} where it is not 0."""
    mismatches = {}
    for variable in variables:
        copies = [np.asarray(c) for c in strategy.experimental_local_results(variable.value)]
        spread = max(float(np.max(np.abs(c - copies[0]))) for c in copies)
        if spread > 0:
            mismatches[variable.path] = spread
    return mismatches


_VOTES: dict = {}  # strategy -> its traced vote, for any_worker


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether `flag` is True on any worker; every worker must call it (it is an all-reduce).

    A host-side decision that leads to a collective, such as reading the metrics for a progress
    line when a timer fires, must come out the same on every worker: a worker that reads alone
    waits forever for the others. Outside multi-worker training it returns `flag`.
    """
    if num_workers(strategy) == 1:
        return flag
    if strategy not in _VOTES:  # Traced once: run eagerly, the all-reduce is slow (and TF warns).
        def count_votes(flag):
            votes = strategy.run(lambda flag: flag, args=(flag,))  # Every replica votes.
            return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
        _VOTES[strategy] = tf.function(count_votes)
    return float(_VOTES[strategy](tf.constant(float(flag)))) > 0


def first_difference(strategy: tf.distribute.Strategy, values: dict[str, str]) -> str | None:
    """The first name (in sorted order) whose value is not the same on every worker, or None.

    Every worker must call it, with the same names (it is one all-reduce). Each value travels
    as a 20-bit hash h: the workers agree on a name exactly when n * sum(h^2) == (sum h)^2 over
    the n replicas (equality in Cauchy-Schwarz), which float64 sums hold exactly.
    """
    if num_workers(strategy) == 1:
        return None
    names = sorted(values)
    hashes = tf.constant([zlib.crc32(f"{name}={values[name]}".encode()) & 0xFFFFF
                          for name in names], tf.float64)

    @tf.function
    def sums(hashes):
        per_replica = strategy.run(lambda h: tf.stack([h, h * h]), args=(hashes,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    total, squares = sums(hashes).numpy()
    replicas = strategy.num_replicas_in_sync
    return next((name for name, first, second in zip(names, total, squares)
                 if replicas * second != first * first), None)


def check_same_on_every_worker(strategy: tf.distribute.Strategy, values: dict[str, str], *,
                               what: str) -> None:
    """Raises ValueError, naming the first entry of `values` that differs between the workers
    and this worker's value of it; every worker must call it (`first_difference`)."""
    different = first_difference(strategy, values)
    if different:
        raise ValueError(
            f"the workers were started with different {what}: --{different} differs between "
            f"them (on worker {worker_index(strategy)}: {values[different]}). Start every "
            f"worker with the same {what}")


def gathered_labels(strategy: tf.distribute.Strategy,
                    make_dataset: Callable[[tf.distribute.InputContext], tf.data.Dataset]
                    ) -> np.ndarray:
    """The labels of a distributed dataset of (inputs, labels) batches, in the order in which
    `strategy.gather` returns per-replica outputs (e.g. `Trainer.predict`'s predictions).

    That order is, per batch, replica 0's slice, then replica 1's, ...: under multi-worker training,
    where each worker reads its own shard, it interleaves the shards batch by batch, so it is not
    the dataset's order. Every worker must call this (each gather is a collective).

    Args:
        make_dataset: `fn(tf.distribute.InputContext) -> tf.data.Dataset` of (inputs, labels).
    """
    dataset = strategy.distribute_datasets_from_function(make_dataset)
    return np.concatenate([strategy.gather(labels, axis=0).numpy() for _, labels in dataset])
