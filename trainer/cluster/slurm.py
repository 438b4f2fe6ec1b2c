"""SLURM: the cluster of a job step with several tasks, and requeueing a job before it is stopped.

The cluster. `srun` describes its job step to every task in environment variables (SLURM_PROCID,
SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE); TensorFlow's
`SlurmClusterResolver` turns them into the cluster that `MultiWorkerMirroredStrategy` needs:
every task is a worker, task k is worker k (worker 0, the chief, writes the files), and the
tasks of a node listen on consecutive ports from the port base. `--strategy=auto` uses it when
TF_CONFIG is unset and the step has more than one task (`multi_task_step`); a one-task job, or a
`salloc` shell outside `srun`, keeps the single-process strategies.

The GPUs. One task per node uses every GPU that SLURM gives it. Several tasks on a node that all
see the same GPUs (`--ntasks-per-node=4 --gpus-per-node=4`) get an equal share each, in task
order (`gpus_for_task`). Where SLURM binds GPUs to tasks itself (`--gpus-per-task`,
`--gpu-bind`), each task keeps what it sees. The resolver's own GPU assignment stays off: it
numbers GPUs 0..n-1, which on a shared node are not necessarily the job's.

Requeueing. `#SBATCH --signal=USR1@90` makes SLURM send SIGUSR1 to every task 90 s before the
time limit. The Trainer stops on it as on SIGTERM: every worker stops at the same step and the
state is saved (trainer/stopping.py). Then, inside a SLURM job, the chief runs `scontrol requeue
$SLURM_JOB_ID` (`requeue`); the requeued job, the same command again, resumes from that
checkpoint. `--slurm_requeue` requeues after a SIGTERM too (preemption, `scancel`).
"""

import os
import re
import signal
import subprocess
import threading

from absl import logging
import tensorflow as tf

# What a task of a job step started by srun finds in its environment.
STEP_VARIABLES = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_PROCID",
                  "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
# Set when the job asked SLURM to bind GPUs to tasks: each task then sees only its own.
_GPU_BINDING_VARIABLES = ("SLURM_GPUS_PER_TASK", "SLURM_GPU_BIND")
_REQUEUE_TIMEOUT_S = 60


def in_job() -> bool:
    """Whether this process runs inside a SLURM job (batch script, srun task or salloc shell)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def multi_task_step() -> bool:
    """Whether this process is one of several tasks of a SLURM job step (`srun` with n > 1)."""
    if not all(os.environ.get(name) for name in STEP_VARIABLES):
        return False
    try:
        return (int(os.environ["SLURM_NTASKS"]) > 1
                and int(os.environ["SLURM_STEP_NUM_TASKS"]) > 1)
    except ValueError:
        return False


def describe_step() -> str:
    """The job step in words, e.g. "SLURM job 4242, step 0"."""
    return f"SLURM job {os.environ.get('SLURM_JOB_ID')}, step {os.environ.get('SLURM_STEP_ID')}"


def restart_count() -> int:
    """How many times SLURM restarted (requeued) this job; 0 outside SLURM."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def default_port_base() -> int:
    """The first port of this job's tasks: 20000-29990 by job id, so that jobs sharing a node
    rarely collide, and below Linux's ephemeral ports (32768 and up)."""
    return 20000 + 10 * (int(os.environ["SLURM_JOB_ID"]) % 1000)


