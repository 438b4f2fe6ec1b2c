"""One model per run state: the weights validation scored (the moving averages under EMA), and
every consumer gets exactly those: ranking with any monitor, the top-k weights, early stopping's
best copy and its restore, the test, predictions, the evaluator task and a Trainer reused with
another DataModule object."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import conftest
import trainer
from conftest import quadrant_datamodule, tiny_network
from trainer import callbacks
from trainer import checkpointing
from trainer.cli import evaluator


def _fitter(**kwargs):
    return trainer.Trainer(enable_progress_bar=False, enable_model_summary=False,
                           num_sanity_val_steps=0, **kwargs)


def _module(ema_decay=0.5):
    return trainer.ImageClassifier(tiny_network(), learning_rate=1e-2, ema_decay=ema_decay)


def _model_weights(fitter):
    """The weights of the run's model: what validation scores."""
    with fitter.model_weights.in_module():
        return [w.copy() for w in fitter.module.get_weights()]


def _assert_same(weights, expected):
    assert len(weights) == len(expected)
    for got, want in zip(weights, expected):
        np.testing.assert_array_equal(got, want)


class ScriptedValLoss(callbacks.Callback):
    """Replaces val_loss by scripted scores and keeps the model each validation scored."""

    def __init__(self, scores):
        self.scores, self.scored = list(scores), []

    def on_validation_end(self, logs):
        logs["val_loss"] = self.scores.pop(0)
        self.scored.append(_model_weights(self.trainer))


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_early_stopping_restores_the_model_its_best_check_scored(ema_decay):
    tf.keras.utils.set_random_seed(0)
    scripted = ScriptedValLoss([1.0, 0.5, 0.9, 0.9])  # The best is the second validation.
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    fitter = _fitter(epochs=4, callbacks=[scripted, stopper])
    datamodule = quadrant_datamodule()
    module = _module(ema_decay)
    fitter.fit(module, datamodule)
    _assert_same(_model_weights(fitter), scripted.scored[1])
    # The test scores that model too.
    with fitter.model_weights.in_module():
        expected = fitter.evaluator.evaluate("test")["test_loss"]
    assert fitter.test(module, datamodule)["test_loss"] == expected


@pytest.mark.parametrize("monitor", ["val_loss", "train_loss"])
def test_the_ranked_weights_are_the_model_whatever_the_monitor(tmp_path, monitor):
    tf.keras.utils.set_random_seed(0)
    best = checkpointing.BestModels(str(tmp_path / "best"), monitor=monitor, mode="min", top_k=2)
    fitter = _fitter(epochs=2, best_models=best)
    module = _module()
    fitter.fit(module, quadrant_datamodule())
    last = max(best.ranking, key=lambda entry: entry["step"])
    assert last["step"] == fitter.global_step  # Both epochs are kept (top 2 of 2).
    path = best.path_of(last)
    reader = tf.train.load_checkpoint(path)
    saved = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)}
    model = _model_weights(fitter)
    for variable, value in zip(module.weights, model):
        key = next(name for name in saved if name.startswith("module/")
                   and variable.path.split("/")[-1] in name and saved[name].shape == value.shape
                   and np.array_equal(saved[name], value))
        assert key  # Every weight of the model is in the saved copy, bit for bit.


def test_the_best_model_is_predicted_and_tested_after_it_is_restored(tmp_path):
    tf.keras.utils.set_random_seed(0)
    best = checkpointing.BestModels(str(tmp_path / "best"), monitor="val_loss", mode="max")
    scored = ScriptedValLoss([9.0, 0.1])  # mode=max: the first epoch ranks best.
    fitter = _fitter(epochs=2, best_models=best, callbacks=[scored])
    datamodule = quadrant_datamodule()
    module = _module()
    fitter.fit(module, datamodule)
    fitter.restore_best()
    _assert_same(_model_weights(fitter), scored.scored[0])
    images = np.concatenate([images for images, _ in datamodule.test_dataset(
        tf.distribute.InputContext())])
    with fitter.model_weights.in_module():
        expected = tf.nn.softmax(module(images)).numpy()
    np.testing.assert_allclose(fitter.predict(module, datamodule), expected, rtol=1e-6)


