"""The evaluator task: validates a training run's checkpoints as they appear, beside the workers.

Started with the training run's flags, either as a TF_CONFIG task of type "evaluator" (the
workers' TF_CONFIG lists it in its cluster; it is not a worker and joins none of their
collectives) or with `--evaluate_checkpoints` on any machine that sees `<model_dir>`, during the
run or after it. It follows `<model_dir>/checkpoints` with `tf.train.checkpoints_iterator`,
restores the module's weights of each new checkpoint (not the optimizer), runs `Trainer.validate`
(the code path of training's own validation) and writes, apart from the chief's files:

    <model_dir>/evaluator.json           every evaluated checkpoint's val_* metrics by step, and
                                         the best by --monitor
    <model_dir>/evaluator/metrics.csv    the same, one row per checkpoint
    <model_dir>/evaluator/best/step-N.*  the module weights of the best checkpoint
    <model_dir>/tensorboard/evaluator/   epoch/<metric> at each checkpoint's step, beside the
                                         train and val runs of the same charts

It exits after the checkpoint of the run's last step (epochs x optimizer steps per epoch, or
--max_steps, as the workers count them), or with an error when no new checkpoint appears for
`timeout_s` seconds. It takes the checkpoints in step order, also those saved while it was busy,
unless the chief deleted them first (`--keep_checkpoints`). A restarted evaluator continues:
it skips the steps that evaluator.json lists.
"""

import csv
import json
import os

from absl import logging
import tensorflow as tf

from trainer import reporting
from trainer import schedule
from trainer import trainer as trainer_lib
from trainer.callbacks import summaries

RECORD = "evaluator.json"
DIRECTORY = "evaluator"


def run(fitter: trainer_lib.Trainer, module, datamodule, *, model_dir: str,
        monitor: str = "val_accuracy", monitor_mode: str = "auto",
        timeout_s: float = 3600.0) -> dict:
    """Validates every new checkpoint of `<model_dir>/checkpoints` until the run's last step's.

    Args:
        fitter: the Trainer that validates (its loop config limits the validation batches).
        module, datamodule: built as for the training run (the same flags), not yet fitted.
        monitor: the val_* metric that picks the best checkpoint; monitor_mode: "max", "min" or
            "auto" (max for names containing "acc").
        timeout_s: give up when no new checkpoint appears for this many seconds.

    Returns:
        {"evaluated": checkpoints evaluated by this call, "last_step", "final_step", "best"}.

    Raises:
        ValueError: if `monitor` is not a validation metric or `monitor_mode` is unknown.
        TimeoutError: if no new checkpoint appears for `timeout_s` seconds before the last one.
    """
    if not monitor.startswith("val_"):
        raise ValueError(f"monitor ({monitor!r}) must be a validation metric (val_*): the "
                         "evaluator only validates")
    if monitor_mode not in ("auto", "max", "min"):
        raise ValueError(f"monitor_mode ({monitor_mode!r}) must be one of ['auto', 'max', 'min']")
    checkpoints = os.path.join(model_dir, "checkpoints")
    record = _Record(model_dir, monitor,
                     higher_is_better=monitor_mode == "max" or (monitor_mode == "auto"
                                                                and "acc" in monitor))
    with fitter.strategy.scope():
        if not module.built:  # Restoring needs the variables: built as the Trainer builds them.
            module(tf.zeros([1, *datamodule.input_shape]), training=False)
    final_step = _final_step(fitter, datamodule)
    logging.info("evaluator: following %s until the checkpoint of step %d (%d checkpoint(s) "
                 "evaluated before)", checkpoints, final_step, len(record.evaluations))
    evaluated = 0
    # Without a timeout_fn the iteration ends at the first wait longer than timeout_s.
    for _ in tf.train.checkpoints_iterator(checkpoints, timeout=timeout_s):
        for step, path in _unevaluated(checkpoints, after=record.last_step):
            logs = _validate(fitter, module, datamodule, path)
            if logs is None:
                continue
            improved = record.add(step, path, logs, module, final_step)
            evaluated += 1
            logging.info("evaluator | step %d of %d | %s%s", step, final_step,
                         reporting.format_logs(logs), " | the best so far" if improved else "")
        if record.last_step >= final_step:
            return {"evaluated": evaluated, "last_step": record.last_step,
                    "final_step": final_step, "best": record.best}
    raise TimeoutError(
        f"evaluator_timeout_s ({timeout_s:g}): no new checkpoint appeared in {checkpoints} for "
        f"{timeout_s:g} s; the last evaluated step is {record.last_step} of {final_step}. Start "
        "the evaluator again to continue: it skips the steps evaluator.json lists")


