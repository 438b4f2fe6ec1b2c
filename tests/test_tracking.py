"""Runs tracked where users look, read back by the real readers: MLflow's own client on a local
sqlite store (across a kill and a resume), TensorBoard's own data loader on the event files, and a
`tensorboard` server on 127.0.0.1 queried over HTTP for the charts and the HParams dashboard."""

import csv
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request

import pytest
import tensorflow as tf

import trainer
from conftest import (ROOT, quadrant_datamodule, run_main_mocked, run_python, subprocess_env,
                      tiny_network)
from trainer import callbacks

# 64 mocked examples at batch 16: 4 steps per epoch, 8 in the run; every step logged.
NUM_EXAMPLES = 64
FLAGS = ["--model=sequential", "--batch_size=16", "--epochs=2", "--steps_per_loop=1",
         "--log_every_n_steps=1", "--checkpoint_every_steps=0", "--predict_split=test",
         "--progress_bar=false", "--model_summary=false", "--data_dir=/nonexistent",
         "--mlflow_experiment=tracking"]
SERVER_DEADLINE_S = 180  # How long to wait for the server to start and load the runs.


def _require_mlflow():
    pytest.importorskip("mlflow", reason='MLflow is not installed: pip install ".[mlflow]"')


def _require_tensorboard():
    pytest.importorskip("tensorboard",
                        reason='TensorBoard is not installed: pip install ".[tensorboard]"')


def _installed(package):
    return importlib.util.find_spec(package) is not None


