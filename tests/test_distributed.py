"""N replicas train like one device: 2 logical CPU replicas vs 1 device on the same global batch.

The runs share two processes, each with one MirroredStrategy (a second one in a process breaks
the first one's collectives: docs/pitfalls.md#15) and the default strategy for one device.
"""

import concurrent.futures
import json
import os

import numpy as np
import pytest

from conftest import run_python

# Weights are compared after SGD: Adam divides each gradient by its own running magnitude, so
# float noise in a near-zero gradient (e.g. a conv bias that BatchNorm cancels) becomes a
# +-learning_rate update, and only a loose bound would pass. Adam runs compare losses instead.
CONFIGS = {
    "sequential-1": ["--strategy=default", "--model=sequential", "--sgd", "--learning_rate=0.05"],
    "sequential-2": ["--strategy=mirrored", "--cpu_devices=2", "--model=sequential", "--sgd",
                     "--learning_rate=0.05"],
    "functional-sync-1": ["--strategy=default", "--model=functional", "--sync_batchnorm", "--sgd"],
    "functional-sync-2": ["--strategy=mirrored", "--cpu_devices=2", "--model=functional",
                          "--sync_batchnorm", "--sgd"],
    "adam-1": ["--strategy=default", "--model=sequential"],
    "adam-2": ["--strategy=mirrored", "--cpu_devices=2", "--model=sequential"],
    "functional-2": ["--strategy=mirrored", "--cpu_devices=2", "--model=functional"],
}
# Clipping and accumulation need the gradients summed over replicas (trainer/optimization.py).
_SGD = ["--model=sequential", "--sgd", "--learning_rate=0.05"]
_TWO = ["--strategy=mirrored", "--cpu_devices=2"]
CONFIGS.update({
    "clip-norm-1": ["--strategy=default", *_SGD, "--gradient_clip_val=0.05"],
    "clip-norm-2": [*_TWO, *_SGD, "--gradient_clip_val=0.05"],
    "clip-value-1": ["--strategy=default", *_SGD, "--gradient_clip_val=0.002",
                     "--gradient_clip_algorithm=value"],
    "clip-value-2": [*_TWO, *_SGD, "--gradient_clip_val=0.002", "--gradient_clip_algorithm=value"],
    # 4 micro-batches of 8 per optimizer step: the same 32 examples as one batch of 32.
    "accumulate-1": ["--strategy=default", *_SGD, "--batch_size=8", "--accumulate_grad_batches=4"],
    "accumulate-2": [*_TWO, *_SGD, "--batch_size=8", "--accumulate_grad_batches=4"],
    # Moving averages of the weights: every replica keeps the same, as one device would.
    "ema-1": ["--strategy=default", *_SGD, "--ema_decay=0.5"],
    "ema-2": [*_TWO, *_SGD, "--ema_decay=0.5"],
})


