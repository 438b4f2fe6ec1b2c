"""Shared test helpers: subprocess runners and tiny in-memory data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
# A TFDS data_dir holding a prepared cifar10, for the few tests that need the real dataset.
REAL_DATA_ENV = "TRAINER_TEST_DATA_DIR"


def subprocess_env():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return env


def run_python(args, timeout=300, env=None):
    """Runs `python <args>` from the repository root, with `env` added to the environment (a
    None value removes the variable); returns the CompletedProcess."""
    environment = {name: value for name, value in {**subprocess_env(), **(env or {})}.items()
                   if value is not None}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def run_main_mocked(flags, num_examples=96, timeout=300, env=None):
    """Runs `python -m trainer.main <flags>` with TFDS mocked (tests/mocked_main.py)."""
    env_args = [os.path.join(TESTS, "mocked_main.py"), str(num_examples), *flags]
    return run_python(env_args, timeout=timeout, env=env)


def main_runs_mocked(runs: list[list[str]], num_examples=96, timeout=600) -> list[dict]:
    """Runs the command lines `runs` of `python -m trainer.main` one after the other in ONE
    process, TFDS mocked (tests/main_runs.py): one TensorFlow start-up for all of them. Returns
    each run's outcome: {"results": ...} or {"status": exit status, "line": its one line}."""
    args = [os.path.join(TESTS, "main_runs.py"), str(num_examples)]
    for flags in runs:
        args += [*(["--then"] if len(args) > 2 else []), *flags]
    result = run_python(args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(runs), result.stderr[-3000:]
    return outcomes


def start_main_mocked(flags, num_examples=96, env=None) -> subprocess.Popen:
    """Starts `run_main_mocked`'s command without waiting for it (text pipes for its output)."""
    environment = {**subprocess_env(), **(env or {})}
    return subprocess.Popen([sys.executable, os.path.join(TESTS, "mocked_main.py"),
                             str(num_examples), *flags], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def random_images(num_examples, shape=(32, 32, 3), num_classes=10, seed=0):
    """Random uint8 images and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_examples, *shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=num_examples).astype(np.int64)
    return images, labels


def input_context(num_pipelines=1, pipeline_id=0, replicas=1):
    """The `tf.distribute.InputContext` one input pipeline of a cluster would be given."""
    return tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                      input_pipeline_id=pipeline_id,
                                      num_replicas_in_sync=replicas)


def labelled_by_id(num_examples):
    """4x4 images whose first pixel holds the example's id, so each example can be recognised."""
    images = np.zeros((num_examples, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(num_examples)
    return images, np.arange(num_examples) % 3


def quadrant_data(num_examples, seed):
    """8x8 images where the label is the bright quadrant: easy to learn, impossible to guess."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, num_examples)
    images = rng.integers(0, 60, (num_examples, 8, 8, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] += 150
    return images, labels


def quadrant_datamodule(batch_size=16):
    """256 training (16 steps of 16), 72 validation and 72 test quadrant examples."""
    return data.ArrayImageData(train=quadrant_data(256, 0), val=quadrant_data(72, 1),
                               test=quadrant_data(72, 1), num_classes=4, batch_size=batch_size,
                               seed=0)


def tiny_network():
    """A 2-layer MLP for quadrant_data: trains in a second."""
    return tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(16, activation="relu"),
                                tf.keras.layers.Dense(4)])


@pytest.fixture
def real_data_dir():
    """The prepared real datasets' directory; the test is skipped, saying why, without it."""
    path = os.environ.get(REAL_DATA_ENV)
    if not path:
        pytest.skip(f"{REAL_DATA_ENV} is not set: point it at a TFDS data_dir that holds a "
                    "prepared cifar10 to run this test")
    return path


@pytest.fixture
def tmp_model_dir(tmp_path):
    return str(tmp_path / "run")
