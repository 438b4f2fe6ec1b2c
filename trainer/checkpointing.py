"""Full-state checkpoints, so that a killed run continues exactly where it stopped.

What a checkpoint holds: every module variable (BatchNorm statistics and Dropout's seed state
included, see `untracked_variables`), the optimizer (its slots and `iterations`, the run's one step counter) and the running
means of the epoch's training metrics. What it does not need: the data position. Epoch e's order
and augmentation are pure functions of (seed, e), so the step count alone says where to resume:
epoch = step // steps_per_epoch, and that epoch's first step % steps_per_epoch batches are skipped.

`tf.train.CheckpointManager` writes a checkpoint's files before it moves the "latest" pointer, so
a crash while saving leaves the previous checkpoint as the latest.
"""

import json
import math
import os
import shutil
import tempfile

import tensorflow as tf

from trainer import files

RUN_CONFIG = "run_config.json"


class Checkpointer:
    """Saves and restores a run's state in `<directory>`, keeping the newest `max_to_keep`.

    Under multi-worker training every worker must call `save` (it is a collective); only the chief
    writes to `directory`, the others write to a temporary directory that they delete.

    Args:
        directory: where checkpoints go, e.g. `<model_dir>/checkpoints`.
        every_n_steps: also save every this many optimizer steps (0: only at epoch ends).
        max_to_keep: how many checkpoints to keep on disk.
        is_chief: whether this process writes the real checkpoints.
    """

    def __init__(self, directory: str, *, every_n_steps: int = 0, max_to_keep: int = 3,
                 is_chief: bool = True):
        if every_n_steps < 0:
            raise ValueError(f"checkpoint_every_steps ({every_n_steps}) must be >= 0")
        if max_to_keep < 1:
            raise ValueError(f"keep_checkpoints ({max_to_keep}) must be at least 1")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.max_to_keep = max_to_keep
        self.is_chief = is_chief
        self._manager = None

    def track(self, **trackables) -> None:
        """Names what the checkpoints hold; call once, after every variable exists."""
        directory = self.directory if self.is_chief else tempfile.mkdtemp(prefix="checkpoints-")
        self._checkpoint = tf.train.Checkpoint(**trackables)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, self.max_to_keep)

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def restore(self, path: str | None = None) -> str | None:
        """Restores `path`, or the latest checkpoint; returns what was restored (None: nothing).

        Call inside `strategy.scope()`. Every tracked object must match the checkpoint.

        Raises:
            ValueError: naming the path, if it is missing, unreadable or from another model.
        """
        path = path or self.latest
        if path is None:
            return None
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as error:  # A damaged file surfaces as OpError, IndexError, ValueError...
            raise ValueError(f"cannot restore checkpoint {path}: {_first_line(error)}") from None
        return path

    def due(self, step: int) -> bool:
        """Whether the step cadence asks for a checkpoint at `step`."""
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def save(self, step: int) -> str:
        path = self._manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self._manager.directory, ignore_errors=True)
        return path


class RunRecord(tf.train.experimental.PythonState):
    """The run's record, kept in every checkpoint so that it survives any kill and resume.

    `history` has one entry per finished epoch ({"epoch": 1-based, "step": the optimizer step it
    ended at, then its logs}); `epoch_validation` holds the current epoch's last mid-epoch
    validation, which its history entry will report. A resumed run therefore writes the same
    history.json, results.json and curves as one that never stopped.
    """

    def __init__(self):
        self.history: list[dict] = []
        self.epoch_validation: dict[str, float] = {}

    def end_epoch(self, epoch: int, step: int, logs: dict) -> None:
        """Records epoch `epoch` (0-based), ended at optimizer step `step`, with its logs. An
        epoch cut short (max_time) and finished by a resumed run gets one entry, the last."""
        self.history[:] = [entry for entry in self.history if entry["epoch"] != epoch + 1]
        self.history.append({"epoch": epoch + 1, "step": step, **logs})
        self.epoch_validation = {}

    def last_logs(self) -> dict:
        """The last finished epoch's logs, without its epoch and step ({} before the first)."""
        last = self.history[-1] if self.history else {}
        return {key: value for key, value in last.items() if key not in ("epoch", "step")}

    def serialize(self) -> str:
        return json.dumps({"history": self.history, "epoch_validation": self.epoch_validation})

    def deserialize(self, string_value) -> None:
        saved = json.loads(string_value)
        self.history[:] = saved["history"]  # In place: callers may hold the list.
        self.epoch_validation = saved["epoch_validation"]


def untracked_variables(module) -> list:
    """The module's variables that `tf.train.Checkpoint(module=module)` would not save.

    Keras 3 keeps the state of its random seed generators (e.g. Dropout's) outside TensorFlow's
    object graph; without it a resumed run would redraw the dropout masks of the first steps.
    """
    reachable = {id(trackable) for trackable in tf.train.TrackableView(module).descendants()}
    return [v for v in module.variables
            if id(v) not in reachable and id(v.value) not in reachable]


