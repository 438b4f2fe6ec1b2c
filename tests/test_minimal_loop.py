"""examples/minimal_loop.py does the Trainer's math: the same weights after the same batches.

Both configurations run in one process (tests/minimal_loop_run.py): two logical CPU devices and
TensorFlow's default strategy beside them.
What the program prints, as docs/the_training_loop.md shows it, is tested in tests/test_examples.py.
"""

import json

import numpy as np
import pytest

from conftest import run_python

# Plain SGD keeps float noise at float noise (Adam would turn noise in a near-zero gradient into a
# full learning-rate step), so the weights can be compared tightly.
ATOL = 2e-5
REPLICAS = (1, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{replicas: (arrays, report)} of tests/minimal_loop_run.py, on 1 device and 2 replicas, and
    under "errors" what the minimal loop's main() stops with."""
    out_dir = tmp_path_factory.mktemp("minimal_loop")
    result = run_python(["tests/minimal_loop_run.py", str(out_dir)])
    assert result.returncode == 0, result.stderr[-4000:]
    found = {}
    for replicas in REPLICAS:
        with open(out_dir / f"replicas{replicas}.json") as f:
            found[replicas] = dict(np.load(out_dir / f"replicas{replicas}.npz")), json.load(f)
    with open(out_dir / "errors.json") as f:
        found["errors"] = json.load(f)
    return found


def _weights(arrays, name):
    count = len([key for key in arrays if key.startswith(f"{name}/")])
    return [arrays[f"{name}/{i}"] for i in range(count)]


def _largest_difference(one, two):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(one, two, strict=True))


@pytest.mark.parametrize("replicas", REPLICAS)
def test_minimal_loop_ends_with_the_trainers_weights(runs, replicas):
    arrays, report = runs[replicas]
    assert report["replicas"] == replicas
    assert report["steps"] == report["trainer"]["steps"] == 8
    for path, ours, theirs in zip(report["paths"], _weights(arrays, "minimal"),
                                  _weights(arrays, "trainer"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL, err_msg=path)
    # The epoch's Keras metrics: the same means over the same examples as the Trainer's.
    assert report["minimal"]["loss"] == pytest.approx(report["trainer"]["loss"], abs=1e-5)
    assert report["minimal"]["accuracy"] == pytest.approx(report["trainer"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize("replicas", REPLICAS)
def test_the_weights_moved_far_more_than_the_tolerance(runs, replicas):
    # Guards the comparison above: both loops must have trained, far beyond ATOL.
    arrays, _ = runs[replicas]
    initial = _weights(arrays, "initial")
    assert _largest_difference(_weights(arrays, "trainer"), initial) > 50 * ATOL
    assert _largest_difference(_weights(arrays, "minimal"), initial) > 50 * ATOL


def test_minimal_loop_on_two_replicas_trains_like_one_device(runs):
    assert _largest_difference(_weights(runs[1][0], "initial"),
                               _weights(runs[2][0], "initial")) == 0
    assert _largest_difference(_weights(runs[1][0], "minimal"),
                               _weights(runs[2][0], "minimal")) < ATOL
    # The loss train_loop returns, the replicas' shares reduced by SUM, is one device's loss.
    assert runs[2][1]["minimal"]["last_step_loss"] == pytest.approx(
        runs[1][1]["minimal"]["last_step_loss"], abs=1e-5)


@pytest.mark.parametrize("replicas", REPLICAS)
def test_evaluation_counts_every_example_once(runs, replicas):
    # 68 examples: on 2 replicas the last step hands one replica 4 examples, the other none.
    report = runs[replicas][1]
    assert report["minimal"]["val_examples"] == 68
    assert report["minimal"]["val_loss"] == pytest.approx(report["trainer"]["val_loss"], abs=1e-5)
    assert report["minimal"]["val_accuracy"] == pytest.approx(report["trainer"]["val_accuracy"],
                                                              abs=1e-6)


def test_batch_size_must_split_evenly_across_the_replicas(runs):
    assert runs["errors"]["batch"] == "--batch_size (63) must be a multiple of replicas (2)"


def test_a_diverged_run_stops_with_one_error_line(runs):
    assert runs["errors"]["diverged"] == (
        "error: the loss is nan after step 2: training diverged (--learning_rate inf too high?)")


def test_offline_a_missing_dataset_is_one_error_line(runs):
    error = runs["errors"]["not_prepared"]
    assert error.startswith("error: dataset 'cifar10' is not prepared in ")
    assert error.endswith("empty_data_dir and --download=false: point --data_dir at a directory "
                          "that holds it prepared")
