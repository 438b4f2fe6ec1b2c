"""A whole CLI run on a folder of image files: it trains, prints the folder in its plan, predicts
on files, and, killed mid-run then restarted with its run directory and its data moved, ends
with exactly the artifacts of an uninterrupted run."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_python
from image_folders import CLASSES, make_folder
from trainer.vision import file_predictions

# 3 classes x 16 images, 24x24 and 28x26, PNG and JPEG, every 7th grayscale: 40 to train
# (5 steps of 8), 8 to validate and test.
FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=8", "--image_size=24x24",
         "--train_split=train[:84%]", "--val_split=train[84%:]", "--test_split=train[84%:]",
         "--deterministic", "--checkpoint_every_steps=3", "--steps_per_loop=2",
         "--log_every_n_steps=2", "--augment", "--progress_bar=false", "--model_summary=false"]
TIMINGS = ("_seconds", "_per_s", "_time_s")


def _run(dataset, model_dir, predict_files, kill_at=None):
    return run_python(["-m", "trainer.main", *FLAGS, f"--dataset={dataset}",
                       f"--model_dir={model_dir}", f"--predict_files={predict_files}"],
                      env={"TRAINER_KILL_AT": kill_at})


def _json(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


def _without_timings(entries):
    return [{k: v for k, v in entry.items() if not k.endswith(TIMINGS)} for entry in entries]


def _rows(model_dir):
    with open(os.path.join(model_dir, "predictions.csv")) as f:
        return list(csv.DictReader(f))


def _weights(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return os.path.basename(path), {
        name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
        if "save_counter" not in name and not name.startswith("record/")
        and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and a run killed after its third training call whose run directory
    and data folder are then moved before it is restarted to the end."""
    root = tmp_path_factory.mktemp("folder_runs")
    pictures, new = str(root / "pictures"), str(root / "new")
    make_folder(pictures, per_class=16, sizes=((24, 24), (28, 26)), gray_every=7)
    with open(os.path.join(pictures, "dog", "Thumbs.db"), "w") as f:
        f.write("not an image")
    make_folder(new, per_class=2, sizes=((24, 24), (30, 30)), seed=100)
    clean = _run(pictures, str(root / "clean"), new)
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = _run(pictures, str(root / "killed"), new, kill_at="train_call:3")
    assert killed.returncode == -9, killed.stderr[-3000:]
    moved_data, moved_run = str(root / "moved" / "pictures"), str(root / "moved" / "run")
    shutil.move(pictures, moved_data)
    shutil.move(str(root / "killed"), moved_run)
    resumed = _run(moved_data, moved_run, new)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"clean": str(root / "clean"), "resumed": moved_run, "new": new,
            "clean_log": clean.stderr, "resumed_log": resumed.stderr}


def test_the_plan_names_the_folder_its_classes_and_what_was_made_consistent(runs):
    log = runs["clean_log"]
    assert "3 classes | train 40 (train[:84%]) | val 8 (train[84%:]) | test 8 (train[84%:])" in log
    assert "24x24x3" in log and "grayscale made RGB" in log and "resized" in log
    assert "1 file that is not an image skipped" in log
    with open(os.path.join(runs["clean"], "label.labels.txt")) as f:
        assert f.read().split() == list(CLASSES)
    assert os.path.exists(os.path.join(runs["clean"], "confusion_matrix.png"))  # With class names.


def test_a_killed_and_moved_run_resumes_exactly(runs):
    clean, resumed = runs["clean"], runs["resumed"]
    assert "resumed from" in runs["resumed_log"]
    results = _json(resumed, "results.json")
    assert results.pop("dataset").endswith(os.path.join("moved", "pictures"))  # The flag as given.
    assert results == {k: v for k, v in _json(clean, "results.json").items() if k != "dataset"}
    assert _without_timings(_json(resumed, "history.json")) == _without_timings(
        _json(clean, "history.json"))
    clean_name, clean_weights = _weights(clean)
    resumed_name, resumed_weights = _weights(resumed)
    assert resumed_name == clean_name == "ckpt-10"
    for name, value in clean_weights.items():
        np.testing.assert_array_equal(resumed_weights[name], value, err_msg=name)
    assert _rows(resumed) == _rows(clean)


def test_predicting_on_files_names_each_file_its_class_and_probability(runs):
    rows = _rows(runs["clean"])
    assert list(rows[0]) == list(file_predictions.COLUMNS)
    assert [row["path"] for row in rows] == sorted(
        os.path.join(runs["new"], name, f"00{i}.{'jpg' if i else 'png'}")
        for name in CLASSES for i in range(2))
    for row in rows:
        assert row["predicted_name"] == CLASSES[int(row["predicted"])]
        assert 1 / 3 <= float(row["probability"]) <= 1
    # The same from Python, with the class names from label.labels.txt beside the export.
    export = os.path.join(runs["clean"], "export")
    again = file_predictions.predict_files(export, os.path.join(runs["new"], "*", "*.png"))
    by_path = {row["path"]: row for row in rows}
    assert len(again) == 3
    for path, predicted, name, probability in again:
        assert (str(predicted), name) == (by_path[path]["predicted"],
                                          by_path[path]["predicted_name"])
        assert probability == pytest.approx(float(by_path[path]["probability"]), abs=1e-6)


def test_predicting_on_files_names_a_file_that_does_not_decode(runs, tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8 cut short")
    export = os.path.join(runs["clean"], "export")
    with pytest.raises(ValueError, match=rf"image file {bad} cannot be read as an image"):
        file_predictions.predict_files(export, str(tmp_path))
    with pytest.raises(ValueError, match=r"names no image files"):
        file_predictions.predict_files(export, str(tmp_path / "*.png"))