def _final_step(fitter, datamodule) -> int:
    """The run's last step, counted as the workers' Trainer counts it (`Trainer._setup`)."""
    loop = fitter.loop_config
    if loop.overfit_batches:
        datamodule.overfit(loop.overfit_batches)
    steps_per_epoch = schedule.optimizer_steps_per_epoch(
        datamodule.steps_per_epoch(), limit_train_batches=loop.limit_train_batches,
        accumulate_grad_batches=fitter.step_config.accumulate_grad_batches)
    return schedule.RunSchedule.for_fit(loop, steps_per_epoch=steps_per_epoch).total_steps


def _unevaluated(checkpoints: str, *, after: int) -> list[tuple[int, str]]:
    """(step, path) of the checkpoints in the directory newer than step `after`, in step order."""
    state = tf.train.get_checkpoint_state(checkpoints)
    paths = state.all_model_checkpoint_paths if state else []
    return sorted((step, path) for step, path in ((_step(p), p) for p in paths) if step > after)


def _step(path: str) -> int:
    """The step of a checkpoint: `Checkpointer.save` numbers each by the step, `ckpt-<step>`."""
    return int(path.rsplit("-", 1)[1])


def _validate(fitter, module, datamodule, path) -> dict | None:
    """The val_* metrics of the module's weights at `path`; None if the file is gone."""
    try:
        with fitter.strategy.scope():
            # The checkpoint also holds the optimizer, metrics and callbacks' state: not needed.
            tf.train.Checkpoint(module=module).read(
                path).assert_existing_objects_matched().expect_partial()
    except tf.errors.NotFoundError:
        logging.warning("evaluator: %s was deleted before it could be evaluated (the chief keeps "
                        "the newest --keep_checkpoints)", path)
        return None
    return reporting.metrics_only(fitter.validate(module, datamodule))


class _Record:
    """evaluator.json, and what follows from it: metrics.csv, the best weights, TensorBoard."""

    def __init__(self, model_dir, monitor, *, higher_is_better):
        self.path = os.path.join(model_dir, RECORD)
        self.directory = os.path.join(model_dir, DIRECTORY)
        self.tensorboard = os.path.join(model_dir, "tensorboard", DIRECTORY)
        self._writer = None  # Created at the first write: nothing is written before a checkpoint.
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.evaluations: list[dict] = []
        self.best: dict | None = None
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            self.evaluations, self.best = saved["evaluations"], saved["best"]

    @property
    def last_step(self) -> int:
        return max((entry["step"] for entry in self.evaluations), default=0)

    def add(self, step, checkpoint, logs, module, final_step) -> bool:
        """Records one checkpoint's metrics; keeps its weights if it is the best; returns that."""
        if self.monitor not in logs:
            raise ValueError(f"monitor ({self.monitor!r}) is not a validation metric of this "
                             f"module; validation logs {sorted(logs)}")
        self.evaluations.append({"step": step, "checkpoint": checkpoint, **logs})
        score = logs[self.monitor]
        improved = self.best is None or (score > self.best[self.monitor] if self.higher_is_better
                                         else score < self.best[self.monitor])
        if improved:
            weights = os.path.join(self.directory, "best", f"step-{step}")
            tf.train.Checkpoint(module=module).write(weights)
            if self.best:
                for file_name in tf.io.gfile.glob(self.best["weights"] + ".*"):
                    tf.io.gfile.remove(file_name)
            self.best = {"step": step, "checkpoint": checkpoint, "weights": weights, **logs}
        self._write(final_step)
        self._writer = self._writer or tf.summary.create_file_writer(self.tensorboard)
        with self._writer.as_default():  # A run beside train and val on the same charts.
            for name, value in logs.items():
                summaries.scalar(f"epoch/{name.removeprefix('val_')}", value, step)
        self._writer.flush()
        return improved

    def _write(self, final_step):
        """Rewrites evaluator.json and metrics.csv whole, each through a temporary file, so that
        a reader never sees half a file."""
        _replace(self.path, lambda f: json.dump(
            {"monitor": self.monitor, "higher_is_better": self.higher_is_better,
             "final_step": final_step, "best": self.best, "evaluations": self.evaluations},
            f, indent=2))
        columns = ["step"] + list(dict.fromkeys(
            name for entry in self.evaluations for name in entry
            if name not in ("step", "checkpoint")))
        os.makedirs(self.directory, exist_ok=True)
        _replace(os.path.join(self.directory, "metrics.csv"), lambda f: _write_csv(
            f, columns, self.evaluations))


def _write_csv(f, columns, rows):
    writer = csv.DictWriter(f, columns, extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)


def _replace(path, write):
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as f:
        write(f)
    os.replace(temporary, path)