# Two processes, each with one MirroredStrategy for its mirrored runs and the default strategy
# for its one-device runs: a process per run would spend most of the time starting TensorFlow.
PROCESSES = [
    ["sequential-1", "sequential-2", "functional-sync-1", "functional-sync-2", "adam-1",
     "adam-2", "functional-2"],
    ["clip-norm-1", "clip-norm-2", "clip-value-1", "clip-value-2", "accumulate-1",
     "accumulate-2", "ema-1", "ema-2"],
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs every config once, in two processes side by side; returns {name: (weights, report,
    log)}."""
    out_dir = tmp_path_factory.mktemp("replicas")

    def run(names):
        args = ["tests/replica_run.py"]
        for name in names:
            args += [*(["--then"] if len(args) > 1 else []), os.path.join(out_dir, f"{name}.npz"),
                     *CONFIGS[name]]
        result = run_python(args, timeout=900)
        assert result.returncode == 0, f"{names} failed:\n{result.stderr[-4000:]}"
        return {name: (dict(np.load(os.path.join(out_dir, f"{name}.npz"))),
                       json.loads(open(os.path.join(out_dir, f"{name}.json")).read()),
                       result.stderr) for name in names}

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return {name: value for done in pool.map(run, PROCESSES) for name, value in done.items()}


def _assert_same_weights(one, two, atol):
    assert one.keys() == two.keys()
    for path in one:
        np.testing.assert_allclose(one[path], two[path], rtol=0, atol=atol, err_msg=path)


@pytest.mark.parametrize("model", ["sequential", "functional-sync"])
def test_two_replicas_train_like_one_device(runs, model):
    one_weights, one_report, _ = runs[f"{model}-1"]
    two_weights, two_report, _ = runs[f"{model}-2"]
    assert (one_report["replicas"], two_report["replicas"]) == (1, 2)
    _assert_same_weights(one_weights, two_weights, atol=2e-5)
    _assert_same_metrics(one_report, two_report)


def test_two_replicas_train_like_one_device_with_adam(runs):
    _assert_same_metrics(runs["adam-1"][1], runs["adam-2"][1])


def _assert_same_metrics(one_report, two_report):
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert two_report["logs"][key] == pytest.approx(one_report["logs"][key], abs=1e-5), key


@pytest.mark.parametrize("name", ["sequential-1", "functional-sync-1"])
def test_the_weights_moved_far_more_than_the_tolerance(runs, name):
    # Guards the comparison above: 2e-5 must be small against what training changed.
    report = runs[name][1]
    assert report["logs"]["steps"] == 8
    assert report["largest_update"] > 50 * 2e-5


@pytest.mark.parametrize("name", ["sequential-2", "functional-sync-2", "adam-2", "functional-2"])
def test_replica_copies_of_every_variable_are_identical(runs, name):
    _, report, _ = runs[name]
    assert report["mismatches"] == {}



@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_on_two_replicas_equals_clipping_on_one_device(runs, algorithm):
    one_weights, one_report, _ = runs[f"clip-{algorithm}-1"]
    two_weights, two_report, _ = runs[f"clip-{algorithm}-2"]
    _assert_same_weights(one_weights, two_weights, atol=2e-5)
    _assert_same_metrics(one_report, two_report)
    assert two_report["mismatches"] == {}
    # The clip did bind: without it the same run ends elsewhere.
    unclipped = runs["sequential-1"][0]
    assert max(np.max(np.abs(unclipped[p] - one_weights[p])) for p in unclipped) > 50 * 2e-5


@pytest.mark.parametrize("replicas", [1, 2])
def test_accumulating_4_batches_equals_one_step_on_a_4x_batch(runs, replicas):
    big_batch_weights, big_batch_report, _ = runs["sequential-1"]
    weights, report, _ = runs[f"accumulate-{replicas}"]
    assert report["logs"]["steps"] == big_batch_report["logs"]["steps"] == 8  # optimizer steps
    _assert_same_weights(big_batch_weights, weights, atol=2e-5)
    _assert_same_metrics(big_batch_report, report)
    assert report["mismatches"] == {}


def test_weight_averages_on_two_replicas_equal_one_devices(runs):
    one_weights, one_report, _ = runs["ema-1"]
    two_weights, two_report, _ = runs["ema-2"]
    averages = [path for path in one_weights if path.startswith("ema/")]
    assert len(averages) == 10  # One per trainable variable of the sequential CNN.
    _assert_same_weights(one_weights, two_weights, atol=2e-5)  # Weights and their averages.
    _assert_same_metrics(one_report, two_report)  # Validated with the averages.
    assert two_report["mismatches"] == {}
    live = runs["sequential-1"][0]  # The same run without averaging: the live weights match it,
    # and the averages are far enough from them that the comparison above proves something.
    assert max(np.max(np.abs(one_weights[p[4:]] - one_weights[p])) for p in averages) > 10 * 2e-5
    np.testing.assert_allclose(live[averages[0][4:]], one_weights[averages[0][4:]], atol=1e-6)
