"""Runs kept on any file system TensorFlow knows: TensorFlow's in-memory `ram://` stands in for an
object store (no symbolic links, no atomic directory renames). A whole command-line run writes
every output there, the evaluator task reads it, and the same command resumes from it."""

import json
import os

import pytest
import tensorflow as tf

from conftest import TESTS, run_python
from data import decoded_cache
from trainer import files
from trainer import run_directory

FLAGS = ["--model=sequential", "--batch_size=32", "--epochs=2", "--strategy=default",
         "--model_dir=ram://runs/r", "--cache_dir=ram://cache", "--predict_split=test",
         "--lr_find", "--lr_find_steps=5", "--num_sanity_val_steps=0", "--progress_bar=false",
         "--model_summary=false"]
# Every file a run writes into its run directory (besides the TensorBoard event files).
OUTPUTS = ["best/best.json", "best/step-2.index", "checkpoints/checkpoint",
           "checkpoints/ckpt-2.index", "checkpoints/ckpt-4.index", "confusion_matrix.png",
           "curves.png", "export/1/saved_model.pb", "export/LATEST", "flags.txt", "history.json",
           "label.labels.txt", "lr_find.csv", "lr_find.png", "metrics.csv", "predictions.csv",
           "results.json", "run_config.json", "timings.json"]


@pytest.fixture(scope="module")
def on_ram():
    """tests/ram_run.py's report and log: the run, the evaluator, the same command again."""
    result = run_python([os.path.join(TESTS, "ram_run.py"), "64", *FLAGS], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_a_run_writes_every_output_to_the_file_system_it_is_given(on_ram):
    report, _ = on_ram
    written = {path.removeprefix("ram://runs/r/") for path in report["after_first"]}
    assert set(OUTPUTS) <= written
    for run in ("train", "val", "test"):
        assert any(path.startswith(f"tensorboard/{run}/events.") for path in written), run
    # The decoded cache too: each entry's key.json commits its data directory.
    entries = [path for path in report["after_first"] if path.startswith("ram://cache/")]
    assert sum(path.endswith("/key.json") for path in entries) == 3  # train, val and test


def test_the_evaluator_and_a_resumed_run_read_it_back(on_ram):
    report, log = on_ram
    assert report["first"]["steps"] == 4 and report["evaluator"]["evaluated"] == 2
    assert "resumed from ram://runs/r/checkpoints/ckpt-4: step 4, epoch 3" in log
    assert "lr_find: not run again" in log  # The finder's rate came back with the checkpoint.
    assert report["again"]["steps"] == 6
    written = {path.removeprefix("ram://runs/r/") for path in report["after_again"]}
    assert {"evaluator.json", "evaluator/metrics.csv", "checkpoints/ckpt-6.index",
            "export/2/saved_model.pb"} <= written
    # Exactly the exports of both runs: the new version, and the one it replaced.
    assert sorted({path.split("/")[1] for path in written if path.startswith("export/")}) == [
        "1", "2", "LATEST"]


def test_an_export_on_an_object_store_is_switched_by_its_pointer_file():
    path = "ram://exports/one"
    for number in (1, 2, 3):
        files.replace_directory(path, lambda directory, number=number: files.write_text(
            os.path.join(directory, "model.txt"), f"model {number}"))
        assert files.read_text(os.path.join(files.resolve_directory(path), "model.txt")) == (
            f"model {number}")
    assert sorted(tf.io.gfile.listdir(path)) == ["2", "3", "LATEST"]  # The one replaced stays.


def test_json_and_csv_files_round_trip_on_an_object_store():
    files.write_json("ram://files/a.json", {"loss": float("nan"), "step": 3})
    assert files.read_json("ram://files/a.json", what="a test", fix="none") == {
        "loss": None, "step": 3}
    files.write_csv("ram://files/b.csv", ["step", "loss"], [{"step": 1}, [2, 0.5]])
    assert files.read_csv("ram://files/b.csv") == (
        ["step", "loss"], [{"step": "1", "loss": ""}, {"step": "2", "loss": "0.5"}])
    assert [name for name in tf.io.gfile.listdir("ram://files/") if "tmp" in name] == []


def test_the_lock_holds_on_an_object_store_too():
    with run_directory.RunLock("ram://locked"):
        holder = json.loads(files.read_text("ram://locked/.lock"))
        assert holder["model_dir"] == "ram://locked" and holder["pid"] == os.getpid()
        # Our own live process holds it: a second taker is refused.
        with pytest.raises(ValueError, match=r"model_dir \(ram://locked\) is in use"):
            run_directory.RunLock("ram://locked").acquire()
    assert not tf.io.gfile.exists("ram://locked/.lock")


def test_two_writers_of_one_cache_entry_leave_one_copy_that_both_read():
    key = {"dataset": "d", "version": "1", "split": "train", "pipeline": 0, "pipelines": 1,
           "source": []}
    directory = decoded_cache.entry_directory("ram://twice", key)
    first = decoded_cache._write(tf.data.Dataset.range(3), directory, key)  # pylint: disable=protected-access
    second = decoded_cache._write(tf.data.Dataset.range(3), directory, key)  # pylint: disable=protected-access
    assert first == second
    assert [name for name in tf.io.gfile.listdir(directory) if name.startswith("data-")] == [
        os.path.basename(first)]
