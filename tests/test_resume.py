"""Nothing lost across a resume, wherever the kill lands: a run SIGKILLed at named points (mid-epoch,
during a validation, just after a checkpoint, during the test pass, during the export, before
results.json) and restarted until it finishes leaves every artifact equal to an uninterrupted
run's: results, history, ranking, CSV, TensorBoard scalars, plots, checkpoint and export.

The kills come from trainer/faults.py (`TRAINER_KILL_AT=<point>:<n>`), not from guessed times.
"""

import csv
import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import trainer
from conftest import ROOT, TESTS, quadrant_datamodule, subprocess_env, tiny_network
from trainer import callbacks
from trainer import checkpointing
from trainer import model_weights
from trainer import files
from trainer.vision import plots

NUM_EXAMPLES = 640  # 20 steps of 32 per epoch, 40 in the run.
# Dropout and augmentation draw random numbers every step: a resumed run must redraw the same.
# A validation every 7 steps puts validations mid-epoch, whose logs the epoch's entry reports.
FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=32", "--deterministic",
         "--checkpoint_every_steps=3", "--steps_per_loop=2", "--log_every_n_steps=2",
         "--val_check_interval=7", "--dropout=0.3", "--augment", "--save_top_k=2",
         "--progress_bar=false"]
# With moving averages of the weights too: they must resume exactly as well.
TWO_REPLICAS = ["--strategy=mirrored", "--cpu_devices=2", "--ema_decay=0.9"]
TIMINGS = ("_seconds", "_per_s", "_time_s")


