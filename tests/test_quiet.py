"""The command line's quiet console: TensorFlow's internal lines below the log level are dropped.

The whole command, with TF_CPP_MIN_LOG_LEVEL unset, is checked in tests/test_damaged_data.py, and
the examples' whole consoles in tests/test_examples.py.
"""

import logging
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.cli import quiet

# What TensorFlow 2.21 printed while it was imported, whatever TF_CPP_MIN_LOG_LEVEL said.
PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUDART = ("I0000 00:00:1796089191.123771   26537 cudart_stub.cc:31] Could not find cuda drivers on "
          "your machine, GPU will not be used.\n")
OLD_FORMAT_WARNING = "2025-09-17 14:44:05.157831: W external/local_xla/xla/a.cc:12] a warning\n"
CUINIT = ("E0000 00:00:1796089219.745949   26537 cuda_platform.cc:52] failed call to cuInit: "
          "UNKNOWN ERROR (303)\n")
OWN = "a line of the program's own\n"


def _written_through_file_descriptor_2(level):
    with quiet._stderr_without_lines_below(level):  # pylint: disable=protected-access
        for line in (PREAMBLE, CUDART, OLD_FORMAT_WARNING, CUINIT, OWN):
            os.write(2, line.encode())  # As C++ code writes: not through sys.stderr.


def test_load_time_lines_below_the_level_are_dropped(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "_has_nvidia_gpus", lambda: True)
    _written_through_file_descriptor_2(2)
    assert capfd.readouterr().err == CUINIT + OWN
    _written_through_file_descriptor_2(1)
    assert capfd.readouterr().err == OLD_FORMAT_WARNING + CUINIT + OWN


def test_without_an_nvidia_gpu_the_no_driver_error_is_dropped(capfd, monkeypatch):
    # It only says there is no GPU; on a machine with one, it may be why TensorFlow sees none.
    monkeypatch.setattr(quiet, "_has_nvidia_gpus", lambda: False)
    _written_through_file_descriptor_2(2)
    assert capfd.readouterr().err == OWN


def test_level_0_shows_everything(capfd):
    _written_through_file_descriptor_2(0)
    assert capfd.readouterr().err == PREAMBLE + CUDART + OLD_FORMAT_WARNING + CUINIT + OWN


def test_library_info_records_are_dropped_but_their_warnings_and_ours_pass():
    libraries = tuple(os.path.dirname(module.__file__) + os.sep for module in (tf, tfds))
    keep = quiet._LibraryInfoFilter(libraries).filter  # pylint: disable=protected-access

    def record(module, level):
        path = os.path.join(os.path.dirname(module.__file__), "core", "reader.py")
        return logging.LogRecord("absl", level, path, 262, "Creating a tf.data.Dataset", (), None)

    assert not keep(record(tfds, logging.INFO)) and not keep(record(tf, logging.DEBUG))
    assert keep(record(tfds, logging.WARNING)) and keep(record(tf, logging.ERROR))
    assert keep(record(quiet, logging.INFO))  # The run's own lines.
