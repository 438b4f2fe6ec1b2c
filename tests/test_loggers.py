"""The loggers: TensorBoard event files and metrics.csv written by real runs of main (a first run,
then a resumed one), nothing written under fast_dev_run, and the CSV rules on a small scale."""

import csv
import glob
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_main_mocked
from trainer.callbacks import loggers
from trainer.callbacks import summaries
from trainer.vision import loggers as vision_loggers

# 64 mocked examples in every split at batch 16: 4 steps per epoch, a per-step entry every 2.
NUM_EXAMPLES = 64
FLAGS = ["--model=sequential", "--batch_size=16", "--log_every_n_steps=2",
         "--data_dir=/nonexistent"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A run of one epoch, then the same command with --epochs=2: it resumes at step 4."""
    model_dir = str(tmp_path_factory.mktemp("loggers") / "run")
    for epochs in (1, 2):
        result = run_main_mocked([*FLAGS, f"--epochs={epochs}", f"--model_dir={model_dir}"],
                                 num_examples=NUM_EXAMPLES)
        assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def read_events(model_dir, run):
    """{tag: [(step, plugin name, value as a NumPy array), ...]} from a TensorBoard run's files."""
    found = {}
    paths = sorted(glob.glob(os.path.join(model_dir, "tensorboard", run, "events.out.tfevents.*")))
    for path in paths:  # File names start with the time they were opened: oldest first.
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(
                    (event.step, value.metadata.plugin_data.plugin_name,
                     tf.make_ndarray(value.tensor)))
    return found


def steps(entries):
    return [step for step, _, _ in entries]


def test_tensorboard_has_step_epoch_and_stage_scalars_at_optimizer_steps(resumed_run):
    train, val, test = (read_events(resumed_run, run) for run in ("train", "val", "test"))
    for tag in ("step/loss", "step/train_accuracy", "step/learning_rate", "step/images_per_s"):
        assert steps(train[tag]) == [2, 4, 6, 8], tag
        assert {plugin for _, plugin, _ in train[tag]} == {"scalars"}
    for tag in ("epoch/loss", "epoch/accuracy", "epoch/images_per_s", "epoch/learning_rate"):
        assert steps(train[tag]) == [4, 8], tag
    assert steps(val["epoch/accuracy"]) == [4, 8]
    assert steps(test["epoch/accuracy"]) == [4, 8]  # One test after each of the two runs.
    assert 0.0 <= float(test["epoch/accuracy"][-1][2]) <= 1.0
    assert "epoch/val_accuracy" not in train and "step/loss" not in val


def test_every_tag_belongs_to_one_tensorboard_plugin(resumed_run):
    # TensorBoard shows a tag in one tab only: an image and a text under one tag lose the text.
    plugins = {run: {tag: {plugin for _, plugin, _ in entries}
                     for tag, entries in read_events(resumed_run, run).items()}
               for run in ("train", "val", "test")}
    assert all(len(names) == 1 for run in plugins.values() for names in run.values()), plugins
    assert plugins["val"]["samples/images"] == {"images"}
    assert plugins["val"]["samples/labels"] == {"text"}
    assert plugins["test"]["confusion_matrix/heat_map"] == {"images"}
    assert plugins["test"]["confusion_matrix/counts"] == {"text"}


def test_tensorboard_has_the_flags_of_each_run(resumed_run):
    flags = read_events(resumed_run, "train")["flags"]
    assert steps(flags) == [0, 4]  # Written when each run starts training.
    text = flags[-1][2].item().decode()
    assert flags[-1][1] == "text"
    assert "--model=sequential" in text and "--epochs=2" in text and "--nohelp" not in text


def test_tensorboard_sample_images_are_framed_by_correctness(resumed_run):
    val = read_events(resumed_run, "val")
    assert steps(val["samples/images"]) == steps(val["samples/labels"]) == [4, 8]
    _, _, pictures = val["samples/images"][-1]
    _, _, text = val["samples/labels"][-1]
    assert pictures[:2].tolist() == [b"36", b"36"]  # width, height: 32 pixels + 2 x 2 frame.
    lines = text.item().decode().splitlines()
    assert len(lines) == len(pictures) - 2 == 8
    for line, png in zip(lines, pictures[2:]):
        assert " / predicted " in line and "true " in line
        corner = tf.io.decode_png(png).numpy()[0, 0]
        expected = summaries.RED if line.endswith("(wrong)") else summaries.GREEN
        np.testing.assert_allclose(corner / 255, expected, atol=0.01)


def test_tensorboard_has_a_test_confusion_matrix_image_and_table(resumed_run):
    test = read_events(resumed_run, "test")
    assert steps(test["confusion_matrix/heat_map"]) == [4, 8]
    _, _, image = test["confusion_matrix/heat_map"][-1]
    _, _, table = test["confusion_matrix/counts"][-1]
    assert image[:2].tolist() == [b"250", b"250"]  # 10 classes x 25 pixels per cell.
    rows = table.item().decode().splitlines()[2:]  # After the header and its rule.
    counts = [[int(cell) for cell in row.strip("|").split("|")[1:]] for row in rows]
    assert np.array(counts).shape == (10, 10) and np.sum(counts) == NUM_EXAMPLES


def test_csv_has_one_header_and_every_step_once_after_a_resume(resumed_run):
    with open(os.path.join(resumed_run, "metrics.csv")) as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["kind", "epoch", "step"]
    assert sum(line.startswith("kind,") for line in lines) == 1
    assert all(len(line.split(",")) == len(header) for line in lines)  # No misaligned rows.
    rows = list(csv.DictReader(lines))
    by_kind = {kind: [(int(row["epoch"]), int(row["step"])) for row in rows if row["kind"] == kind]
               for kind in ("step", "epoch", "test")}
    assert by_kind["step"] == [(1, 2), (1, 4), (2, 6), (2, 8)]
    assert by_kind["epoch"] == [(1, 4), (2, 8)]
    assert by_kind["test"] == [(1, 4), (2, 8)]
    epoch_rows = [row for row in rows if row["kind"] == "epoch"]
    assert all(0.0 <= float(row["val_accuracy"]) <= 1.0 for row in epoch_rows)
    assert all(float(row["learning_rate"]) > 0 for row in rows if row["kind"] != "test")


def test_fast_dev_run_writes_nothing_into_model_dir(tmp_model_dir):
    result = run_main_mocked([*FLAGS, "--fast_dev_run", f"--model_dir={tmp_model_dir}"],
                             num_examples=NUM_EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not os.path.exists(tmp_model_dir) or os.listdir(tmp_model_dir) == []


# ---- CSVLogger on its own, with a stand-in for the Trainer ------------------------------------

def csv_logger(path, global_step, is_chief=True):
    logger = loggers.CSVLogger(str(path), log_every_n_steps=2)
    logger.set_trainer(types.SimpleNamespace(global_step=global_step, is_chief=is_chief))
    return logger


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_csv_widens_its_header_when_a_row_brings_a_new_metric(tmp_path):
    path = tmp_path / "metrics.csv"
    logger = csv_logger(path, global_step=2)
    logger.on_train_batch_end(2, {"loss": 2.5})
    logger.on_train_batch_end(3, {"loss": 2.4})  # Not a multiple of log_every_n_steps: no row.
    logger.on_epoch_end(0, {"loss": 2.0, "val_loss": 1.5})
    assert read_csv(path) == [["kind", "epoch", "step", "loss", "val_loss"],
                              ["step", "1", "2", "2.5", ""],
                              ["epoch", "1", "2", "2.0", "1.5"]]


def test_csv_resume_drops_the_rows_after_the_restored_step(tmp_path):
    path = tmp_path / "metrics.csv"
    first = csv_logger(path, global_step=0)
    for step in (2, 4, 6):  # The first run was killed at step 6, after a checkpoint at step 4.
        first.on_train_batch_end(step, {"loss": 1.0 / step})
    resumed = csv_logger(path, global_step=4)
    resumed.on_train_begin({})
    resumed.on_train_batch_end(6, {"loss": 0.1})
    assert read_csv(path)[1:] == [["step", "1", "2", "0.5"], ["step", "1", "4", "0.25"],
                                  ["step", "1", "6", "0.1"]]


def test_csv_non_chief_writes_nothing(tmp_path):
    logger = csv_logger(tmp_path / "metrics.csv", global_step=2, is_chief=False)
    logger.on_train_batch_end(2, {"loss": 1.0})
    logger.on_epoch_end(0, {"loss": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"log_every_n_steps \(0\) must be at least 1"):
        loggers.CSVLogger(str(tmp_path / "metrics.csv"), log_every_n_steps=0)
    with pytest.raises(ValueError, match=r"num_samples \(0\) must be at least 1"):
        vision_loggers.SamplePredictions(loggers.TensorBoardLogger(logdir=str(tmp_path)),
                                         num_samples=0)


# ---- The pictures, drawn with tf ops -----------------------------------------------------------

def test_framed_images_are_green_when_correct_and_red_when_wrong():
    gray = tf.fill([2, 4, 4, 1], 0.5)
    pictures = summaries.framed(gray, np.array([True, False]), width=1).numpy()
    assert pictures.shape == (2, 6, 6, 3)
    np.testing.assert_allclose(pictures[0, 0, 0], summaries.GREEN)
    np.testing.assert_allclose(pictures[1, -1, -1], summaries.RED)
    np.testing.assert_allclose(pictures[:, 1:-1, 1:-1], 0.5)  # The images themselves unchanged.


def test_heat_map_shades_each_row_by_its_fractions():
    matrix = np.array([[3, 1], [0, 5]])  # Row 0: 75% right; row 1: all right.
    picture = summaries.heat_map(matrix).numpy()
    assert picture.shape == (1, 256, 256, 3)  # 128 pixels per cell.
    np.testing.assert_allclose(picture[0, 200, 0], (1.0, 1.0, 1.0))  # True 1, predicted 0: 0%.
    assert picture[0, 200, 200].sum() < picture[0, 0, 0].sum() < picture[0, 0, 200].sum()
