"""`MLflowLogger`: a run's settings, metrics and files in MLflow, where teams compare their runs.

MLflow's Keras autologging hooks `model.fit()`, which this loop does not call; this callback logs
what the other loggers log, through an `MlflowClient` (no global "active run"):

    params     the run's settings (the command line: every flag of flags.txt)
    metrics    against the optimizer step, as in the TensorBoard charts:
                 step/<name>   every `log_every_n_steps` steps: loss, train_loss, train_accuracy,
                               learning_rate, images_per_s
                 train_*, epoch, learning_rate, timings     at every epoch end
                 val_*         after every validation pass, at its step
                 test_*        after the test
    artifacts  what `log_artifact` is given (the command line: results.json, flags.txt, the
               plots, predictions.csv, the export, ...)
    status     RUNNING while `fit` runs, FINISHED when it ends; KILLED when a signal stopped it,
               FAILED when anything else ended it (divergence, a crash), with the error as the
               run's `error` tag

Resuming. The MLflow run's id is part of this callback's checkpointed state, so a resumed run logs
into the same MLflow run. MLflow keeps every point it is sent and cannot delete one, and a run
killed after its last checkpoint has already logged some of the steps the resumed run trains
again. So, per metric, a resumed run sends only the steps after the last one the MLflow run holds:
every step appears once, with the value logged first (the same value with `--deterministic`).
For that, everything a checkpoint covers must be in the store before the checkpoint is written:
with checkpoints, the hooks that may precede one (`on_validation_end`, `on_epoch_end`, and
`on_train_batch_end` at a checkpoint's step) wait until all is sent. A run killed before its first checkpoint has no state to resume: its restart
starts a new MLflow run, and the first stays RUNNING.

Failures. A store that cannot be reached fails `connect` with one line: the command line connects
before it reads any data, a `Trainer` when training begins. A store that fails later (a server
gone, a full disk) is reported once, in a warning; the logger stops sending and training goes on,
its own files intact.

Cost: the hooks run on the host between traced loop calls and hand at most one `log_batch` per
loop call to a background thread, which sends them in order: the training loop does not wait
for the network or the disk (a `log_batch` into a local sqlite store took about 20 ms here, 5 ms
of it CPU time), except before a checkpoint (see "Resuming") and in the hooks that end something
(`on_train_end`, `on_test_end`, `on_exception`, `log_artifact`), which wait until all is sent. MLflow is an optional extra
(`pip install ".[mlflow]"`), imported by `connect`.
"""

import contextlib
import numbers
import os
import tempfile
import time

from absl import logging
import tensorflow as tf

from trainer import stopping
from trainer.callbacks import background
from trainer.callbacks import base

