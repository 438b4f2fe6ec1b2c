"""What a command-line run writes into its model_dir besides checkpoints: the flags that repeat
it (flags.txt) and its results (results.json, timings.json, history.json, curves.png); and
which of its files and flags go to a tracker (MLflow's artifacts, TensorBoard's HParams).

Every file is written atomically (trainer/files.py), by the chief only.
"""

import math
import os

from absl import logging
import tensorflow as tf

from trainer import files
from trainer import reporting
from trainer.vision import plots

FLAGFILE = "flags.txt"
# Flags that say where a run lives or what to do instead of training, not what it trains: a
# replay into a new --model_dir must not resume, set aside or explain the recorded run.
NOT_REPLAYED = ("model_dir", "fresh_start", "ckpt_path", "explain", "selftest",
                "selftest_perturb_replica", "mlflow_run_name")
# The flags that define what a run trains, for TensorBoard's HParams dashboard (MLflow gets all).
HPARAMS = ("model", "dataset", "train_split", "batch_size", "epochs", "max_steps",
           "learning_rate", "lr_schedule", "warmup_steps", "weight_decay", "dropout",
           "label_smoothing", "augment", "width_multiplier", "precision", "seed",
           "accumulate_grad_batches", "gradient_clip_val", "ema_decay", "sync_batchnorm")
# The files of a finished run that a tracker keeps as artifacts, when they were written.
ARTIFACTS = (FLAGFILE, "results.json", "timings.json", "history.json", "metrics.csv",
             "curves.png", "confusion_matrix.png", "predictions.csv", "lr_find.csv",
             "lr_find.png", "export")


def flags_text(flag_values, package: str) -> str:
    """The flags defined in `package`'s modules, as this run resolved them, in absl's flagfile
    format: `--flagfile=<model_dir>/flags.txt --model_dir=<new>` repeats the run."""
    by_module = flag_values.flags_by_module_dict()
    lines = [flag.serialize() for module, module_flags in sorted(by_module.items())
             if module.startswith(package + ".") for flag in module_flags
             if flag.name not in NOT_REPLAYED]
    return "\n".join(line for line in lines if line)  # An unset flag (None) serializes to "".


def flag_values(flag_values, package: str, *, leave_out=()) -> dict[str, str]:
    """{name: repr(value)} of the flags defined in `package`'s modules, but those in `leave_out`."""
    return {flag.name: repr(flag.value)
            for module, module_flags in flag_values.flags_by_module_dict().items()
            if module.startswith(package + ".") for flag in module_flags
            if flag.name not in leave_out}


def write_flagfile(model_dir: str, text: str) -> None:
    """Writes `<model_dir>/flags.txt`: the run's flags (`flags_text`), to repeat it."""
    path = os.path.join(model_dir, FLAGFILE)
    repeat = f"python -m trainer.main --flagfile={path} --model_dir=<new directory>"
    files.write_text(path, f"# The flags of the run in {model_dir}. Repeat it with\n"
                           f"#   {repeat}\n{text}\n")


def parse_flags(text: str) -> dict[str, str]:
    """{name: value} of flags in flagfile format (`flags_text`, flags.txt): `--name=value` as
    written, absl's booleans `--name` as "true" and `--noname` as "false" (so a boolean flag
    whose name starts with "no" would be misread: this project has none)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            continue  # flags.txt's comment lines.
        name, equals, value = line[2:].partition("=")
        if equals:
            values[name] = value
        elif name.startswith("no") and name[2:]:
            values[name[2:]] = "false"
        else:
            values[name] = "true"
    return values


def write_outputs(model_dir: str, results: dict, history: list[dict], tracker=None) -> None:
    """Writes results.json, timings.json, history.json and curves.png; then hands the run's
    files (ARTIFACTS) to `tracker`'s `log_artifact`, if given."""
    # Metrics and timings apart: with --deterministic, two runs write identical results.json.
    metrics = reporting.metrics_only(results)
    nonfinite = sorted(key for key, value in metrics.items()
                       if isinstance(value, float) and not math.isfinite(value))
    if nonfinite:  # Written as null (strict JSON has no NaN); this says which and why.
        metrics["nonfinite"] = nonfinite
    files.write_json(os.path.join(model_dir, "results.json"), metrics)
    files.write_json(os.path.join(model_dir, "timings.json"), reporting.timings_only(results))
    files.write_json(os.path.join(model_dir, "history.json"), history)  # One entry per epoch.
    logging.info("wrote %s", os.path.join(model_dir, "results.json"))
    curves = plots.plot_curves(history, os.path.join(model_dir, "curves.png"))
    if curves:
        logging.info("wrote %s", curves)
    if tracker:
        for path in (os.path.join(model_dir, name) for name in ARTIFACTS):
            if tf.io.gfile.exists(path):
                tracker.log_artifact(path)
