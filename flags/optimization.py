"""Flags that shape the optimizer step: clipping, accumulation, the learning-rate schedule and the
learning-rate finder."""

from absl import flags

from trainer import config

GRADIENT_CLIP_VAL = flags.DEFINE_float(
    "gradient_clip_val", None,
    "Clip the gradients (summed over all replicas) to this global L2 norm, or to this absolute "
    "value per element with --gradient_clip_algorithm=value (> 0). Default: no clipping.",
    lower_bound=0.0)
GRADIENT_CLIP_ALGORITHM = flags.DEFINE_enum(
    "gradient_clip_algorithm", "norm", list(config.CLIP_ALGORITHMS),
    "How --gradient_clip_val clips: 'norm' (scale all gradients so their global norm is at most "
    "the value) or 'value' (clamp each element to [-value, value]).")
ACCUMULATE_GRAD_BATCHES = flags.DEFINE_integer(
    "accumulate_grad_batches", 1,
    "Sum the gradients of this many global batches (>= 1) before each optimizer step: one step "
    "then sees accumulate_grad_batches x batch_size examples. Steps per epoch shrink by the same "
    "factor.", lower_bound=1)
LR_SCHEDULE = flags.DEFINE_enum(
    "lr_schedule", "constant", ["constant", "cosine"],
    "Learning rate over optimizer steps: 'constant' (the tutorial's), or 'cosine' (decay from "
    "--learning_rate to 0 over the run). Both start with --warmup_steps of linear warmup.")
WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", 0,
    "Optimizer steps (>= 0) over which the learning rate rises linearly from 0 to "
    "--learning_rate.", lower_bound=0)
LR_FIND = flags.DEFINE_boolean(
    "lr_find", False,
    "Before training, run the learning-rate finder: --lr_find_steps optimizer steps whose learning "
    "rate grows exponentially from --lr_find_min to --lr_find_max, stopping early when the "
    "smoothed loss passes 4x its minimum. Logs the suggested rate (steepest descent of the "
    "smoothed loss), writes <model_dir>/lr_find.csv and lr_find.png, then puts weights, optimizer "
    "and data position back as they were. With --learning_rate=auto the run trains on the "
    "suggestion. Skipped by --fast_dev_run.")
LR_FIND_STEPS = flags.DEFINE_integer(
    "lr_find_steps", 100, "Optimizer steps (>= 2) of the learning-rate finder's ramp.",
    lower_bound=2)
LR_FIND_MIN = flags.DEFINE_float(
    "lr_find_min", 1e-7, "The learning-rate finder's first learning rate (> 0).", lower_bound=0.0)
LR_FIND_MAX = flags.DEFINE_float(
    "lr_find_max", 1.0,
    "The learning-rate finder's last learning rate (> --lr_find_min).", lower_bound=0.0)
