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

from absl import logging
import tensorflow as tf

from trainer import files


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

    def track(self, *, optional: dict | None = None, **trackables) -> None:
        """Names what the checkpoints hold; call once, after every variable exists.

        `optional` holds step bookkeeping that a resumed run may gain with a flag (the fp16 loss
        scale, the count of skipped steps): restored where the checkpoint has it, kept at its
        start value where it does not. Everything else must be in the checkpoint.
        """
        optional = optional or {}
        directory = self.directory if self.is_chief else tempfile.mkdtemp(prefix="checkpoints-")
        self._checkpoint = tf.train.Checkpoint(**trackables, **optional)
        self._required = tf.train.Checkpoint(**trackables)
        self._optional = tf.train.Checkpoint(**optional)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, self.max_to_keep)
        if self.is_chief:  # A save cut short by a kill leaves its shards in ckpt-<N>_temp/.
            for leftover in tf.io.gfile.glob(os.path.join(self.directory, "ckpt-*_temp")):
                tf.io.gfile.rmtree(leftover)

    @property
    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def restore(self, path: str | None = None) -> str | None:
        """Restores `path`, or else the newest checkpoint that restores; returns the restored
        path (None: there is no checkpoint). Call inside `strategy.scope()`.

        A given `path` must restore. Otherwise the checkpoints in the directory are tried newest
        first: one whose files are missing or damaged is passed over, with a warning, and the
        next older one restored (the steps after it are trained again). A directory that holds
        checkpoints of which none restores is an error: a run never starts from step 0 over them.

        Raises:
            ValueError: naming the path(s) and what is wrong: missing, unreadable, a directory,
                from another model.
        """
        if path:
            if tf.io.gfile.isdir(path):
                raise ValueError(f"ckpt_path ({path}) is a directory; pass one checkpoint, e.g. "
                                 f"{tf.train.latest_checkpoint(path) or path + '/ckpt-<step>'}")
            self._restore(path)
            return path
        failures = []
        for candidate in self._candidates():
            try:
                self._restore(candidate)
            except ValueError as error:
                failures.append(str(error))
                continue
            if failures:
                logging.warning("%s; resumed from %s instead, the newest checkpoint that "
                                "restores: the steps after it are trained again",
                                "; ".join(failures), os.path.basename(candidate))
            return candidate
        if failures:
            raise ValueError(f"{'; '.join(failures)}. No checkpoint in {self.directory} can be "
                             "restored; --fresh_start sets this run aside and starts anew")
        return None

    def _candidates(self) -> list[str]:
        """Every checkpoint the directory lists or holds files of, newest step first."""
        state = tf.train.get_checkpoint_state(self.directory)
        listed = list(state.all_model_checkpoint_paths) if state else []
        found = [name[:-len(".index")] for name in tf.io.gfile.glob(
            os.path.join(self.directory, "ckpt-*.index"))]
        steps = {int(path.rsplit("-", 1)[1]) for path in listed + found}
        return [os.path.join(self.directory, f"ckpt-{step}") for step in sorted(steps, reverse=True)]

    def _restore(self, path: str) -> None:
        if not tf.io.gfile.exists(path + ".index"):
            raise ValueError(f"cannot restore checkpoint {path}: its files are missing")
        try:
            self._required.restore(path).assert_existing_objects_matched()
            self._optional.restore(path).expect_partial()
        except Exception as error:  # A damaged file surfaces as OpError, IndexError, ValueError...
            raise ValueError(f"cannot restore checkpoint {path}: {_first_line(error)}") from None

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


