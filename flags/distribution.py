"""Flags that choose how the work is spread over devices and machines: the strategy, the devices,
a cluster from SLURM, and an evaluator task beside the workers."""

from absl import flags

from trainer import distribute

STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(distribute.STRATEGIES),
    "tf.distribute strategy: 'auto' (multi_worker when the TF_CONFIG environment variable names "
    "a cluster of several training tasks, or without TF_CONFIG inside a SLURM job step of several "
    "tasks (srun), else MirroredStrategy when there are several GPUs or "
    "--cpu_devices > 1, else 'default'), 'default' (one device, no distribution), 'one_device' "
    "(first GPU, else CPU), 'mirrored' (one replica per GPU, or per logical CPU device), "
    "'multi_worker' (MultiWorkerMirroredStrategy: one process per host, the cluster read from "
    "TF_CONFIG or SLURM; see docs/multi_worker.md).")
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
flags.register_validator(GPUS, lambda values: values is None or all(
    value.strip().isdigit() for value in values), message="must be comma-separated GPU indices, "
                                                          "e.g. 0,1")
GPU_MEMORY_GROWTH = flags.DEFINE_boolean(
    "gpu_memory_growth", True,
    "Let TensorFlow allocate GPU memory as it needs it instead of all at start, on every used GPU "
    "(the tutorial's fix for GPU out-of-memory errors). A no-op without GPUs.")
SLURM_PORT_BASE = flags.DEFINE_integer(
    "slurm_port_base", None,
    "TCP port (1024-65535) at which the tasks of a SLURM job step listen for each other: the k-th "
    "task on a node uses this port + k. Default: 20000 + 10 x (SLURM_JOB_ID mod 1000), so that "
    "jobs sharing a node rarely collide. Only used inside a SLURM job step of several tasks.",
    lower_bound=1024, upper_bound=65535)
SLURM_REQUEUE = flags.DEFINE_boolean(
    "slurm_requeue", False,
    "Inside a SLURM job, a SIGTERM (preemption, the time limit, scancel) also requeues the job: "
    "every worker stops at the same step, the state is saved, the chief runs 'scontrol requeue "
    "$SLURM_JOB_ID', and the requeued job resumes from that checkpoint. A SIGUSR1 (sent before "
    "the time limit by '#SBATCH --signal=USR1@90') always does this in a SLURM job; a SIGINT "
    "(scancel --signal=INT) never does. Outside a SLURM job it is an error.")
EVALUATE_CHECKPOINTS = flags.DEFINE_boolean(
    "evaluate_checkpoints", False,
    "Instead of training, be the run's evaluator: validate each checkpoint of "
    "<model_dir>/checkpoints as it appears (give the training run's flags), write the val_* "
    "metrics to <model_dir>/evaluator.json, <model_dir>/evaluator/metrics.csv and "
    "<model_dir>/tensorboard/evaluator, keep the best weights by --monitor in "
    "<model_dir>/evaluator/best, and exit after the checkpoint of the run's last step. A "
    "TF_CONFIG task of type 'evaluator' does the same.")
EVALUATOR_TIMEOUT_S = flags.DEFINE_float(
    "evaluator_timeout_s", 3600.0,
    "Seconds (> 0) the evaluator waits for a new checkpoint before it stops with an error (the "
    "training run may have ended early or died). A restarted evaluator skips the checkpoints it "
    "has evaluated.", lower_bound=1e-3)