def _mlflow_client(uri):
    _require_mlflow()
    from mlflow import tracking  # pylint: disable=import-outside-toplevel
    return tracking.MlflowClient(uri)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow sqlite database with its tables made, to copy: making them takes seconds."""
    path = tmp_path_factory.mktemp("mlflow") / "empty.db"
    _mlflow_client(f"sqlite:///{path}").search_experiments()
    return path


def _store(empty_store, directory):
    """A fresh MLflow store in `directory`; returns its tracking URI."""
    os.makedirs(directory, exist_ok=True)
    shutil.copy(empty_store, os.path.join(directory, "mlflow.db"))
    return f"sqlite:///{directory}/mlflow.db"


class TensorBoardServer:
    """`tensorboard --logdir <logdir> --host 127.0.0.1 --port 0` in a child process, as a user
    starts it; it prints the address of the free port it took."""

    def __init__(self, logdir):
        self.log_path = os.path.join(logdir, "tensorboard-server.log")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
             "--port=0", "--reload_interval=1"],
            stdout=self._log, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=ROOT)
        self._url = None

    def url(self):
        deadline = time.monotonic() + SERVER_DEADLINE_S
        while self._url is None:
            with open(self.log_path) as f:
                found = [word for word in f.read().split() if word.startswith("http://127.0.0.1:")]
            if found:
                self._url = found[0].rstrip("/")
            elif self.process.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path) as f:
                    pytest.fail(f"tensorboard did not start:\n{f.read()[-3000:]}")
            else:
                time.sleep(0.5)
        return self._url

    def get(self, path):
        with urllib.request.urlopen(self.url() + path, timeout=30) as response:
            return json.load(response)

    def post(self, path, body):
        request = urllib.request.Request(self.url() + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def until(self, fetch, ready):
        """fetch() again until ready(result): the server loads the event files in the background."""
        deadline = time.monotonic() + SERVER_DEADLINE_S
        while not ready(result := fetch()):
            assert time.monotonic() < deadline, f"the server never showed it; last: {result}"
            time.sleep(1)
        return result

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _python_api_run(model_dir):
    """A second run beside the command-line one, logged with the Python API: a tiny network on
    the quadrant data, learning rate 0.01, for the HParams dashboard to compare."""
    tensorboard = callbacks.TensorBoardLogger(logdir=os.path.join(model_dir, "tensorboard"))
    hparams = callbacks.HParamsLogger(tensorboard, hparams={
        "model": "mlp", "learning_rate": 0.01, "batch_size": 16, "ema_decay": None})
    fitter = trainer.Trainer(epochs=1, callbacks=[hparams, tensorboard], num_sanity_val_steps=0,
                             enable_progress_bar=False, enable_model_summary=False)
    module = trainer.ImageClassifier(tiny_network(), learning_rate=0.01)
    datamodule = quadrant_datamodule()
    fitter.fit(module, datamodule)
    fitter.test(module, datamodule)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, request):
    """A command-line run tracked in MLflow, SIGKILLed after step 6 (its checkpoint is step 4's)
    and resumed with another learning rate to its end; a Python-API run beside it; and a
    tensorboard server over both, started first so that it starts up while they train. (Without
    MLflow the run is not tracked; without TensorBoard there is no server.)"""
    if not (_installed("mlflow") or _installed("tensorboard")):
        pytest.skip('neither MLflow nor TensorBoard is installed: pip install '
                    '".[mlflow,tensorboard]"')
    root = tmp_path_factory.mktemp("tracking")
    model_dir = str(root / "cli")
    flags = [*FLAGS, f"--model_dir={model_dir}"]
    client = experiment_id = None
    if _installed("mlflow"):
        uri = _store(request.getfixturevalue("empty_store"), root)
        client = _mlflow_client(uri)
        # With a database store MLflow puts artifacts in ./mlruns of the working directory,
        # unless the experiment says where: the repository must stay clean.
        experiment_id = client.create_experiment("tracking",
                                                 artifact_location=str(root / "artifacts"))
        flags.append(f"--mlflow_tracking_uri={uri}")
    server = TensorBoardServer(str(root)) if _installed("tensorboard") else None
    try:
        killed = run_main_mocked(flags, NUM_EXAMPLES, env={"TRAINER_KILL_AT": "train_call:6"})
        assert killed.returncode == -9, killed.stderr[-3000:]
        status_after_kill = client and [r.info.status for r in client.search_runs([experiment_id])]
        resumed = run_main_mocked([*flags, "--learning_rate=0.001"], NUM_EXAMPLES)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        _python_api_run(str(root / "api"))
        runs = client and client.search_runs([experiment_id])
        yield types.SimpleNamespace(client=client, run=runs and runs[0], runs=runs,
                                    model_dir=model_dir, root=str(root), server=server,
                                    status_after_kill=status_after_kill, resumed=resumed)
    finally:
        if server:
            server.stop()


def _history(client, run, name):
    return [(point.step, point.value) for point in client.get_metric_history(run.info.run_id, name)]


def _local_json(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


# ---- MLflow, read back with MlflowClient -------------------------------------------------------

def test_a_killed_and_resumed_run_is_one_mlflow_run_with_every_step_once(tracked):
    _require_mlflow()
    client, run = tracked.client, tracked.run
    assert len(tracked.runs) == 1
    assert tracked.status_after_kill == ["RUNNING"]  # SIGKILL: nothing could mark it.
    assert run.info.status == "FINISHED" and run.info.run_name == "cli"
    assert run.data.tags["model_dir"] == tracked.model_dir
    assert "continues at step 4" in tracked.resumed.stderr
    steps = [step for step, _ in _history(client, run, "step/loss")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # Each once, whichever run sent 5 and 6.
    assert [step for step, _ in _history(client, run, "val_accuracy")] == [4, 8]
    assert _history(client, run, "epoch") == [(4, 1.0), (8, 2.0)]
    assert [step for step, _ in _history(client, run, "test_accuracy")] == [8]
    results = _local_json(tracked.model_dir, "results.json")
    for name in ("val_accuracy", "val_loss", "test_accuracy", "train_loss"):
        assert run.data.metrics[name] == pytest.approx(results[name], rel=1e-6), name
    with open(os.path.join(tracked.model_dir, "metrics.csv")) as f:
        rows = {int(row["step"]): row for row in csv.DictReader(f) if row["kind"] == "step"}
    for step, value in _history(client, run, "step/loss")[6:]:  # Trained by the resumed run.
        assert value == pytest.approx(float(rows[step]["loss"]), rel=1e-6), step


def test_mlflow_has_every_flag_as_a_param_and_a_tag_for_one_changed_on_resume(tracked):
    _require_mlflow()
    params, tags = tracked.run.data.params, tracked.run.data.tags
    assert params["model"] == "sequential" and params["batch_size"] == "16"
    assert params["augment"] == "false" and params["epochs"] == "2"
    assert "model_dir" not in params  # Where a run lives is its tag, not a setting.
    assert params["learning_rate"] == "3e-4"  # MLflow params cannot change...
    assert tags["changed_at_step_4/learning_rate"] == "0.001"  # ...so the resume says so.


def test_mlflow_keeps_the_runs_files_and_export_as_artifacts(tracked, tmp_path):
    _require_mlflow()
    client, run_id = tracked.client, tracked.run.info.run_id
    names = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"flags.txt", "results.json", "history.json", "metrics.csv", "predictions.csv",
            "curves.png", "confusion_matrix.png", "export"} <= names
    assert "saved_model.pb" in {os.path.basename(a.path)
                                for a in client.list_artifacts(run_id, "export")}
    copy = client.download_artifacts(run_id, "results.json", str(tmp_path))
    with open(copy) as f:
        assert json.load(f) == _local_json(tracked.model_dir, "results.json")


# ---- TensorBoard's own data loader on the event files ------------------------------------------

def _data_provider(logdir):
    # pylint: disable=import-outside-toplevel
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, logdir), context.RequestContext()


def test_tensorboards_loader_reads_each_step_once_the_images_and_the_hparams(tracked):
    _require_tensorboard()
    from tensorboard.plugins.hparams import metadata  # pylint: disable=import-outside-toplevel
    provider, ctx = _data_provider(tracked.root)
    scalars = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=1000)
    train, val, test = (scalars[f"cli/tensorboard/{run}"] for run in ("train", "val", "test"))
    # The resumed run's restart marker drops the killed run's steps 5 and 6.
    assert [point.step for point in train["step/loss"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [point.step for point in val["epoch/accuracy"]] == [4, 8]
    results = _local_json(tracked.model_dir, "results.json")
    assert val["epoch/accuracy"][-1].value == pytest.approx(results["val_accuracy"], rel=1e-6)
    assert test["epoch/accuracy"][-1].value == pytest.approx(results["test_accuracy"], rel=1e-6)
    images = provider.read_blob_sequences(ctx, experiment_id="", plugin_name="images",
                                          downsample=100)
    assert [point.step for point in images["cli/tensorboard/val"]["samples/images"]] == [4, 8]
    assert [point.step for point in images["cli/tensorboard/test"]["confusion_matrix/heat_map"]
            ] == [8]
    sessions = provider.list_tensors(ctx, experiment_id="", plugin_name=metadata.PLUGIN_NAME)
    content = sessions["cli/tensorboard"][metadata.SESSION_START_INFO_TAG].plugin_content
    start = metadata.parse_session_start_info_plugin_data(content)
    hparams = {name: getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    assert start.group_name == "cli"
    assert hparams["model"] == "sequential" and hparams["batch_size"] == 16
    assert hparams["augment"] is False and hparams["precision"] == "32"
    assert hparams["learning_rate"] == pytest.approx(3e-4)  # The first start's, as written.
    assert "ema_decay" not in hparams  # Off (None): an empty cell.


# ---- A tensorboard server, over HTTP ---------------------------------------------------------------

def test_a_tensorboard_server_serves_the_charts_and_the_hparams_dashboard(tracked):
    _require_tensorboard()
    server = tracked.server
    results = _local_json(tracked.model_dir, "results.json")
    chart = server.until(
        lambda: server.get("/data/plugin/scalars/scalars?run=cli/tensorboard/val&tag=epoch/accuracy"),
        lambda points: [step for _, step, _ in points] == [4, 8])
    assert chart[-1][2] == pytest.approx(results["val_accuracy"], rel=1e-6)

    every_status = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"experimentName": "", "allowedStatuses": every_status, "colParams": [],
               "startIndex": 0, "sliceSize": 100}
    groups = server.until(
        lambda: server.post("/data/plugin/hparams/session_groups", request)["sessionGroups"],
        lambda found: {group["name"] for group in found} == {"cli", "api"} and all(
            len(group["metricValues"]) > 1 for group in found))
    by_name = {group["name"]: group for group in groups}
    assert by_name["cli"]["hparams"]["model"] == "sequential"
    assert by_name["cli"]["hparams"]["learning_rate"] == pytest.approx(3e-4)  # The first start's.
    assert by_name["api"]["hparams"]["learning_rate"] == pytest.approx(0.01)
    val_accuracy = [metric["value"] for metric in by_name["cli"]["metricValues"]
                    if metric["name"] == {"group": "val", "tag": "epoch/accuracy"}]
    assert val_accuracy == [pytest.approx(results["val_accuracy"], rel=1e-6)]
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert infos["learning_rate"]["differs"] and not infos["batch_size"]["differs"]
    assert {"group": "test", "tag": "epoch/accuracy"} in [
        metric["name"] for metric in experiment["metricInfos"]]


# ---- How an MLflow run ends, in process -----------------------------------------------------------

class AtStep(callbacks.Callback):
    """Calls `action(trainer)` after the loop call that ends at `step`."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_train_batch_end(self, step, logs):
        if step == self.step:
            self.action(self.trainer)


def _tracked_fit(uri, tmp_path, *others):
    """Fits the tiny network for 2 epochs (32 steps) with an MLflowLogger (tracking `uri`) and a
    CSVLogger (in tmp_path); returns fit's result (or the exception it raised) and the MLflow
    run's id and client."""
    client = _mlflow_client(uri)
    logger = callbacks.MLflowLogger(tracking_uri=uri, experiment="in-process",
                                    model_dir=str(tmp_path / "run"))
    fitter = trainer.Trainer(
        epochs=2, steps_per_loop=2, log_every_n_steps=2, num_sanity_val_steps=0,
        callbacks=[logger, callbacks.CSVLogger(str(tmp_path / "metrics.csv"),
                                               log_every_n_steps=2), *others],
        enable_progress_bar=False, enable_model_summary=False)
    try:
        outcome = fitter.fit(trainer.ImageClassifier(tiny_network(), learning_rate=1e-2),
                             quadrant_datamodule())
    except Exception as error:  # pylint: disable=broad-except  # What a user would see raised.
        outcome = error
    return outcome, client, logger.run_id


def test_a_stopped_run_ends_killed_and_a_diverged_one_failed_in_mlflow(tmp_path, empty_store):
    def nan_weights(fitter):
        weights = fitter.module.trainable_variables[0]
        weights.assign(tf.fill(weights.shape, math.nan))

    uri = _store(empty_store, tmp_path)
    stopped, client, run_id = _tracked_fit(uri, tmp_path / "stopped", AtStep(
        4, lambda fitter: os.kill(os.getpid(), signal.SIGTERM)))
    assert isinstance(stopped, trainer.TrainingInterrupted)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith("TrainingInterrupted: interrupted by SIGTERM")
    diverged, client, run_id = _tracked_fit(uri, tmp_path / "diverged", AtStep(2, nan_weights))
    assert isinstance(diverged, trainer.TrainingDiverged)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("TrainingDiverged: training diverged")


def test_a_store_failing_mid_run_is_reported_once_and_training_goes_on(tmp_path, empty_store,
                                                                        caplog):
    caplog.set_level(logging.WARNING, logger="absl")
    uri = _store(empty_store, tmp_path)
    outcome, _, _ = _tracked_fit(uri, tmp_path, AtStep(
        4, lambda _: os.remove(tmp_path / "mlflow.db")))
    assert outcome["steps"] == 32  # Trained to the end.
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLflow")]
    assert len(reports) == 1 and "could not log metrics" in reports[0], reports
    with open(tmp_path / "metrics.csv") as f:  # The run's own log is complete.
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["kind"] == "step"]
    assert steps == list(range(2, 33, 2))


