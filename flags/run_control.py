"""Flags that decide how long a run trains, how much data each stage sees, and when to stop."""

from absl import flags

from flags import checks

MAX_STEPS = flags.DEFINE_integer(
    "max_steps", None,
    "Stop after this many optimizer steps (>= 1), even mid-epoch; default: no limit besides "
    "--epochs.", lower_bound=1)
MAX_TIME = flags.DEFINE_string(
    "max_time", None,
    "Stop training after this much time, as DD:HH:MM:SS, HH:MM:SS or MM:SS (time before a resume "
    "counts); a checkpoint is saved and a rerun with a larger limit continues. Default: no limit.")
LIMIT_TRAIN_BATCHES = flags.DEFINE_integer(
    "limit_train_batches", None,
    "Train on at most this many global batches per epoch (>= 1); default: the whole split.",
    lower_bound=1)
LIMIT_VAL_BATCHES = flags.DEFINE_integer(
    "limit_val_batches", None,
    "Validate on at most this many global batches (>= 0; 0 turns validation off); default: all.",
    lower_bound=0)
LIMIT_TEST_BATCHES = flags.DEFINE_integer(
    "limit_test_batches", None,
    "Test on at most this many global batches (>= 0; 0 skips the test); default: all.",
    lower_bound=0)
VAL_CHECK_INTERVAL = flags.DEFINE_integer(
    "val_check_interval", None,
    "Validate every this many optimizer steps (>= 1), counted across epoch ends, instead of at the "
    "end of each epoch, and when training ends if the interval did not just validate there. "
    "Default: validate at epoch ends.", lower_bound=1)
CHECK_VAL_EVERY_N_EPOCH = flags.DEFINE_integer(
    "check_val_every_n_epoch", 1,
    "Validate at the end of every N-th epoch (>= 1), and when training ends.", lower_bound=1)
NUM_SANITY_VAL_STEPS = flags.DEFINE_integer(
    "num_sanity_val_steps", 2,
    "Validation batches (>= 0) run before training starts, so that an error in validation_step "
    "shows at once instead of after the first epoch. 0 skips the check.", lower_bound=0)
FAST_DEV_RUN = flags.DEFINE_boolean(
    "fast_dev_run", False,
    "Run 1 training step, 1 validation batch and 1 test batch to check that everything runs; "
    "writes nothing (no checkpoints, logs or results).")
OVERFIT_BATCHES = flags.DEFINE_integer(
    "overfit_batches", 0,
    "Train and validate on the same first N training batches (>= 0), unshuffled and "
    "unaugmented: a model that cannot overfit them has a bug. 0: off.", lower_bound=0)
EARLY_STOPPING_PATIENCE = flags.DEFINE_integer(
    "early_stopping_patience", 0,
    "Stop training when --early_stopping_monitor has not improved for this many validations "
    "(>= 0); 0: no early stopping.", lower_bound=0)
EARLY_STOPPING_MONITOR = flags.DEFINE_string(
    "early_stopping_monitor", "val_loss",
    "Logged metric that early stopping watches, e.g. val_loss or val_accuracy.")
EARLY_STOPPING_MIN_DELTA = flags.DEFINE_float(
    "early_stopping_min_delta", 0.0,
    "Smallest change of the monitored metric (>= 0, in its units) that counts as an improvement.",
    lower_bound=0.0)
EARLY_STOPPING_MODE = flags.DEFINE_enum(
    "early_stopping_mode", "auto", ["auto", "min", "max"],
    "Whether lower or higher is better for the monitored metric; auto: max for names "
    "containing 'acc', else min.")
RESTORE_BEST_WEIGHTS = flags.DEFINE_boolean(
    "restore_best_weights", False,
    "When early stopping stops the run, put back the weights of the best validation.")

checks.require_finite(EARLY_STOPPING_MIN_DELTA)