def check_run_config(model_dir: str, config: dict) -> None:
    """Records `config` in `<model_dir>/run_config.json`, or checks it against the recorded one.

    Raises:
        ValueError: naming each setting that differs from the run already in `model_dir`.
    """
    path = os.path.join(model_dir, RUN_CONFIG)
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        differences = [f"{key}: {recorded.get(key)!r} there, {value!r} now"
                       for key, value in config.items() if recorded.get(key) != value]
        if differences:
            raise ValueError(
                f"model_dir ({model_dir}) holds a run with other settings ({'; '.join(differences)}). "
                "Use another --model_dir, or --fresh_start to set the old run aside")
        return
    os.makedirs(model_dir, exist_ok=True)
    files.write_json(path, config)


def set_aside(model_dir: str) -> str | None:
    """Renames an existing `model_dir` to `<model_dir>.old-N` (never deletes it); returns the new name."""
    if not os.path.exists(model_dir) or not os.listdir(model_dir):
        return None
    number = 1
    while os.path.exists(f"{model_dir}.old-{number}"):
        number += 1
    os.rename(model_dir, f"{model_dir}.old-{number}")
    return f"{model_dir}.old-{number}"


def _first_line(error) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class BestModels:
    """Keeps the module weights of the `top_k` best validations by a monitored metric.

    Weights go to `<directory>/step-<S>` (the optimizer step they were validated at: several
    validations can fall in one epoch); `<directory>/best.json` lists the kept ones, best first,
    with their epoch, step and score, and survives restarts: a resumed run goes on ranking
    against it, and ranks a step it validates again in place of that step's old entry.

    Args:
        directory: e.g. `<model_dir>/best`.
        monitor: the logged metric to rank by, e.g. "val_accuracy".
        mode: "max", "min", or "auto" (max for names containing "acc", else min).
        top_k: how many to keep (>= 1).
        is_chief: whether this process writes to `directory`. The other workers of a
            multi-worker run write their weights to a temporary directory, but read the
            ranking from `directory`: every worker must make the same save decisions, because
            saving takes part in collectives.
    """

    def __init__(self, directory: str, *, monitor: str = "val_accuracy", mode: str = "auto",
                 top_k: int = 1, is_chief: bool = True):
        if mode not in ("auto", "max", "min"):
            raise ValueError(f"monitor_mode ({mode!r}) must be one of ['auto', 'max', 'min']")
        if top_k < 1:
            raise ValueError(f"save_top_k ({top_k}) must be at least 1")
        self.directory = directory
        self.monitor = monitor
        self.higher_is_better = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.top_k = top_k
        self.is_chief = is_chief
        self.ranking: list[dict] = self._load()
        # Other workers keep their copies until the run restores the best; the temporary
        # directory is deleted when this object is, at the latest when the process exits.
        self._temporary = None if is_chief else tempfile.TemporaryDirectory(prefix="best-")
        self._write_directory = directory if is_chief else self._temporary.name
        os.makedirs(self._write_directory, exist_ok=True)

    @property
    def best(self) -> dict | None:
        """{"epoch", "step", "score", "path"} of the best validation so far, or None."""
        return self.ranking[0] if self.ranking else None

    def update(self, module, epoch: int, step: int, logs: dict[str, float]) -> bool:
        """Saves the module's weights if they rank in the top k; returns whether it did. A
        non-finite score is never ranked.

        Call it with the weights that produced `logs`, before anything changes them.

        Raises:
            ValueError: if the monitored metric is not in `logs`.
        """
        if self.monitor not in logs:
            raise ValueError(f"monitor ({self.monitor!r}) is not a logged metric; the "
                             f"validation logged {sorted(k for k in logs if not k.endswith('seconds'))}")
        entry = {"epoch": epoch + 1, "step": step, "score": float(logs[self.monitor]),
                 "path": os.path.join(self._write_directory, f"step-{step}")}
        if not math.isfinite(entry["score"]):
            return False  # NaN or Inf ranks nowhere: a diverged model is never "the best".
        # A resumed run may validate a step again: its new entry replaces the old one.
        replaced = [e for e in self.ranking if e["step"] == step]
        others = [e for e in self.ranking if e["step"] != step]
        ranking = sorted(others + [entry], key=lambda e: e["score"],
                         reverse=self.higher_is_better)
        kept = ranking[:self.top_k]
        if entry in kept:
            tf.train.Checkpoint(module=module).write(entry["path"])
        for dropped in ranking[self.top_k:] + replaced:
            if dropped["path"] == entry["path"] and entry in kept:
                continue  # Rewritten just now with this validation's weights.
            if os.path.dirname(dropped["path"]) != self._write_directory:
                continue  # Another worker's weights (the chief's, read from best.json): not ours.
            for file_name in tf.io.gfile.glob(dropped["path"] + ".*"):
                tf.io.gfile.remove(file_name)
        if kept != self.ranking:
            self.ranking = kept
            if self.is_chief:
                files.write_json(os.path.join(self.directory, "best.json"),
                                 {"monitor": self.monitor, "higher_is_better": self.higher_is_better,
                                  "ranking": self.ranking})
        return entry in kept

    def restore_best(self, module) -> dict | None:
        """Loads the best epoch's weights into `module`; returns its entry (None: none saved)."""
        if self.best:
            tf.train.Checkpoint(module=module).read(self.best["path"]).assert_existing_objects_matched()
        return self.best

    def _load(self):
        path = os.path.join(self.directory, "best.json")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return json.load(f)["ranking"]