INSTALL = 'pip install ".[mlflow]"'
_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call.
# MLflow's HTTP client retries a failed request 7 times, up to two minutes apart, each with a 120 s
# timeout: a server that went away would stall training for minutes before the failure could be
# reported. These bound that to seconds; a user's own settings of the same variables win.
_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_HTTP_DEFAULTS = {_RETRIES: "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class MLflowLogger(base.Callback):
    """Logs a run to MLflow: params, metrics against the optimizer step, files, how it ended.

    Only the chief logs. See the module docstring for what goes where, resuming and failures.
    Under multi-worker training, connect on the chief before training, as the command line
    does, and stop every worker if that fails: a failure inside `fit` would stop the chief alone.

    Args:
        tracking_uri: where MLflow keeps runs: a tracking server (`http://host:5000`) or a
            database (`sqlite:///mlflow.db`, relative to the working directory).
        experiment: the experiment's name; created if the store lacks it.
        run_name: the MLflow run's name; default: the name of `model_dir` (without one, MLflow
            makes a name up).
        model_dir: the run's directory, kept as the MLflow run's `model_dir` tag.
        params: the run's settings, logged once as MLflow params (values become strings).
        tags: more MLflow tags for the run.
        log_every_n_steps: optimizer steps between `step/*` points; default: the Trainer's
            `log_every_n_steps`, whose loop calls end at those steps.
    """

    writes_files = True  # Left out of a fast_dev_run, like the file loggers.

    def __init__(self, *, tracking_uri: str, experiment: str = "Default",
                 run_name: str | None = None, model_dir: str | None = None,
                 params: dict | None = None, tags: dict | None = None,
                 log_every_n_steps: int | None = None):
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps ({log_every_n_steps}) must be at least 1")
        if not experiment:
            raise ValueError("mlflow_experiment ('') must name an MLflow experiment")
        if model_dir and "://" not in model_dir:  # A local path; gs://... stays as it is.
            model_dir = os.path.abspath(model_dir)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.run_name = run_name or (os.path.basename(model_dir) if model_dir else None)
        self.params = {name: str(value) for name, value in (params or {}).items()}
        self.tags = {**({"model_dir": model_dir} if model_dir else {}), **(tags or {})}
        self.log_every_n_steps = log_every_n_steps
        self.run_id: str | None = None
        self._client = self._experiment_id = self._checkpointed_run_id = self._sender = None
        self._last_steps: dict[str, int] = {}  # Per metric, the last step the MLflow run holds.
        self._failed = False

    def connect(self) -> None:
        """Opens the tracking store and finds or creates the experiment (once).

        Raises:
            RuntimeError: if MLflow is not installed, saying how to install it.
            ValueError: naming the URI, if the store cannot be reached or used.
        """
        if self._client is not None:
            return
        try:
            from mlflow import tracking  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise RuntimeError(f"mlflow_tracking_uri ({self.tracking_uri!r}) needs MLflow, which "
                               f"is not installed: {INSTALL}") from None
        retries_set = _RETRIES in os.environ
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        if not retries_set:  # One attempt at the start: an unreachable store fails at once.
            os.environ[_RETRIES] = "0"
        try:
            client = tracking.MlflowClient(self.tracking_uri)
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = (experiment.experiment_id if experiment
                             else client.create_experiment(self.experiment))
        except Exception as error:  # Bad URIs, network, database: MLflow raises many kinds.
            raise ValueError(f"mlflow_tracking_uri ({self.tracking_uri!r}) cannot be used: "
                             f"{_first_line(error)}") from None
        finally:
            if not retries_set:  # During the run a failed request is retried.
                os.environ[_RETRIES] = _HTTP_DEFAULTS[_RETRIES]
        if experiment and experiment.lifecycle_stage == "deleted":
            raise ValueError(f"mlflow_experiment ({self.experiment!r}) is deleted in "
                             f"{self.tracking_uri}: restore it (mlflow experiments restore "
                             f"--experiment-id {experiment_id}) or name another")
        self._client, self._experiment_id = client, experiment_id

    # ---- Hooks (chief only) ----------------------------------------------------------------

    def on_train_begin(self, logs):
        if not self.trainer.is_chief:
            return
        loop_config = self.trainer.loop_config
        self.log_every_n_steps = self.log_every_n_steps or loop_config.log_every_n_steps
        self.connect()  # Raises: a store that cannot be reached now stops the run at its start.
        self._safely("start its run", self._start_run)

    def on_train_batch_end(self, step, logs):
        if self._active() and step % self.log_every_n_steps == 0:
            self._log({f"step/{name}": value for name, value in logs.items()}, step)
        checkpointer = self.trainer.checkpointer
        if self._active() and checkpointer and checkpointer.due(step):
            self._sender.wait()  # A checkpoint follows.

    def on_validation_end(self, logs):
        if self._active():
            self._log(logs, self.trainer.global_step)
            if self.trainer.checkpointer:  # A checkpoint may follow at this step.
                self._sender.wait()

    def on_epoch_end(self, epoch, logs):
        if self._active():  # val_* went out with on_validation_end, at the step they were measured.
            self._log({"epoch": epoch + 1, **{name: value for name, value in logs.items()
                                              if not name.startswith("val_")}},
                      self.trainer.global_step)
            if self.trainer.checkpointer:  # The epoch's checkpoint follows.
                self._sender.wait()

    def on_test_end(self, logs):
        if self._active():
            self._log(logs, self.trainer.global_step)
            self._sender.wait()  # Sent before `test` returns: a program may end right after.

    def on_train_end(self, logs):
        self._end("FINISHED")

    def on_exception(self, error):
        stopped = isinstance(error, (stopping.TrainingInterrupted, KeyboardInterrupt))
        self._end("KILLED" if stopped else "FAILED", error)

    def log_artifact(self, path: str) -> None:
        """Copies a file, or a directory with its files, into the run's artifacts under its base
        name (a symbolic link, such as the export, under the link's name). Chief only; does
        nothing before the run starts."""
        if not self._active():
            return
        self._sender.wait()
        name = os.path.basename(os.path.normpath(path))
        with _on_local_disk(path) as local:  # MLflow uploads local files only.
            if os.path.isdir(local):
                self._safely(f"log {name}", self._client.log_artifacts, self.run_id, local, name)
            else:
                self._safely(f"log {name}", self._client.log_artifact, self.run_id, local)

    def state_dict(self):
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state):
        self._checkpointed_run_id = state.get("run_id")

    # ---- The tracking store ------------------------------------------------------------------

    def _active(self) -> bool:
        return self.trainer.is_chief and self.run_id is not None and not self._failed

    def _start_run(self):
        """Continues this logger's (or the checkpoint's) MLflow run, or creates one."""
        run = self._run_to_continue(self.run_id or self._checkpointed_run_id)
        client, step = self._client, self.trainer.global_step
        self._sender = self._sender or background.Calls(
            on_failure=lambda error: self._report("log metrics", error))
        if run is None:
            run = client.create_run(self._experiment_id, run_name=self.run_name,
                                    tags=_with_context_tags(self.tags))
            self.run_id, self._last_steps = run.info.run_id, {}
            self._log_params(self.params)
            logging.info("MLflow: run %r in experiment %r at %s", run.info.run_name,
                         self.experiment, self._where())
            return
        self.run_id = run.info.run_id
        client.update_run(self.run_id, status="RUNNING")
        self._last_steps = {name: max((point.step for point in client.get_metric_history(
            self.run_id, name)), default=-1) for name in run.data.metrics}
        logged = run.data.params
        self._log_params({name: value for name, value in self.params.items()
                          if name not in logged})
        for name, value in self.params.items():  # MLflow params cannot change: tags say it.
            if name in logged and logged[name] != value:
                client.set_tag(self.run_id, f"changed_at_step_{step}/{name}", value)
        logging.info("MLflow: run %r continues at step %d, at %s", run.info.run_name, step,
                     self._where())

    def _where(self) -> str:
        """The run's page for a tracking server, else the run's id in the store."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return (f"{self.tracking_uri.rstrip('/')}/#/experiments/{self._experiment_id}/runs/"
                    f"{self.run_id}")
        return f"{self.tracking_uri} (run id {self.run_id})"

    def _run_to_continue(self, run_id):
        """The MLflow run `run_id`, if this store holds it, live, in this experiment; else None."""
        if run_id is None:
            return None
        try:
            run = self._client.get_run(run_id)
        except Exception as error:  # pylint: disable=broad-except
            if getattr(error, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if (run is None or run.info.lifecycle_stage == "deleted"
                or run.info.experiment_id != self._experiment_id):
            logging.info("MLflow: the checkpoint's run %s is not a live run of experiment %r at "
                         "%s: starting a new run", run_id, self.experiment, self.tracking_uri)
            return None
        return run

    def _log_params(self, params):
        from mlflow import entities  # pylint: disable=import-outside-toplevel
        items = [entities.Param(name, value) for name, value in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[start:start + _PARAMS_PER_BATCH])

    def _log(self, logs, step):
        """Sends the numbers of `logs` at `step`, each metric's steps once (see "Resuming")."""
        if not self._active():
            return
        fresh = {name: float(value) for name, value in logs.items()
                 if isinstance(value, numbers.Real) and step > self._last_steps.get(name, -1)}
        if fresh:
            from mlflow import entities  # pylint: disable=import-outside-toplevel
            now = int(time.time() * 1000)
            self._sender.send(self._client.log_batch, self.run_id, [
                entities.Metric(name, value, now, step) for name, value in fresh.items()])
            self._last_steps.update(dict.fromkeys(fresh, step))

    def _end(self, status, error=None):
        if not self._active():
            return
        self._sender.wait()

        def end():
            if error is not None:
                self._client.set_tag(self.run_id, "error",
                                     f"{type(error).__name__}: {error}"[:5000])
            self._client.set_terminated(self.run_id, status)

        self._safely(f"mark its run {status}", end)

    def _safely(self, what, call, *args):
        """Calls the store; its first failure is reported once and ends the logging, not the run."""
        try:
            call(*args)
        except Exception as error:  # pylint: disable=broad-except  # Training must go on.
            self._report(what, error)

    def _report(self, what, error):
        if self._failed:
            return
        self._failed = True
        logging.warning("MLflow: could not %s (%s); nothing more goes to MLflow run %s, training "
                        "goes on and the run's own files are complete", what, _first_line(error),
                        self.run_id)


def _with_context_tags(tags: dict) -> dict:
    """`tags` plus the ones MLflow's own `start_run` adds (user, source, git commit)."""
    try:
        from mlflow.tracking.context import registry  # pylint: disable=import-outside-toplevel
        return registry.resolve_tags(tags)
    except Exception:  # pylint: disable=broad-except  # Nice to have; the run starts without.
        return tags


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def _on_local_disk(path):
    """`path` itself on local disk; elsewhere (gs://, ...) a local copy of the file or directory
    for the duration of the block."""
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory() as directory:
        local = os.path.join(directory, os.path.basename(os.path.normpath(path)))
        if tf.io.gfile.isdir(path):
            for parent, _, names in tf.io.gfile.walk(path):
                target = os.path.join(local, os.path.relpath(parent, path))
                os.makedirs(target, exist_ok=True)
                for name in names:
                    tf.io.gfile.copy(os.path.join(parent, name), os.path.join(target, name))
        else:
            tf.io.gfile.copy(path, local)
        yield local
