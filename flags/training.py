"""Flags that control the training run itself."""

from absl import flags

EPOCHS = flags.DEFINE_integer(
    "epochs", 10, "Passes over the training split (>= 1).", lower_bound=1)
SEED = flags.DEFINE_integer(
    "seed", 0, "Seeds Python, NumPy and TensorFlow (initial weights) and the data shuffle.")
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None,
    "Directory for everything a run writes (results.json, ...); default runs/<dataset>-<model>.")
STEPS_PER_LOOP = flags.DEFINE_integer(
    "steps_per_loop", 100,
    "Training steps run per tf.function call (>= 1). Larger values save Python dispatch and host "
    "syncs per step; progress lines and metrics are read once per loop.", lower_bound=1)
RUN_EAGERLY = flags.DEFINE_boolean(
    "run_eagerly", False,
    "Run the steps as plain Python without tf.function, so pdb can stop inside training_step. "
    "Much slower; for debugging only.")
