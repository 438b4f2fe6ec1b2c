"""Flags that control the training run itself."""

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
    "Training steps run per tf.function call (>= 1). Each call costs a Python dispatch and a host "
    "sync; 100 steps per call made that cost negligible for both CNNs on CPU while progress lines "
    "(read once per call) still come every few seconds. Validation still runs exactly at epoch "
    "ends: a call never crosses an epoch boundary.", lower_bound=1)
PRECISION = flags.DEFINE_enum(
    "precision", "32", list(precision.POLICIES),
    "Numeric precision: '32' (float32, the tutorial's) or 'bf16-mixed' (bfloat16 compute with "
    "float32 variables, logits and loss; faster on CPUs and GPUs with bfloat16 support).")
JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile", False,
    "Compile the per-replica training step with XLA. Off by default: on a 2-core CPU it made both "
    "CNNs slower, and Keras turns it off under a distribution strategy (known crashes).")
RUN_EAGERLY = flags.DEFINE_boolean(
    "run_eagerly", False,
    "Run the steps as plain Python without tf.function, so pdb can stop inside training_step. "
    "Much slower; for debugging only.")