def _run(model_dir, extra=(), kill_at=None):
    env = subprocess_env()
    if kill_at:
        env["TRAINER_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, os.path.join(TESTS, "mocked_main.py"),
                           str(NUM_EXAMPLES), *FLAGS, f"--model_dir={model_dir}", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _run_killed_until_done(model_dir, kill_points, extra=()):
    """Runs the command once per kill point (each killed there), then once to the end."""
    for kill_at in kill_points:
        result = _run(model_dir, extra, kill_at)
        assert result.returncode == -9, f"{kill_at} was not reached:\n{result.stderr[-3000:]}"
    final = _run(model_dir, extra)
    assert final.returncode == 0, final.stderr[-3000:]
    return final


def _without_timings(entries):
    return [{k: v for k, v in entry.items() if not k.endswith(TIMINGS)} for entry in entries]


def _json(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


def _csv_rows(model_dir):
    with open(os.path.join(model_dir, "metrics.csv")) as f:
        return _without_timings(list(csv.DictReader(f)))


def _tensorboard_scalars(model_dir, run):
    """{(tag, step): value} of a TensorBoard run, read as TensorBoard reads it: a restart marker
    (SessionLog START at step S) drops the earlier events with a step >= S."""
    events = []
    for path in sorted(glob.glob(os.path.join(model_dir, "tensorboard", run, "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            if event.session_log.status == tf.compat.v1.SessionLog.START:
                events = [e for e in events if e[1] < event.step]
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    events.append((value.tag, event.step, float(tf.make_ndarray(value.tensor))))
    return {(tag, step): value for tag, step, value in events
            if "seconds" not in tag and "per_s" not in tag}


def _checkpoint(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return path.rsplit("/", 1)[1], {  # The record's timings differ: history.json is compared.
        name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
        if "save_counter" not in name and not name.startswith("record/")
        and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _served(model_dir):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = tf.saved_model.load(os.path.join(model_dir, "export"))
    return model.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()


def _picture(model_dir, name):
    with open(os.path.join(model_dir, name), "rb") as f:
        return f.read()


def _assert_same_artifacts(clean, killed):
    assert _json(killed, "results.json") == _json(clean, "results.json")
    history = _json(killed, "history.json")
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert [entry["step"] for entry in history] == [20, 40]
    assert _without_timings(history) == _without_timings(_json(clean, "history.json"))
    best = _json(killed, "best/best.json")["ranking"]
    assert [(e["step"], e["score"]) for e in best] == [
        (e["step"], e["score"]) for e in _json(clean, "best/best.json")["ranking"]]
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(killed, "best", "*.index"))
                  ) == sorted(f"step-{e['step']}.index" for e in best)
    assert _csv_rows(killed) == _csv_rows(clean)
    for run in ("train", "val", "test"):
        assert _tensorboard_scalars(killed, run) == _tensorboard_scalars(clean, run), run
    for picture in ("curves.png", "confusion_matrix.png"):
        assert _picture(killed, picture) == _picture(clean, picture), picture
    clean_name, clean_tensors = _checkpoint(clean)
    killed_name, killed_tensors = _checkpoint(killed)
    assert killed_name == clean_name == "ckpt-40"
    assert killed_tensors.keys() == clean_tensors.keys()
    for name, value in clean_tensors.items():
        np.testing.assert_array_equal(value, killed_tensors[name], err_msg=name)
    assert os.path.islink(os.path.join(killed, "export"))
    assert glob.glob(os.path.join(killed, ".export.*")) == [os.path.realpath(
        os.path.join(killed, "export"))]  # The old exports and the temporary ones are gone.
    np.testing.assert_array_equal(_served(killed), _served(clean))


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory):
    """An uninterrupted run on one device, then the same command again; and one on 2 replicas."""
    root = tmp_path_factory.mktemp("clean")
    one, two = str(root / "one"), str(root / "two")
    assert (result := _run(one)).returncode == 0, result.stderr[-3000:]
    first_results = _json(one, "results.json")
    again = _run(one)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (result := _run(two, TWO_REPLICAS)).returncode == 0, result.stderr[-3000:]
    return {"one": one, "two": two, "first_results": first_results, "again": again}


def test_rerunning_a_finished_run_completes_the_end_phase_and_changes_nothing(clean_runs):
    assert "training had already finished at step 40; completing the end phase" in (
        clean_runs["again"].stderr)
    assert _json(clean_runs["one"], "results.json") == clean_runs["first_results"]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy"} <= clean_runs["first_results"].keys()


def test_killed_at_every_point_and_restarted_it_ends_with_the_uninterrupted_artifacts(
        clean_runs, tmp_path):
    killed = str(tmp_path / "killed")
    _run_killed_until_done(killed, ["saved:3", "validation:2", "train_call:5", "test:1",
                                    "export:1", "results:1"])
    _assert_same_artifacts(clean_runs["one"], killed)


def test_on_two_replicas_killed_and_restarted_it_ends_with_the_uninterrupted_artifacts(
        clean_runs, tmp_path):
    killed = str(tmp_path / "killed")
    _run_killed_until_done(killed, ["train_call:4", "validation:3"], TWO_REPLICAS)
    _assert_same_artifacts(clean_runs["two"], killed)


# ---- Each end-of-run path, in process -----------------------------------------------------------

def _module():
    return trainer.ImageClassifier(tiny_network(), learning_rate=1e-2)


def _fitter(**kwargs):
    kwargs.setdefault("num_sanity_val_steps", 0)
    return trainer.Trainer(enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_ranking_a_step_again_replaces_its_entry_and_keeps_its_weights(tmp_path):
    module = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    module(tf.zeros([1, 3]))
    model = model_weights.ModelWeights(module)
    for top_k in (1, 2):
        best = checkpointing.BestModels(str(tmp_path / f"top{top_k}"), monitor="val_loss",
                                        top_k=top_k)
        best.update(model, 0, 10, {"val_loss": 0.5})
        resumed = checkpointing.BestModels(str(tmp_path / f"top{top_k}"), monitor="val_loss",
                                           top_k=top_k)
        resumed.update(model, 0, 10, {"val_loss": 0.4})  # The same step, validated again.
        assert [(e["step"], e["score"]) for e in resumed.ranking] == [(10, 0.4)]
        assert resumed.restore_best(model)["step"] == 10  # Its files are there.


def test_a_non_finite_score_is_never_ranked(tmp_path):
    module = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    module(tf.zeros([1, 3]))
    model = model_weights.ModelWeights(module)
    best = checkpointing.BestModels(str(tmp_path), monitor="val_accuracy", top_k=2)
    assert not best.update(model, 0, 10, {"val_accuracy": float("nan")})
    assert best.update(model, 1, 20, {"val_accuracy": 0.3})
    assert not best.update(model, 2, 30, {"val_accuracy": float("inf")})
    assert [e["step"] for e in best.ranking] == [20]


class SignalAtLastValidation(callbacks.Callback):
    def on_validation_end(self, logs):
        if self.trainer.global_step == 32:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_during_the_last_validation_stops_the_run_with_a_checkpoint(tmp_path):
    checkpointer = checkpointing.Checkpointer(str(tmp_path))
    fitter = _fitter(epochs=2, checkpointer=checkpointer, callbacks=[SignalAtLastValidation()])
    with pytest.raises(trainer.TrainingInterrupted, match="SIGTERM at step 32"):
        fitter.fit(_module(), quadrant_datamodule())
    assert checkpointer.latest.endswith("ckpt-32")
    assert [entry["epoch"] for entry in fitter.history] == [1, 2]  # Recorded, then saved.


def test_curves_of_a_run_whose_last_epoch_has_no_validation(tmp_path):
    history = [{"epoch": 1, "step": 16, "train_loss": 1.0, "train_accuracy": 0.5,
                "val_loss": 1.1, "val_accuracy": 0.4},
               {"epoch": 2, "step": 20, "train_loss": 0.9, "train_accuracy": 0.6}]
    path = plots.plot_curves(history, str(tmp_path / "curves.png"))
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"


class ScriptedValLoss(callbacks.Callback):
    """Replaces val_loss by scripted values, one per validation, and keeps the weights then."""

    def __init__(self, scores):
        self.scores, self.weights = list(scores), []

    def on_validation_end(self, logs):
        logs["val_loss"] = self.scores.pop(0)
        self.weights.append(self.trainer.module.get_weights())


def test_restore_best_weights_works_after_a_resume(tmp_path):
    tf.keras.utils.set_random_seed(0)
    first = ScriptedValLoss([0.5, 0.9])  # The best is the first validation's weights.
    stopper = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    _fitter(epochs=2, callbacks=[first, stopper],
            checkpointer=checkpointing.Checkpointer(str(tmp_path))).fit(_module(),
                                                                       quadrant_datamodule())
    resumed_stopper = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    module = _module()
    fitter = _fitter(epochs=4, callbacks=[ScriptedValLoss([0.9, 0.9]), resumed_stopper],
                     checkpointer=checkpointing.Checkpointer(str(tmp_path)))
    logs = fitter.fit(module, quadrant_datamodule())
    assert logs["stop_reason"] == "early_stopping" and logs["steps"] == 48
    for restored, best in zip(module.get_weights(), first.weights[0]):
        np.testing.assert_array_equal(restored, best)


def test_a_resumed_run_that_had_stopped_early_does_not_train_on(tmp_path):
    def fit():
        fitter = _fitter(epochs=5, checkpointer=checkpointing.Checkpointer(str(tmp_path)),
                         callbacks=[ScriptedValLoss([0.5, 0.9, 0.9, 0.9, 0.9]),
                                    callbacks.EarlyStopping(patience=2)])
        return fitter.fit(_module(), quadrant_datamodule())

    stopped = fit()
    assert stopped["stop_reason"] == "early_stopping" and stopped["steps"] == 48
    again = fit()
    assert again["stop_reason"] == "early_stopping" and again["steps"] == 48


def test_a_resumed_run_that_had_used_its_max_time_does_not_train_on(tmp_path):
    def fit(max_seconds):
        fitter = _fitter(epochs=3, steps_per_loop=4, callbacks=[callbacks.Timer(max_seconds)],
                         checkpointer=checkpointing.Checkpointer(str(tmp_path)))
        return fitter.fit(_module(), quadrant_datamodule())

    assert fit(1e-3)["steps"] == 4
    assert fit(1e-3)["steps"] == 4  # Still over its limit: nothing more is trained.
    assert fit(3600)["steps"] == 48  # A larger limit continues the run.


def test_results_and_history_are_strict_json(tmp_path):
    path = str(tmp_path / "results.json")
    files.write_json(path, {"val_loss": float("nan"), "history": [{"loss": float("inf")}],
                            "steps": 3})

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    with open(path) as f:
        assert json.loads(f.read(), parse_constant=reject) == {
            "val_loss": None, "history": [{"loss": None}], "steps": 3}


def test_the_epochs_running_training_means_are_in_the_checkpoint(tmp_path):
    fitter = _fitter(epochs=1, max_steps=5, checkpointer=checkpointing.Checkpointer(str(tmp_path)))
    module = _module()
    fitter.fit(module, quadrant_datamodule())  # Stops mid-epoch, at step 5 of 16.
    resumed = _module()
    _fitter(epochs=1, checkpointer=checkpointing.Checkpointer(str(tmp_path))).validate(
        resumed, quadrant_datamodule())  # Builds the module and restores step 5.
    assert resumed.logbook.results("train") == module.logbook.results("train")
    assert resumed.logbook.results("train")["train_accuracy"] > 0