def test_a_trainer_reused_with_another_datamodule_keeps_the_optimizer():
    tf.keras.utils.set_random_seed(0)
    fitter = _fitter(epochs=2)
    module = _module()
    fitter.fit(module, quadrant_datamodule())
    steps, before = fitter.global_step, fitter.test(module, quadrant_datamodule())
    again = fitter.test(module, quadrant_datamodule())  # Another object, the same data.
    assert fitter.global_step == steps == 32
    assert again["test_loss"] == before["test_loss"]


def test_the_evaluator_scores_each_checkpoint_as_training_validated_it(tmp_path):
    model_dir = str(tmp_path / "run")
    tf.keras.utils.set_random_seed(0)
    fitter = _fitter(epochs=2, checkpointer=checkpointing.Checkpointer(
        f"{model_dir}/checkpoints", max_to_keep=5))
    fitter.fit(_module(), quadrant_datamodule())
    validated = {entry["step"]: entry["val_loss"] for entry in fitter.history}

    evaluating = _fitter(epochs=2)
    record = evaluator.run(evaluating, _module(), quadrant_datamodule(), model_dir=model_dir,
                           monitor="val_loss", timeout_s=1)
    assert record["evaluated"] == 2
    scores = {step: logs["val_loss"] for step, logs in evaluator_scores(model_dir).items()}
    assert scores == pytest.approx(validated, rel=1e-6)


def evaluator_scores(model_dir):
    with open(f"{model_dir}/{evaluator.RECORD}") as f:
        return {entry["step"]: entry for entry in json.load(f)["evaluations"]}


# ---- The whole command: every consumer of the run's model agrees ----------------------------

NUM_EXAMPLES = 64  # mocked TFDS: 2 steps of 32 per epoch
# The first epoch is made the best ("max" of val_loss, which falls): the best is not the last,
# early stopping stops after epoch 2 and restores epoch 1, and the export must be epoch 1's.
CROSS_CHECK_FLAGS = [
    "--model=sequential", "--epochs=4", "--batch_size=32", "--deterministic",
    "--val_split=test", "--test_split=test", "--predict_split=test", "--monitor=val_loss",
    "--monitor_mode=max", "--save_top_k=2", "--early_stopping_patience=1",
    "--early_stopping_monitor=val_loss", "--early_stopping_mode=max",
    "--restore_best_weights", "--keep_checkpoints=10", "--num_sanity_val_steps=0",
    "--tensorboard=false", "--progress_bar=false", "--model_summary=false",
    "--evaluator_timeout_s=5"]


@pytest.fixture(scope="module")
def cross_check_runs(tmp_path_factory):
    """A run with and one without EMA, in one process (one device), then the evaluator task on
    each, in another."""
    root = tmp_path_factory.mktemp("cross_check")
    runs = {"ema": ["--ema_decay=0.5"], "no_ema": []}
    for extra in ([], ["--evaluate_checkpoints"]):
        outcomes = conftest.main_runs_mocked(
            [[*CROSS_CHECK_FLAGS, *flags, f"--model_dir={root / name}", *extra]
             for name, flags in runs.items()], num_examples=NUM_EXAMPLES)
        for name, outcome in zip(runs, outcomes):
            assert "results" in outcome, f"{name} {extra}: {outcome}"
    return {name: root / name for name in runs}


@pytest.mark.parametrize("run", ["ema", "no_ema"])
def test_export_predictions_evaluator_and_ranking_agree_on_the_model(cross_check_runs, run):
    model_dir = cross_check_runs[run]
    best = json.loads((model_dir / "best" / "best.json").read_text())["ranking"][0]
    assert best["epoch"] == 1
    evaluated = evaluator_scores(str(model_dir))
    assert sorted(evaluated) == [2, 4]  # Early stopping ended the run after epoch 2.
    # The evaluator task's score of the best checkpoint is the score it was ranked by,
    assert evaluated[best["step"]]["val_loss"] == pytest.approx(best["score"], rel=1e-6)
    # the test (on the same split) scores that model,
    results = json.loads((model_dir / "results.json").read_text())
    assert results["test_loss"] == pytest.approx(best["score"], rel=1e-6)
    # and predictions.csv holds the exported model's predictions.
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        images = np.stack([image for image, _ in tfds.as_numpy(
            tfds.load("cifar10", split="test", as_supervised=True, shuffle_files=False))])
    served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"](
        images=tf.constant(images))["probabilities"].numpy()
    with open(model_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["predicted"]) for row in rows] == served.argmax(axis=1).tolist()
    np.testing.assert_allclose([float(row["probability"]) for row in rows], served.max(axis=1),
                               atol=2e-6)
