"""`--explain`: the resolved plan of a run, in words, without training.

`explain(plan)` takes plain facts (a `Plan`, filled in by `trainer/main.py`) and returns one
labelled paragraph per topic. To explain a new setting (say gradient clipping), add its facts to
`Plan` and one function to `TOPICS`; nothing else changes.
"""

import dataclasses
import textwrap

from trainer import config as config_lib

_LABEL_WIDTH = 15


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do, as plain values (no TensorFlow objects)."""

    strategy: str                  # class name, e.g. "MultiWorkerMirroredStrategy"
    devices: tuple[str, ...]       # this process's replica devices
    workers: int                   # processes (hosts) training together
    worker_index: int              # this process's place among them
    is_chief: bool                 # whether this process writes the files
    replicas: int                  # replicas over all workers
    global_batch: int              # examples per optimizer step, all replicas together
    steps_per_epoch: int
    epochs: int
    dropped_per_epoch: int         # training examples that do not fill a last global batch
    train_examples: int
    train_split: str
    data_order: str                # "shard" or "global" (data/image_classification.py)
    step: config_lib.StepConfig    # how one optimizer step is computed (precision, clipping, ...)
    compute_dtype: str
    variable_dtype: str
    sync_batchnorm: bool
    communication: str             # multi-worker all-reduce implementation
    checkpoint_every_steps: int
    keep_checkpoints: int
    checkpoint_dir: str
    cluster_source: str | None = None    # where the cluster came from: TF_CONFIG or a SLURM step
    cluster_tasks: tuple[str, ...] = ()  # "worker 0 at host:port", this process's marked
    eval_batch: int | None = None        # examples per evaluation step, all replicas (None: global_batch)


def explain(plan: Plan) -> str:
    """The plan as labelled lines, one topic each (see `TOPICS`), for someone new to tf.distribute.

    Raises:
        ValueError: if the global batch or the evaluation batch does not divide among the
            replicas.
    """
    for flag, value in (("batch_size", plan.global_batch), ("eval_batch_size", plan.eval_batch)):
        if value is not None and value % plan.replicas:
            raise ValueError(f"{flag} ({value}) must be divisible by the number of replicas "
                             f"({plan.replicas}): each replica gets {flag} / replicas examples")
    lines = ["the plan (--explain: nothing is trained)"]
    for label, describe in TOPICS:
        text = describe(plan)
        if text:
            lines.append(textwrap.fill(text, width=100, initial_indent=f"  {label:<{_LABEL_WIDTH}} ",
                                       subsequent_indent=" " * (_LABEL_WIDTH + 3)))
    return "\n".join(lines)


def _strategy(plan: Plan) -> str:
    role = "the chief: it writes every file" if plan.is_chief else "not the chief: writes no files"
    return (f"{plan.strategy}: {plan.workers} worker process(es) x "
            f"{plan.replicas // plan.workers} replica(s) each = {plan.replicas} replica(s). "
            f"Each replica holds a full copy of the model. This process is worker "
            f"{plan.worker_index} ({role}).")


def _cluster(plan: Plan) -> str:
    if not plan.cluster_tasks:
        return ""
    text = (f"{len(plan.cluster_tasks)} task(s) from {plan.cluster_source}: "
            f"{', '.join(plan.cluster_tasks)}")
    if any(task.startswith("evaluator") for task in plan.cluster_tasks):
        text += ("; the evaluator is not a worker: it validates the checkpoints on its own "
                 "(docs/multi_worker.md)")
    return text


def _devices(plan: Plan) -> str:
    return f"this process's replicas run on {', '.join(plan.devices)}"


def _batch(plan: Plan) -> str:
    per_replica = plan.global_batch // plan.replicas
    text = (f"global batch {plan.global_batch} = {plan.replicas} replica(s) x {per_replica} "
            f"examples per replica per step. --batch_size is the global batch: adding replicas "
            f"shrinks each replica's slice, not the optimizer step.")
    if plan.step.accumulate_grad_batches > 1:
        text += (f" Gradients of {plan.step.accumulate_grad_batches} global batches add up to one "
                 f"optimizer step of {plan.global_batch * plan.step.accumulate_grad_batches} examples.")
    eval_batch = plan.eval_batch or plan.global_batch
    text += (f" Validation, test and prediction run in global batches of {eval_batch} = "
             f"{plan.replicas} x {eval_batch // plan.replicas} (--eval_batch_size; no gradients "
             f"are kept, so evaluation affords a larger batch), every example exactly once, the "
             f"partial last batch kept.")
    return text


def _epochs(plan: Plan) -> str:
    text = (f"{plan.steps_per_epoch} optimizer steps per epoch x {plan.epochs} epoch(s) = "
            f"{plan.steps_per_epoch * plan.epochs} optimizer steps")
    if plan.dropped_per_epoch:
        text += (f"; {plan.dropped_per_epoch} of the {plan.train_examples} training examples do "
                 "not fill a last global batch and sit out each epoch (a different few each time)")
    return text


def _sharding(plan: Plan) -> str:
    if plan.data_order == "global":
        text = (f"--data_order=global: every worker reads the whole {plan.train_split!r} split "
                f"({plan.train_examples} examples), shuffles it by the same (seed, epoch) and "
                "builds the global batches one device would; each replica takes its slice of "
                "every global batch, so 1 device, N replicas and M workers train on identical "
                "global batches, and validate and test on identical ones.")
        if plan.workers > 1:
            text += (f" The cost: each of the {plan.workers} workers reads, decodes and caches "
                     f"the full split ({plan.workers}x the reading of --data_order=shard) and "
                     "holds it in memory.")
        return text
    if plan.workers == 1:
        return (f"one input pipeline reads the whole {plan.train_split!r} split; its replicas take "
                "consecutive per-replica batches of it")
    return (f"--data_order=shard: each worker reads its own 1/{plan.workers} of the "
            f"{plan.train_split!r} split (tfds.even_splits, by examples: no example is read "
            "twice); within a worker the replicas take consecutive per-replica batches. Every "
            "epoch reshuffles each shard, so the global batches depend on the number of workers "
            "(--data_order=global makes them the same on any cluster, if the split fits in each "
            "worker's memory).")


def _all_reduce(plan: Plan) -> str:
    if plan.replicas == 1:
        return "none: one replica computes the whole gradient"
    where = ("between this host's devices" if plan.workers == 1 else
             f"between all workers with collective ops over the network "
             f"(--communication={plan.communication})")
    if plan.step.reduces_gradients_itself:
        return (f"once per optimizer step, before the update: each replica first sums its "
                f"micro-batches' gradients locally ({plan.step.accumulate_grad_batches} per step), "
                f"then one all-reduce SUMS the {plan.replicas} replicas' sums {where}; every "
                "replica then unscales, checks and clips the same total, so all apply or skip "
                "the step together (trainer/steps.py). Each replica's loss is divided by "
                f"the examples of the whole step ({plan.global_batch * plan.step.accumulate_grad_batches}).")
    return (f"once per step, inside optimizer.apply_gradients: the {plan.replicas} replicas' "
            f"gradients are SUMMED {where}, then every replica applies the same update. Each "
            f"replica's loss is divided by the global batch ({plan.global_batch}), so the sum is "
            "the gradient of the mean loss, as on one device.")


def _batchnorm(plan: Plan) -> str:
    if plan.replicas == 1:
        return ""
    if plan.sync_batchnorm:
        return "synchronized: batch statistics over the global batch (one all-reduce per layer)"
    return ("per replica: each normalizes over its own slice; the replicas' moving statistics "
            "are averaged before every evaluation and checkpoint (--sync_batchnorm to synchronize)")


def _clipping(plan: Plan) -> str:
    if plan.step.gradient_clip_val is None:
        return "none (--gradient_clip_val to clip)"
    what = ("global L2 norm" if plan.step.gradient_clip_algorithm == "norm"
            else "absolute value of each element")
    return (f"the gradient's {what} is clipped to {plan.step.gradient_clip_val}, AFTER the all-reduce: "
            "clipping each replica's partial gradient before it would not clip the real one")


def _precision(plan: Plan) -> str:
    text = (f"--precision={plan.step.precision}: computations in {plan.compute_dtype}, variables in "
            f"{plan.variable_dtype}; logits and loss in float32")
    if plan.step.precision == "16-mixed":
        text += ("; dynamic loss scaling, and a step whose all-reduced gradients overflow is "
                 "skipped on every replica")
    return text


def _checkpoints(plan: Plan) -> str:
    cadence = (f"every {plan.checkpoint_every_steps} steps and at every epoch end"
               if plan.checkpoint_every_steps else "at every epoch end")
    text = f"{cadence}, to {plan.checkpoint_dir} (the newest {plan.keep_checkpoints} kept)"
    if plan.workers > 1:
        text += ("; every worker takes part in each save (a collective), but only the chief "
                 "writes there, the others to a temporary directory they delete")
    return text


# (label, function of the Plan returning a sentence, or "" to leave the topic out), in print order.
TOPICS = (
    ("strategy", _strategy),
    ("cluster", _cluster),
    ("devices", _devices),
    ("batch", _batch),
    ("epochs", _epochs),
    ("data sharding", _sharding),
    ("all-reduce", _all_reduce),
    ("clipping", _clipping),
    ("BatchNorm", _batchnorm),
    ("precision", _precision),
    ("checkpoints", _checkpoints),
)
