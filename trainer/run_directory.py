"""The run directory (`--model_dir`), where a user's work lives, and what keeps it sound.

    RunLock         one process trains in a run directory at a time: `<model_dir>/.lock` names
                    it (host, pid, start); a lock left by a process that is gone is taken over
    check_settings  the settings that must match to resume a run, against run_config.json
    record_settings run_config.json and flags.txt are written once the run has really started
                    (the module built, the checkpoint restored), never by a run that fails first
    set_aside       `--fresh_start`: the old run becomes `<model_dir>.old-N`, never deleted
    check_directory a path that must be a directory, or not exist yet

Every path a run writes inside its directory is relative to it (the checkpoint state file,
best/best.json, evaluator.json, the export link), so a copied or moved run directory is a
complete run of its own. docs/checkpoints.md lists what a user may do to a run directory.
"""

import errno
import json
import os
import socket
import time

from absl import logging
import tensorflow as tf

from trainer import files

RUN_CONFIG = "run_config.json"
LOCK = ".lock"


def check_directory(path: str, flag: str) -> None:
    """Raises ValueError, naming `flag`, if `path` exists and is not a directory."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise ValueError(f"{flag} ({path}) is a file, not a directory: pass a directory (it is "
                         "created if it does not exist)")


class RunLock:
    """Holds `<model_dir>/.lock` while this process trains in `model_dir`.

    Under multi-worker training the chief takes it for the whole cluster; the evaluator task
    never does (it only reads). The lock is released when training ends, also on an error.

    Raises (from `acquire`):
        ValueError: naming the other process (host, pid, start), if one trains there now.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK)
        self._held = False

    def acquire(self) -> None:
        tf.io.gfile.makedirs(self.model_dir)
        mine = _process_identity(self.model_dir)
        for _ in range(2):  # A stale lock is removed once, then taken like a free one.
            if _create(self.path, json.dumps(mine)):
                self._held = True
                return
            holder = _read_lock(self.path)
            if holder is not None and not _is_stale(holder, mine):
                raise ValueError(_held_message(self.model_dir, self.path, holder))
            logging.info("%s: took over the lock of %s", self.model_dir, _describe(holder)
                         if holder else "a process that left it unreadable")
            _remove(self.path)
        raise ValueError(f"could not take the lock {self.path}: another process takes and "
                         "leaves it at the same time; run again")

    def release(self) -> None:
        if self._held:
            _remove(self.path)
            self._held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()


def _create(path: str, text: str) -> bool:
    """Creates the file `path` holding `text` unless it exists; returns whether it did. On
    local disk in one step (O_EXCL). Object stores have no exclusive create: there two
    processes starting within the same moment could both take the lock (said in the docs)."""
    if not files.is_local(path):
        if tf.io.gfile.exists(path):
            return False
        files.write_text(path, text)
        return True
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as f:
        f.write(text)
    return True


def _process_identity(model_dir: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
            "process_start": _process_start(os.getpid()),
            "model_dir": os.path.realpath(model_dir) if files.is_local(model_dir) else model_dir}


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read_lock(path: str) -> dict | None:
    try:
        return json.loads(files.read_text(path))
    except (tf.errors.OpError, ValueError):  # Gone meanwhile, or cut short while written.
        return None


def _is_stale(holder: dict, mine: dict) -> bool:
    """Whether the lock's process cannot be training in this directory now: the directory was
    copied or moved with the lock in it, or the process is gone from this host."""
    if holder.get("model_dir") != mine["model_dir"]:
        return True
    if holder.get("host") != mine["host"]:
        return False  # Another machine sharing the directory: nothing here can tell.
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # It exists, as another user.
    started = holder.get("process_start")
    return started is not None and started != _process_start(holder["pid"])


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (started {started})"


def _held_message(model_dir, path, holder) -> str:
    return (f"model_dir ({model_dir}) is in use: {_describe(holder)} trains there (lock "
            f"{path}). Two runs in one directory would overwrite each other's checkpoints and "
            "logs: wait for it to end, or use another --model_dir. If that process is gone (it "
            f"ran on another machine), delete {path}")


def _remove(path: str) -> None:
    try:
        tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


def check_settings(model_dir: str, settings: dict) -> None:
    """Checks `settings` (flag name -> value) against the run recorded in `model_dir`, if any.

    Raises:
        ValueError: naming each setting that differs from the recorded run, or the damaged file.
    """
    path = os.path.join(model_dir, RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        return
    recorded = files.read_json(path, what="the settings of the run in this directory", fix=(
        "delete it: the next run records its own settings (make sure they are the ones the "
        "checkpoints were trained with)"))
    # A setting the file does not hold was recorded by an older version: nothing to compare.
    differences = [f"{key}: {recorded[key]!r} there, {value!r} now"
                   for key, value in settings.items() if key in recorded and recorded[key] != value]
    if differences:
        raise ValueError(
            f"model_dir ({model_dir}) holds a run with other settings ({'; '.join(differences)}). "
            "Use another --model_dir, or --fresh_start to set the old run aside")


def record_settings(model_dir: str, settings: dict) -> None:
    """Writes run_config.json unless the run already has one (the first run's settings stay)."""
    path = os.path.join(model_dir, RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        files.write_json(path, settings)


def set_aside(model_dir: str) -> str | None:
    """Renames an existing `model_dir` to `<model_dir>.old-N` (never deletes it); returns the
    new name.

    Raises:
        ValueError: if the file system cannot rename directories (some object stores).
    """
    if not tf.io.gfile.exists(model_dir) or not tf.io.gfile.listdir(model_dir):
        return None
    number = 1
    while tf.io.gfile.exists(f"{model_dir}.old-{number}"):
        number += 1
    try:
        tf.io.gfile.rename(model_dir, f"{model_dir}.old-{number}")
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(f"fresh_start: cannot rename {model_dir} to {model_dir}.old-{number} on "
                         f"this file system ({str(error).splitlines()[0]}); pass another "
                         "--model_dir instead") from None
    return f"{model_dir}.old-{number}"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write that failed on a full disk (an OSError or TensorFlow's)."""
    text = str(error)
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
        "No space left on device" in text or "out of disk space" in text.lower())


def disk_full_message(error: BaseException, latest_checkpoint: str | None) -> str:
    """One line for a write that failed on a full disk: nothing is lost, and what to do."""
    text = str(error).strip()
    cause = text.splitlines()[0] if text else "No space left on device"
    kept = (f"the latest checkpoint, {latest_checkpoint}, is whole" if latest_checkpoint
            else "no checkpoint had been written")
    return (f"a disk is full ({cause}). Nothing is lost: {kept}. Free some space and run the "
            "same command again: the run resumes from its latest checkpoint")