def test_a_worker_other_than_the_chief_sends_nothing(tmp_path, empty_store):
    uri = _store(empty_store, tmp_path)
    logger = callbacks.MLflowLogger(tracking_uri=uri, experiment="in-process")
    fitter = trainer.Trainer(epochs=1, callbacks=[logger], num_sanity_val_steps=0,
                             enable_progress_bar=False, enable_model_summary=False)
    fitter.is_chief = False  # As on worker 1 of a multi-worker cluster.
    fitter.fit(trainer.ImageClassifier(tiny_network(), learning_rate=1e-2), quadrant_datamodule())
    assert logger.run_id is None and logger.state_dict() == {}
    assert _mlflow_client(uri).get_experiment_by_name("in-process") is None  # Not even that.


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # Nothing listens there once the socket is closed.


def test_an_unreachable_tracking_uri_fails_at_start_with_one_line(tmp_model_dir):
    _require_mlflow()
    uri = f"http://127.0.0.1:{_closed_port()}"
    # The real command: it stops before it reads any data, so none is needed.
    result = run_python(["-m", "trainer.main", f"--model_dir={tmp_model_dir}",
                         f"--mlflow_tracking_uri={uri}", "--data_dir=/nonexistent",
                         "--download=false"], timeout=300)
    assert result.returncode == 1
    # TensorFlow's own C++ error lines (cuInit on a machine without a GPU) pass the quiet console.
    lines = [line for line in result.stderr.splitlines() if not re.match(r"[IWEF]\d{4} ", line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: mlflow_tracking_uri ('{uri}') cannot be used: API "
                               "request to ")
    assert not os.path.exists(tmp_model_dir)  # Nothing written, nothing trained.


def test_without_the_packages_mlflow_says_how_to_install_it_and_hparams_are_left_out(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails.
    logger = callbacks.MLflowLogger(tracking_uri="sqlite:///mlflow.db")
    with pytest.raises(RuntimeError, match=r'needs MLflow, which is not installed: '
                                           r'pip install "\.\[mlflow\]"'):
        logger.connect()
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    caplog.set_level(logging.INFO, logger="absl")
    tensorboard = callbacks.TensorBoardLogger(logdir=str(tmp_path))
    hparams = callbacks.HParamsLogger(tensorboard, hparams={"model": "mlp"})
    hparams.set_trainer(types.SimpleNamespace(is_chief=True))
    hparams.on_train_begin({})
    said = [r.getMessage() for r in caplog.records if "HParams" in r.getMessage()]
    assert said == ["HParams dashboard: no hyperparameters written, the tensorboard package is "
                    'not installed (pip install ".[tensorboard]")']
    assert os.listdir(tmp_path) == []