def resolve_step(port_base: int | None = None) -> tuple[tf.train.ClusterSpec, int]:
    """The job step's cluster, every task a worker; gives this task its share of the node's GPUs.

    Call before TensorFlow initialises its devices: it may set CUDA_VISIBLE_DEVICES.

    Args:
        port_base: the first port of each node's tasks (None: `default_port_base()`).

    Returns:
        (the cluster, this task's index among its workers: SLURM_PROCID).

    Raises:
        ValueError: if SLURM placed this task on another node than the cluster says.
    """
    tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
    per_node = os.environ["SLURM_STEP_TASKS_PER_NODE"]
    if sum(tasks_per_node(per_node)) != tasks:
        raise ValueError(
            f"the SLURM job step's environment disagrees with itself: SLURM_STEP_NUM_TASKS "
            f"({tasks}) is not the sum of SLURM_STEP_TASKS_PER_NODE ({per_node}). Start the "
            "workers with srun inside the job, which sets both")
    # The GPU arguments only satisfy the resolver's checks (1 "GPU" per task, enough per node):
    # with auto_set_gpu=False it assigns none, `gpus_for_task` does.
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=default_port_base() if port_base is None else port_base,
        gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
    cluster = resolver.cluster_spec()
    addresses = cluster.as_dict()["worker"]
    own = addresses[resolver.task_id]
    host = _host(own)
    node = os.environ.get("SLURMD_NODENAME")
    if node and node != host:
        raise ValueError(
            f"SLURM placed task {resolver.task_id} on node {node}, but SlurmClusterResolver "
            f"expects it at {own}: it numbers tasks node by node, in sorted node order. Start the "
            "step with srun --distribution=block (SLURM's default)")
    on_node = [address for address in addresses if _host(address) == host]
    visible = [gpu for gpu in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpu]
    share = gpus_for_task(visible, len(on_node), on_node.index(own),
                          bound_by_slurm=any(os.environ.get(v) for v in _GPU_BINDING_VARIABLES))
    if share is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(share)
        logging.info("task %d uses GPU(s) %s of its node's %s", resolver.task_id,
                     ",".join(share), ",".join(visible))
    return cluster, resolver.task_id


def tasks_per_node(text: str) -> list[int]:
    """SLURM's compressed count of tasks per node, e.g. "2(x3),1" -> [2, 2, 2, 1].

    Raises:
        ValueError: naming SLURM_STEP_TASKS_PER_NODE, if `text` is not in that form.
    """
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise ValueError(f"SLURM_STEP_TASKS_PER_NODE ({text}) is not a list of task counts "
                             "such as 2(x3),1")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def gpus_for_task(visible: list[str], tasks_on_node: int, index_on_node: int, *,
                  bound_by_slurm: bool = False) -> list[str] | None:
    """This task's share of the GPUs that all `tasks_on_node` tasks of its node see.

    Args:
        visible: the GPUs this task sees (CUDA_VISIBLE_DEVICES, as SLURM set it).
        tasks_on_node: tasks of the step on this node.
        index_on_node: this task's place among them.
        bound_by_slurm: SLURM bound GPUs to tasks, so `visible` is this task's alone.

    Returns:
        The `len(visible) / tasks_on_node` GPUs of this task, or None to keep `visible` as it is:
        one task on the node, GPUs bound by SLURM, no GPUs, or fewer GPUs than an equal share.
    """
    if bound_by_slurm or tasks_on_node == 1 or not visible or len(visible) % tasks_on_node:
        return None
    share = len(visible) // tasks_on_node
    return visible[index_on_node * share:(index_on_node + 1) * share]


def requeue() -> bool:
    """Runs `scontrol requeue $SLURM_JOB_ID`: SLURM ends the job and queues it again; returns
    whether it did. A failure is logged, not raised: the checkpoint is saved either way."""
    command = ["scontrol", "requeue", os.environ["SLURM_JOB_ID"]]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=_REQUEUE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    else:
        if result.returncode == 0:
            logging.info("requeued the job (%s): it will start again and resume from the "
                         "checkpoint just saved", " ".join(command))
            return True
        failure = f"exit status {result.returncode}: {result.stderr.strip()}"
    logging.error("could not requeue the job: %s failed (%s); submit the same job again to "
                  "resume from the checkpoint just saved", " ".join(command), failure)
    return False


def tolerate_late_requeue_signal() -> None:
    """Makes a SIGUSR1 outside `fit` a logged no-op instead of its default, killing the process.

    `fit` handles SIGUSR1 while it trains. A task whose copy of the signal arrives only after
    the others' made every worker stop would otherwise die before the chief requeues the job.
    Only the main thread can install a handler; elsewhere (e.g. the training thread of a Ray
    worker) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGUSR1, lambda signal_number, frame: logging.warning(
        "SIGUSR1 received outside training: ignored"))


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]