def _first_line(error) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class BestModels:
    """Keeps the `top_k` best validated models by a monitored metric.

    The model (trainer/model_weights.py: the averages under EMA) goes to `<directory>/step-<S>`,
    named by the optimizer step it was validated at (several validations can fall in one epoch);
    `<directory>/best.json` lists the kept ones, best first, with their epoch, step, score and
    file name. Names are relative to `directory`, so a copied or moved run directory keeps its
    own weights. The file survives restarts: a resumed run goes on ranking against it, and ranks
    a step it validates again in place of that step's old entry. A resumed run with another
    monitor or mode is refused: the recorded scores measure something else.

    Args:
        directory: e.g. `<model_dir>/best`.
        monitor: the logged metric to rank by, e.g. "val_accuracy".
        mode: "max", "min", or "auto" (max for names containing "acc", else min).
        top_k: how many to keep (>= 1).
        is_chief: whether this process writes to `directory`. The other workers of a
            multi-worker run write their weights to a temporary directory, but read the
            ranking from `directory`: every worker must make the same save decisions, because
            saving takes part in collectives.

    Raises:
        ValueError: if `best.json` is damaged, or ranks by another monitor or mode.
    """

    FILE = "best.json"

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
        """{"epoch", "step", "score", "path"} of the best validation so far ("path" relative to
        `directory`), or None."""
        return self.ranking[0] if self.ranking else None

    def update(self, model, epoch: int, step: int, logs: dict[str, float]) -> bool:
        """Saves the run's model if it ranks in the top k; returns whether it did. A non-finite
        score is never ranked.

        Args:
            model: the run's `ModelWeights`, holding the model that produced `logs`.
            epoch: 0-based; step: the optimizer step; logs: the scores.

        Raises:
            ValueError: if the monitored metric is not in `logs`.
        """
        if self.monitor not in logs:
            raise ValueError(f"monitor ({self.monitor!r}) is not a logged metric; the "
                             f"validation logged {sorted(k for k in logs if not k.endswith('seconds'))}")
        entry = {"epoch": epoch + 1, "step": step, "score": float(logs[self.monitor]),
                 "path": f"step-{step}"}
        if not math.isfinite(entry["score"]):
            return False  # NaN or Inf ranks nowhere: a diverged model is never "the best".
        # A resumed run may validate a step again: its new entry replaces the old one.
        replaced = [e for e in self.ranking if e["step"] == step]
        others = [e for e in self.ranking if e["step"] != step]
        ranking = sorted(others + [entry], key=lambda e: e["score"],
                         reverse=self.higher_is_better)
        kept = ranking[:self.top_k]
        if entry in kept:
            model.save(os.path.join(self._write_directory, entry["path"]))
        for dropped in ranking[self.top_k:] + replaced:
            if dropped["path"] == entry["path"] and entry in kept:
                continue  # Rewritten just now with this validation's weights.
            # Only this process's own copies: another worker's weights (the chief's, listed in
            # the best.json a resumed run read) are not in its write directory.
            for file_name in tf.io.gfile.glob(
                    os.path.join(self._write_directory, dropped["path"]) + ".*"):
                tf.io.gfile.remove(file_name)
        if kept != self.ranking:
            self.ranking = kept
            if self.is_chief:
                files.write_json(os.path.join(self.directory, self.FILE),
                                 {"monitor": self.monitor, "higher_is_better": self.higher_is_better,
                                  "ranking": self.ranking})
        return entry in kept

    def restore_best(self, model) -> dict | None:
        """Makes the best ranked weights the run's model (`ModelWeights.load`); returns the
        best entry (None: none saved)."""
        if self.best:
            model.load(self.path_of(self.best))
        return self.best

    def path_of(self, entry: dict) -> str:
        """Where the weights of a ranking entry are: this process's own copy if it has one (the
        other workers' temporary directory), else the chief's, in `directory`."""
        own = os.path.join(self._write_directory, entry["path"])
        return own if tf.io.gfile.exists(own + ".index") else os.path.join(self.directory,
                                                                          entry["path"])

    def _load(self):
        path = os.path.join(self.directory, self.FILE)
        if not os.path.exists(path):
            return []
        recorded = files.read_json(path, what="the ranking of the best models", fix=(
            f"delete {path} (and the step-* weights beside it) to rank anew from the next "
            "validation on"))
        monitor, higher = recorded["monitor"], recorded["higher_is_better"]
        if (monitor, higher) != (self.monitor, self.higher_is_better):
            order = {True: "max", False: "min"}
            raise ValueError(
                f"monitor ({self.monitor!r}, mode {order[self.higher_is_better]}) differs from the "
                f"ranking in {path} ({monitor!r}, mode {order[higher]}): its scores measure "
                f"something else. Resume with --monitor={monitor} "
                f"--monitor_mode={order[higher]}, or delete {self.directory} to rank anew "
                "from the next validation on")
        # Runs written before names were relative stored absolute paths: keep the file name.
        return [{**entry, "path": os.path.basename(entry["path"])}
                for entry in recorded["ranking"]]
