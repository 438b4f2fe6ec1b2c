"""The evaluator task: validates a training run's checkpoints as they appear, beside the workers.

Started with the training run's flags, either as a TF_CONFIG task of type "evaluator" (the
workers' TF_CONFIG lists it in its cluster; it is not a worker and joins none of their
collectives) or with `--evaluate_checkpoints` on any machine that sees `<model_dir>`, during the
run or after it. It follows `<model_dir>/checkpoints` with `tf.train.checkpoints_iterator`,
restores the model of each new checkpoint (the module and the optimizer, whose moving averages
are the model under EMA: trainer/model_weights.py), runs `Trainer.validate` (the code path of
training's own validation) and writes, apart from the chief's files:

    <model_dir>/evaluator.json           every evaluated checkpoint's val_* metrics by step, and
                                         the best by --monitor
    <model_dir>/evaluator/metrics.csv    the same, one row per checkpoint
    <model_dir>/evaluator/best/step-N.*  the model of the best checkpoint
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
import time

from absl import logging
import tensorflow as tf

from trainer import files
from trainer import reporting
from trainer import schedule
from trainer import trainer as trainer_lib
from trainer.callbacks import summaries

RECORD = "evaluator.json"
DIRECTORY = "evaluator"
_POLL_S = 5.0  # How often the evaluator looks for a new checkpoint, or for the run's end.


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
    fitter.setup(module, datamodule)  # The variables to restore into, built as for training.
    final_step = _final_step(fitter, datamodule)
    logging.info("evaluator: following %s until the checkpoint of step %d (%d checkpoint(s) "
                 "evaluated before)", checkpoints, final_step, len(record.evaluations))
    evaluated = 0
    waiting_since = time.monotonic()

    def stop_waiting():  # Asked after every poll without a new checkpoint.
        return (_training_ended(model_dir, record.last_step) is not None
                or time.monotonic() - waiting_since > timeout_s)

    for _ in tf.train.checkpoints_iterator(checkpoints, timeout=min(timeout_s, _POLL_S),
                                           timeout_fn=stop_waiting):
        for step, path in _unevaluated(checkpoints, after=record.last_step):
            logs = _validate(fitter, module, datamodule, path)
            if logs is None:
                continue
            improved = record.add(step, logs, fitter.model_weights, final_step)
            evaluated += 1
            logging.info("evaluator | step %d of %d | %s%s", step, final_step,
                         reporting.format_logs(logs), " | the best so far" if improved else "")
        waiting_since = time.monotonic()
        if record.last_step >= final_step:
            break
    ended = _training_ended(model_dir, record.last_step)
    if record.last_step < final_step and ended is None:
        raise TimeoutError(
            f"evaluator_timeout_s ({timeout_s:g}): no new checkpoint appeared in {checkpoints} "
            f"for {timeout_s:g} s; the last evaluated step is {record.last_step} of {final_step}. "
            "Start the evaluator again to continue: it skips the steps evaluator.json lists")
    if ended is not None and record.last_step < final_step:
        logging.info("evaluator: the training run ended at step %d (%s): every checkpoint of it "
                     "is evaluated", record.last_step, ended)
    return {"evaluated": evaluated, "last_step": record.last_step, "final_step": final_step,
            "best": record.best}


def _training_ended(model_dir: str, last_step: int) -> str | None:
    """Why the training run in `model_dir` ended, once its last checkpoint is `last_step`'s: the
    chief writes results.json after its last checkpoint (a run stopped early by early stopping,
    max_time or divergence ends before its final step). None while it may still train."""
    path = os.path.join(model_dir, "results.json")
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not latest or not os.path.exists(path) or _step(latest) != last_step:
        return None
    if os.path.getmtime(path) < os.path.getmtime(latest + ".index"):
        return None  # From an earlier fit of this model_dir: the run trains on.
    with open(path) as f:
        results = json.load(f)
    return results.get("stop_reason", "finished") if results.get("steps") == last_step else None


def _final_step(fitter, datamodule) -> int:
    """The run's last step, counted as the workers' Trainer counts it (`Trainer.setup`)."""
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
    """The val_* metrics of the model at `path`; None if the file is gone."""
    try:
        with fitter.strategy.scope():
            fitter.model_weights.read_checkpoint(path)
    except tf.errors.NotFoundError:
        logging.warning("evaluator: %s was deleted before it could be evaluated (the chief keeps "
                        "the newest --keep_checkpoints)", path)
        return None
    return reporting.metrics_only(fitter.validate(module, datamodule))


class _Record:
    """evaluator.json, and what follows from it: metrics.csv, the best weights, TensorBoard."""

    def __init__(self, model_dir, monitor, *, higher_is_better):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, RECORD)
        self.directory = os.path.join(model_dir, DIRECTORY)
        self.tensorboard = os.path.join(model_dir, "tensorboard", DIRECTORY)
        self._writer = None  # Created at the first write: nothing is written before a checkpoint.
        self.monitor = monitor
        self.higher_is_better = higher_is_better
        self.evaluations: list[dict] = []
        self.best: dict | None = None
        if os.path.exists(self.path):
            saved = files.read_json(self.path, what="the evaluator's record", fix=(
                "delete it (the evaluator then evaluates every checkpoint again)"))
            self.evaluations, self.best = saved["evaluations"], saved["best"]

    @property
    def last_step(self) -> int:
        return max((entry["step"] for entry in self.evaluations), default=0)

    def add(self, step, logs, model, final_step) -> bool:
        """Records the metrics of checkpoint `ckpt-<step>`; keeps its model (`ModelWeights`) if
        it is the best; returns whether it is."""
        if self.monitor not in logs:
            raise ValueError(f"monitor ({self.monitor!r}) is not a validation metric of this "
                             f"module; validation logs {sorted(logs)}")
        # Paths relative to the run directory: a copied or moved one still finds its files.
        self.evaluations.append({"step": step, "checkpoint": f"checkpoints/ckpt-{step}", **logs})
        score = logs[self.monitor]
        improved = self.best is None or (score > self.best[self.monitor] if self.higher_is_better
                                         else score < self.best[self.monitor])
        if improved:
            weights = f"{DIRECTORY}/best/step-{step}"
            model.save(os.path.join(self.model_dir, weights))
            if self.best:
                for file_name in tf.io.gfile.glob(
                        os.path.join(self.model_dir, self.best["weights"]) + ".*"):
                    tf.io.gfile.remove(file_name)
            self.best = {"step": step, "checkpoint": f"checkpoints/ckpt-{step}",
                         "weights": weights, **logs}
        self._write(final_step)
        self._writer = self._writer or tf.summary.create_file_writer(self.tensorboard)
        with self._writer.as_default():  # A run beside train and val on the same charts.
            for name, value in logs.items():
                summaries.scalar(f"epoch/{name.removeprefix('val_')}", value, step)
        self._writer.flush()
        return improved

    def _write(self, final_step):
        """Rewrites evaluator.json and metrics.csv whole and atomically (trainer/files.py), so
        that a reader never sees half a file."""
        files.write_json(self.path, {"monitor": self.monitor,
                                     "higher_is_better": self.higher_is_better,
                                     "final_step": final_step, "best": self.best,
                                     "evaluations": self.evaluations})
        columns = ["step"] + list(dict.fromkeys(
            name for entry in self.evaluations for name in entry
            if name not in ("step", "checkpoint")))
        with files.atomic_path(os.path.join(self.directory, "metrics.csv")) as temporary:
            with open(temporary, "w", newline="") as f:
                writer = csv.DictWriter(f, columns, extrasaction="ignore", restval="")
                writer.writeheader()
                writer.writerows(self.evaluations)
