"""Flags that control the training run itself: length, seeds, speed, checkpoints."""

from absl import flags

from trainer import precision

EPOCHS = flags.DEFINE_integer(
    "epochs", 10, "Passes over the training split (>= 1).", lower_bound=1)
SEED = flags.DEFINE_integer(
    "seed", 0, "Seeds Python, NumPy and TensorFlow (initial weights) and the data shuffle.")
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None,
    "Directory for everything a run writes (results.json, ...); default runs/<dataset>-<model>.")
STEPS_PER_LOOP = flags.DEFINE_integer(
    "steps_per_loop", 100,
    "Most training steps run per tf.function call (>= 1). Each call costs a Python dispatch and a "
    "host sync; 100 steps per call made that cost negligible for both CNNs on CPU. A call also "
    "ends at every step where something is due (epoch end, --log_every_n_steps, validation, "
    "checkpoints), so cadences stay exact.", lower_bound=1)
PRECISION = flags.DEFINE_enum(
    "precision", "32", list(precision.POLICIES),
    "Numeric precision: '32' (float32, the tutorial's), 'bf16-mixed' (bfloat16 compute with "
    "float32 variables, logits and loss; faster on CPUs and GPUs with bfloat16 support) or "
    "'16-mixed' (float16 compute with dynamic loss scaling; for GPUs without bfloat16, slow on "
    "CPU).")
JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile", False,
    "Compile the per-replica training step with XLA. Off by default: on a 2-core CPU it made both "
    "CNNs slower, and Keras turns it off under a distribution strategy (known crashes).")
RUN_EAGERLY = flags.DEFINE_boolean(
    "run_eagerly", False,
    "Run the steps as plain Python without tf.function, so pdb can stop inside training_step. "
    "Much slower; for debugging only.")
DETECT_ANOMALY = flags.DEFINE_boolean(
    "detect_anomaly", False,
    "Check every step's loss and gradients (summed over all replicas) for NaN/Inf; on the first "
    "bad step, stop with a message naming it, without applying it or writing a checkpoint. With "
    "--precision=16-mixed a gradient overflow is the loss scale's routine signal (the step is "
    "skipped, the scale halves) and stops the run only at the minimum scale. Costs an all-reduce "
    "per step in place of the optimizer's own.")
PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", None,
    "Two optimizer steps A,B (0 <= A < B): record a TensorFlow profiler trace of steps A+1 to B "
    "into <model_dir>/tensorboard (TensorBoard's Profile tab). Default: no profiling.")
CHECKPOINT_EVERY_STEPS = flags.DEFINE_integer(
    "checkpoint_every_steps", 1000,
    "Save the full training state every this many optimizer steps (>= 0), besides every epoch "
    "end; 0 saves at epoch ends only. Checkpoints go to <model_dir>/checkpoints.", lower_bound=0)
KEEP_CHECKPOINTS = flags.DEFINE_integer(
    "keep_checkpoints", 3, "How many of the newest checkpoints to keep on disk (>= 1).",
    lower_bound=1)
CKPT_PATH = flags.DEFINE_string(
    "ckpt_path", None,
    "Resume from this checkpoint (a path such as runs/x/checkpoints/ckpt-1562) instead of the "
    "latest one in --model_dir.")
FRESH_START = flags.DEFINE_boolean(
    "fresh_start", False,
    "Start from scratch even though --model_dir holds a run: the old run is renamed to "
    "<model_dir>.old-N, never deleted. Without it a run in --model_dir is resumed.")
DETERMINISTIC = flags.DEFINE_boolean(
    "deterministic", False,
    "Enable TensorFlow op determinism, so that the same flags give bit-identical results, also "
    "after a resume. Can be slower.")
MONITOR = flags.DEFINE_string(
    "monitor", "val_accuracy",
    "Logged metric that ranks the epochs for --save_top_k, e.g. val_accuracy or val_loss.")
MONITOR_MODE = flags.DEFINE_enum(
    "monitor_mode", "auto", ["auto", "max", "min"],
    "Whether a higher or lower --monitor is better; auto: max for names containing 'acc', else min.")
SAVE_TOP_K = flags.DEFINE_integer(
    "save_top_k", 1,
    "Keep the weights of this many best epochs in <model_dir>/best (ranked in best.json); the "
    "best is exported for serving to <model_dir>/export. 0: no ranking, export the last model.",
    lower_bound=0)
