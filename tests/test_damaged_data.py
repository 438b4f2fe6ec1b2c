"""A damaged dataset file ends a run with one message that names it and the fix.

The dataset is real, not mocked: `tiny_images` (tests/tiny_images.py), prepared by TFDS into a
temporary data_dir, then a file of it cut short or overwritten.
"""

import glob
import os
import re
import shutil

import tensorflow as tf

import data
import tiny_images
from conftest import ROOT, run_python

import pytest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, dataset directory) of a freshly prepared tiny_images."""
    data_dir = tmp_path_factory.mktemp("tfds")
    return str(data_dir), tiny_images.prepare(str(data_dir))


def _copy(prepared, tmp_path):
    data_dir, files = prepared
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    return str(copy), os.path.join(copy, os.path.relpath(files, data_dir))


def _project_files():
    """Base names of this project's modules: what absl's log lines of the run's own show."""
    return {os.path.basename(path) for package in ("trainer", "data", "layers", "flags")
            for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)}


def test_a_truncated_training_file_ends_the_run_with_one_message_naming_it(prepared, tmp_path):
    data_dir, files = _copy(prepared, tmp_path)
    train_file = os.path.join(files, "tiny_images-train.tfrecord-00000-of-00001")
    os.truncate(train_file, os.path.getsize(train_file) // 2 + 100)  # Inside a record.
    model_dir = tmp_path / "run"
    # As a user runs it: the real command, TF_CPP_MIN_LOG_LEVEL unset.
    result = run_python(["-m", "trainer.main", "--dataset=tiny_images", f"--data_dir={data_dir}",
                         "--download=false", "--model=sequential", "--batch_size=16",
                         "--epochs=1", f"--model_dir={model_dir}"],
                        env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"{train_file} cannot be read to the end (truncated record" in errors[0]
    assert f"delete {files}" in errors[0] and f"tfds build tiny_images --data_dir={data_dir}" in errors[0]
    assert "Traceback" not in result.stderr
    assert not glob.glob(str(model_dir / "checkpoints" / "ckpt-*"))  # Nothing saved after it.

    # The console is quiet: the plan and the summary, and no INFO or WARNING line from
    # TensorFlow's C++ code, TensorFlow, Keras or TFDS.
    assert "global batch 16 = 1 replica(s) x 16 per replica" in result.stderr
    assert "Total params:" in result.stdout
    ours = _project_files()
    for line in result.stderr.splitlines():
        assert not re.match(r"[IW]\S* .*\.cc:\d+\] ", line), line
        source = re.match(r"[IW]\d{4} [\d:.]+ +\d+ (\S+\.py):\d+\] ", line)
        assert not source or source.group(1) in ours, line
        assert "absl::InitializeLog" not in line, line


def _overwrite_the_middle(path):
    """Overwrites bytes inside a record: its checksum no longer matches."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xff" * 64)


def _cut_between_records(path):
    """Keeps the first half of the records: the file reads to its end, but holds too few."""
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    with tf.io.TFRecordWriter(path) as writer:
        for record in records[:len(records) // 2]:
            writer.write(record)


@pytest.mark.parametrize("damage, error_type, problem", [
    (_overwrite_the_middle, tf.errors.DataLossError, "cannot be read to the end (corrupted record"),
    (_cut_between_records, tf.errors.FailedPreconditionError,
     "holds 16 records where the metadata lists 32"),
])
def test_a_damaged_test_file_is_named_with_its_fault(prepared, tmp_path, damage, error_type,
                                                    problem):
    data_dir, files = _copy(prepared, tmp_path)
    test_file = os.path.join(files, "tiny_images-test.tfrecord-00000-of-00001")
    damage(test_file)
    datamodule = data.TFDSImageData(name="tiny_images", data_dir=data_dir, download=False,
                                    batch_size=16)
    datamodule.prepare_data()
    datamodule.setup()
    with pytest.raises(error_type) as error:
        list(datamodule.evaluation_dataset("test", tf.distribute.InputContext()))
    message = str(datamodule.damage_report(error.value))
    assert f"{test_file} {problem}" in message
    assert "train.tfrecord" not in message  # The intact file is not blamed.


def test_other_failed_preconditions_are_not_blamed_on_intact_files(prepared):
    data_dir, _ = prepared
    datamodule = data.TFDSImageData(name="tiny_images", data_dir=data_dir, download=False)
    assert datamodule.damage_report(tf.errors.FailedPreconditionError(None, None, "?")) is None
