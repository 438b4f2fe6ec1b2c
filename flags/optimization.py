"""Flags that shape the optimizer step: clipping, accumulation, the learning-rate schedule and the
learning-rate finder."""

from absl import flags

from flags import checks
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
    "lr_schedule", "constant", ["constant", "cosine", "linear"],
    "Learning rate over optimizer steps: 'constant' (the tutorial's), 'cosine' (a cosine decay "
    "from --learning_rate to 0 over the run) or 'linear' (a straight line down to 0; with "
    "--warmup_steps, a one-cycle triangle). All start with --warmup_steps of linear warmup.")
WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", 0,
    "Optimizer steps (>= 0) over which the learning rate rises linearly to --learning_rate: warmup "
    "step s (from 0) runs at (s + 1) / warmup_steps of it, so the first step already learns.",
    lower_bound=0)
EMA_DECAY = flags.DEFINE_float(
    "ema_decay", None,
    "Keep an exponential moving average of the weights, with this decay per optimizer step, in "
    "(0, 1), e.g. 0.999 (the average spans about 1 / (1 - decay) steps). Validation, ranking, "
    "the test and the export use the averaged weights; the test of the live weights is "
    "reported too, as live_test_*. Default: no averaging.", lower_bound=0.0, upper_bound=0.999999)
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

checks.require_finite(GRADIENT_CLIP_VAL, EMA_DECAY, LR_FIND_MIN, LR_FIND_MAX)
