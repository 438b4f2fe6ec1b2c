"""Flags that choose what a run shows and writes while it trains, and where it is tracked."""

from absl import flags

from flags import checks

PROGRESS_BAR = flags.DEFINE_boolean(
    "progress_bar", True,
    "Show a progress bar per epoch (steps, images/s, ETA, running metrics), redrawn in place on a "
    "terminal and printed as a line every --progress_every_s seconds otherwise.")
PROGRESS_EVERY_S = flags.DEFINE_float(
    "progress_every_s", 20.0,
    "Seconds between progress lines when the output is not a terminal (>= 0).", lower_bound=0.0)
MODEL_SUMMARY = flags.DEFINE_boolean(
    "model_summary", True, "Print the model's layers and parameter counts before training.")
LOG_EVERY_N_STEPS = flags.DEFINE_integer(
    "log_every_n_steps", 50,
    "Optimizer steps between per-step log entries (>= 1): training loss, accuracy and learning "
    "rate in TensorBoard and metrics.csv.", lower_bound=1)
TENSORBOARD = flags.DEFINE_boolean(
    "tensorboard", True,
    "Write TensorBoard summaries to <model_dir>/tensorboard: per-step and per-epoch metrics, "
    "images/s, the run's flags, sample validation images, a test confusion matrix and, with the "
    "tensorboard package installed, the hyperparameters for the HParams dashboard.")
CSV_LOG = flags.DEFINE_boolean(
    "csv_log", True,
    "Write <model_dir>/metrics.csv: one row per logged step and per epoch.")

MLFLOW_TRACKING_URI = flags.DEFINE_string(
    "mlflow_tracking_uri", None,
    "Also log the run to MLflow at this tracking URI: a tracking server (http://host:5000) or a "
    "local database (sqlite:///mlflow.db). The flags as params, the metrics against the "
    "optimizer step, the run's files as artifacts (chief only); a resumed run continues its "
    "MLflow run. Needs pip install \".[mlflow]\". Default: no MLflow.")
MLFLOW_EXPERIMENT = flags.DEFINE_string(
    "mlflow_experiment", "Default",
    "The MLflow experiment the run belongs to; created if the tracking store lacks it.")
MLFLOW_RUN_NAME = flags.DEFINE_string(
    "mlflow_run_name", None, "The MLflow run's name; default: the name of --model_dir.")

checks.require_finite(PROGRESS_EVERY_S)
